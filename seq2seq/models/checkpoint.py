"""Reading and writing safetensors checkpoints as flat ``{key: numpy array}`` dicts.

A Hugging Face model directory holds its weights either in one ``model.safetensors`` or, for big models, in shards
``model-00001-of-0000N.safetensors`` listed by ``model.safetensors.index.json`` (``{"weight_map": {key: shard}}``).
This file reads and writes both layouts, so checkpoints travel both ways between seq2seq and transformers.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON describing each tensor
(``{"dtype", "shape", "data_offsets": [begin, end]}``, offsets counted from the end of the header), then raw bytes.
We parse and validate that header ourselves rather than calling ``safetensors.safe_open``: NumPy has no bfloat16,
so safetensors' NumPy reader refuses BF16 tensors (the dtype most checkpoints on the Hub are stored in), and doing
the reading ourselves lets every error name the file and the tensor at fault. Writing uses ``safetensors.numpy``.

Pickle checkpoints (``pytorch_model.bin``) are refused on purpose: unpickling runs code chosen by whoever wrote the
file. Nothing read from a checkpoint is ever executed.
"""
import json
import os
import re
import struct

import numpy as np
import safetensors.numpy

from ..core.backend import check_dtype, to_numpy
from ..core.config import read_json
from ..core.errors import CheckpointError, CheckpointNotFoundError, InputError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
MAX_HEADER_BYTES = 100_000_000  # the same ceiling the safetensors library enforces

# safetensors dtype string -> little-endian NumPy dtype. BF16 is read as raw uint16 and widened by hand.
_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}
_FLOATS = ("F64", "F32", "F16", "BF16")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_SHARD_NAME = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
PICKLE_REASON = ("pickle-based checkpoints (.bin, .pt) are refused on purpose, because loading them would execute "
                 "code from the file; convert it to safetensors first (e.g. from_pretrained then save_pretrained "
                 "with transformers, somewhere you trust the file)")


def load_state_dict(path, *, dtype="float32"):
    """Load a checkpoint directory (single file or sharded) or one ``.safetensors`` file.

    Floating tensors come back as ``dtype``; integer and bool tensors (buffers such as ``position_ids``) keep
    their own dtype, and the caller decides what to do with them.
    """
    dtype = check_dtype(dtype)
    path = os.fspath(path)
    if os.path.isfile(path):
        if path.endswith(".index.json"):
            return _load_sharded(path, dtype)
        if path.endswith(_PICKLE_SUFFIXES):
            raise CheckpointError(f"refusing to load {path}: {PICKLE_REASON}")
        return _read_safetensors(path, dtype)
    if not os.path.isdir(path):
        raise CheckpointNotFoundError(f"checkpoint directory {path} does not exist")
    # Like transformers, prefer the single file when both layouts are present.
    single = os.path.join(path, SINGLE_FILE)
    if os.path.isfile(single):
        return _read_safetensors(single, dtype)
    index = os.path.join(path, INDEX_FILE)
    if os.path.isfile(index):
        return _load_sharded(index, dtype)
    raise CheckpointNotFoundError(_no_weights_message(path))


def save_state_dict(tensors, path, *, metadata=None, max_shard_size=None):
    """Write ``tensors`` into directory ``path`` as ``model.safetensors``, or as shards plus an index.

    Shards are made only when ``max_shard_size`` (bytes) is given and the tensors do not fit in one file; names and
    index follow transformers' ``save_pretrained``, so transformers loads the result directly.
    """
    path = os.fspath(path)
    header_metadata = {"format": "pt", **(metadata or {})}  # transformers checks for format "pt"
    for name, value in header_metadata.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InputError(f"checkpoint metadata must map str to str; got {name!r}: {value!r}")
    arrays = {key: _as_writable(key, value) for key, value in tensors.items()}
    shards = _split_into_shards(arrays, max_shard_size)

    os.makedirs(path, exist_ok=True)
    if len(shards) == 1:
        filenames = [SINGLE_FILE]
    else:
        filenames = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    _remove_stale_weights(path, keep=filenames + ([INDEX_FILE] if len(shards) > 1 else []))

    for filename, shard in zip(filenames, shards):
        safetensors.numpy.save_file(shard, os.path.join(path, filename), metadata=header_metadata)
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(a.nbytes for a in arrays.values())},
            "weight_map": {key: filename for filename, shard in zip(filenames, shards) for key in shard},
        }
        with open(os.path.join(path, INDEX_FILE), "w", encoding="utf-8") as f:
            f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")  # the same layout transformers writes


# ---- reading ---------------------------------------------------------------------------------------------------

def _no_weights_message(directory):
    """Say what a directory without weights does contain, and why pickle files there are not an option."""
    entries = sorted(os.listdir(directory))
    message = (f"checkpoint directory {directory} holds neither {SINGLE_FILE} nor {INDEX_FILE}; "
               f"it contains: {', '.join(entries) if entries else 'nothing'}")
    if any(name.endswith(_PICKLE_SUFFIXES) for name in entries):
        pickles = ", ".join(name for name in entries if name.endswith(_PICKLE_SUFFIXES))
        message += f". It does hold {pickles}, but {PICKLE_REASON}"
    return message


def _load_sharded(index_path, dtype):
    """Load every tensor the index's ``weight_map`` lists, reading each shard once."""
    index = read_json(index_path, what="checkpoint index", error=CheckpointError)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"checkpoint index {index_path} has no weight_map of tensor name -> shard file")
    keys_by_shard = {}
    for key, shard in weight_map.items():
        keys_by_shard.setdefault(shard, []).append(key)
    directory = os.path.dirname(index_path)
    state = {}
    for shard, keys in keys_by_shard.items():
        shard_path = os.path.join(directory, shard)
        if os.path.basename(shard) != shard or not os.path.isfile(shard_path):
            # A name with a directory part could point outside the checkpoint; treat it as missing.
            raise CheckpointNotFoundError(f"shard {shard_path} named in {index_path} does not exist")
        state.update(_read_safetensors(shard_path, dtype, keys=keys))
    return state


def _read_safetensors(path, dtype, keys=None):
    """Read one safetensors file (only ``keys`` when given) into NumPy arrays."""
    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path} is not a safetensors file: only {file_size} bytes, shorter than its "
                                  "8-byte header length")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > file_size - 8 or header_len > MAX_HEADER_BYTES:
            raise CheckpointError(f"{path} is not a safetensors file (or is truncated): it declares a header of "
                                  f"{header_len} bytes but the file has {file_size - 8} bytes after the length")
        raw_header = f.read(header_len)
    try:
        header = json.loads(raw_header.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} has a corrupt safetensors header (not UTF-8 JSON: {e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupt safetensors header: not a JSON object")
    header.pop("__metadata__", None)

    data_start = 8 + header_len
    entries = {name: _check_entry(path, name, entry, file_size - data_start) for name, entry in header.items()}
    _check_no_overlap(path, entries)
    if keys is not None:
        missing = [k for k in keys if k not in entries]
        if missing:
            raise CheckpointError(f"{path} lacks tensor {missing[0]!r} that its index lists "
                                  f"({len(missing)} missing in all)")
        entries = {k: entries[k] for k in keys}

    # One memory map per file; each tensor is copied out of it, so the map is released when this returns.
    data = np.memmap(path, dtype=np.uint8, mode="r")
    state = {}
    for name, (kind, shape, begin, end) in entries.items():
        raw_dtype = np.dtype(_DTYPES[kind])
        count = (end - begin) // raw_dtype.itemsize
        raw = np.frombuffer(data, dtype=raw_dtype, count=count, offset=data_start + begin).reshape(shape)
        if kind == "BF16":
            # bfloat16 is the top half of a float32: shift the 16 bits up and reinterpret.
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        target = dtype if kind in _FLOATS else raw_dtype.newbyteorder("=")
        state[name] = raw.astype(target)  # astype copies, so nothing keeps the memory map alive
    del data
    return state


def _check_entry(path, name, entry, data_size):
    """Validate one header entry; return ``(dtype, shape, begin, end)``."""
    where = f"{path}, tensor {name!r}"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise CheckpointError(f"{where}: header entry must have dtype, shape and data_offsets; got {entry!r}")
    kind, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if kind not in _DTYPES:
        raise CheckpointError(f"{where}: unknown or unsupported dtype {kind!r}; expected one of {sorted(_DTYPES)}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise CheckpointError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise CheckpointError(f"{where}: data_offsets must be [begin, end] with 0 <= begin <= end, got {offsets!r}")
    begin, end = offsets
    if end > data_size:
        raise CheckpointError(f"{where}: data ends at byte {end} but the file holds only {data_size} data bytes; "
                              "the file is truncated")
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[kind]).itemsize
    if end - begin != expected:
        raise CheckpointError(f"{where}: {end - begin} bytes of data, but shape {shape} of {kind} needs {expected}")
    return kind, tuple(shape), begin, end


def _check_no_overlap(path, entries):
    """Refuse headers whose tensors share bytes: a well-formed file never does, so it is corrupt or hand-crafted."""
    previous_name, previous_end = None, 0
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda item: item[1][2:]):
        if begin < previous_end:
            raise CheckpointError(f"{path}: tensor {name!r} overlaps the bytes of tensor {previous_name!r}")
        if end > begin:  # empty tensors own no bytes, so they cannot overlap anything
            previous_name, previous_end = name, end


# ---- writing ---------------------------------------------------------------------------------------------------

def _as_writable(key, value):
    """A C-contiguous, little-endian NumPy copy-or-view of one tensor (NumPy or CuPy)."""
    if not isinstance(key, str):
        raise InputError(f"checkpoint keys must be strings, got {key!r}")
    # Not np.ascontiguousarray: it turns a 0-d scalar into shape (1,).
    array = np.asarray(to_numpy(value), order="C")
    if array.dtype.kind not in "fiub":
        raise InputError(f"tensor {key!r} has dtype {array.dtype}, which safetensors cannot store")
    return array.astype(array.dtype.newbyteorder("<"), copy=False)


def _split_into_shards(arrays, max_shard_size):
    """Group tensors, in order, into shards of at most ``max_shard_size`` bytes (huggingface_hub's rule).

    A tensor bigger than the limit gets a shard of its own; there is no bin packing.
    """
    if max_shard_size is None:
        return [arrays]
    if type(max_shard_size) is not int or max_shard_size <= 0:
        raise InputError(f"max_shard_size must be a positive number of bytes, got {max_shard_size!r}")
    shards, current, current_size = [], {}, 0
    for key, array in arrays.items():
        if array.nbytes > max_shard_size:
            shards.append({key: array})
            continue
        if current and current_size + array.nbytes > max_shard_size:
            shards.append(current)
            current, current_size = {}, 0
        current[key] = array
        current_size += array.nbytes
    if current or not shards:
        shards.append(current)
    return shards


def _remove_stale_weights(directory, keep):
    """Delete weight files of an earlier save that this one will not overwrite, so loading is not confused."""
    for name in os.listdir(directory):
        stale = name in (SINGLE_FILE, INDEX_FILE) or _SHARD_NAME.fullmatch(name)
        if stale and name not in keep and os.path.isfile(os.path.join(directory, name)):
            os.remove(os.path.join(directory, name))
