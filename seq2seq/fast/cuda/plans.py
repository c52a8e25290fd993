"""How each kernel of ``kernels/*.cu`` is launched, worked out in plain Python: which file and entry point, the grid,
the block, the dynamic shared memory and the argument list, from the arrays in hand.

Each function below takes arrays of either module (NumPy or CuPy), checks their shapes, makes contiguous the ones a
kernel reads without strides (RawKernel ignores strides), allocates the outputs and returns a ``Launch``; nothing
runs yet. ``kernels.run(launch)`` launches it on the GPU and returns its outputs. Why the split: everything here
is testable without a GPU, and the CPU tests run the very same launches through a CPU emulation of the kernels
(tests/fast/cuda_on_cpu.py), so a wrong argument order or grid fails there first.

Scalars go in with the C type of the kernel's parameter (``np.int32`` for ``int``, ``np.int64`` for ``long long``,
``np.float32`` for ``float``); a null pointer is ``NULL``, eight zero bytes (not None, which CuPy passes as
0xffffffff: cupy/cupy#9046). Storage types: ``dtype`` names the
arrays' storage when it is not their own dtype (``"bfloat16"`` for arrays of bfloat16 bits held as uint16).
"""
import dataclasses
import math

import numpy as np

from ...core.backend import get_array_module
from ...core.errors import InputError

DTYPE_SUFFIX = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
NULL = np.uint64(0)  # a null pointer argument
BA_THREADS, BA_MAX_BLOCKS = 256, 65535  # bias_activation.cu's default block size; the grid's cap (grid-stride loop)
LN_THREADS = 256  # layer_norm.cu
DA_THREADS, DA_MAX_HEAD = 128, 256  # decode_attention.cu
EM_THREADS = 256  # embeddings.cu
FA_QUERIES = 64  # flash_attention.cu's queries per block (= its block size)
NT_THREADS, NT_MAX_K = 256, 64  # next_token.cu
MAX_SHARED = 48 * 1024  # dynamic shared memory a launch gets without opting in to more (cudaFuncSetAttribute)


@dataclasses.dataclass(frozen=True)
class Launch:
    """One kernel launch: ``entry`` of ``kernels/<name>.cu`` compiled with ``defines`` (pairs of a macro and its
    value), over ``grid`` blocks of ``block`` threads with ``shared_mem`` bytes of dynamic shared memory, called
    with ``args``; ``outputs`` are what it writes, as the caller gets them back (one array or a tuple). A grid with no
    blocks (no rows) launches nothing."""

    name: str
    entry: str
    grid: tuple
    block: tuple
    args: tuple
    outputs: object
    shared_mem: int = 0
    defines: tuple = ()


def suffix(dtype):
    """The entry points' storage suffix of ``dtype``: ``f32``, ``f16`` or ``bf16``."""
    name = "bfloat16" if str(dtype) == "bfloat16" else np.dtype(dtype).name
    if name not in DTYPE_SUFFIX:
        raise InputError(f"no kernel for dtype {dtype}; expected one of {sorted(DTYPE_SUFFIX)}")
    return DTYPE_SUFFIX[name]


def _contiguous(*arrays):
    """Each array C-contiguous (None stays None)."""
    return [None if a is None else get_array_module(a).ascontiguousarray(a) for a in arrays]


def _or_null(a):
    return NULL if a is None else a


def _rows(x):
    """(rows, columns) of x seen as ``[rows, x.shape[-1]]``."""
    n_cols = x.shape[-1]
    return (x.size // n_cols if n_cols else 0), n_cols


def _check(condition, message):
    if not condition:
        raise InputError(message)


def _out(out, shape, name):
    """A given output array, checked: C-contiguous and of the shape the kernel writes."""
    _check(tuple(out.shape) == tuple(shape) and out.flags.c_contiguous,
           f"{name}: out must be a C-contiguous array of shape {tuple(shape)}, got {tuple(out.shape)}")
    return out


def grid_stride_blocks(n, threads, max_blocks):
    """Blocks of ``threads`` for a grid-stride loop over ``n`` elements: enough for one element a thread, at most
    ``max_blocks`` (the loop covers the rest); 0 for no elements, which launches nothing."""
    return min((n + threads - 1) // threads, max_blocks)


def _shared(n_bytes, what):
    """``n_bytes`` of dynamic shared memory, checked against what a launch gets by default."""
    _check(n_bytes <= MAX_SHARED, f"{what} needs {n_bytes} bytes of shared memory, more than the {MAX_SHARED} a "
           "launch gets by default")
    return n_bytes


# ---- bias_activation.cu, layer_norm.cu ----------------------------------------------------------------------------

def bias_activation(x, b, act, *, dtype=None, out=None):
    """``act(x + b)`` for x ``[..., F]`` and b ``[F]``; act ``gelu``, ``gelu_tanh`` or ``relu``. Output: y."""
    x, b = _contiguous(x, b)
    n_rows, n_features = _rows(x)
    y = get_array_module(x).empty_like(x) if out is None else out
    blocks = grid_stride_blocks(x.size, BA_THREADS, BA_MAX_BLOCKS)
    return Launch("bias_activation", f"bias_{act}_{suffix(dtype or x.dtype)}", (blocks,), (BA_THREADS,),
                  (x, b, y, np.int64(n_rows), np.int32(n_features)), y)


def add_layer_norm(x, residual, bias, gamma, beta, eps, *, dtype=None, out=None):
    """Post-LN: ``LayerNorm(x + residual + bias) * gamma + beta`` over the last axis. Output: y (``out`` if given:
    a contiguous array of x's shape, as a captured decode step's static buffers are)."""
    x, residual, bias, gamma, beta = _contiguous(x, residual, bias, gamma, beta)
    n_rows, n_cols = _rows(x)
    y = get_array_module(x).empty_like(x) if out is None else _out(out, x.shape, "add_layer_norm")
    return Launch("layer_norm", f"add_layer_norm_{suffix(dtype or x.dtype)}", (n_rows,), (LN_THREADS,),
                  (x, residual, bias, gamma, beta, y, np.int32(n_rows), np.int32(n_cols), np.float32(eps)), y,
                  shared_mem=_shared(4 * n_cols, f"layer norm of {n_cols} columns"))


def add_layer_norm_pre(x, residual, gamma, beta, eps, *, dtype=None, out=None):
    """Pre-LN: ``s = x + residual`` and ``LayerNorm(s) * gamma + beta``. Outputs: (s, y) (``out``, a pair, if
    given)."""
    x, residual, gamma, beta = _contiguous(x, residual, gamma, beta)
    n_rows, n_cols = _rows(x)
    xp = get_array_module(x)
    s, y = (xp.empty_like(x), xp.empty_like(x)) if out is None else \
        (_out(out[0], x.shape, "add_layer_norm_pre"), _out(out[1], x.shape, "add_layer_norm_pre"))
    return Launch("layer_norm", f"add_layer_norm_pre_{suffix(dtype or x.dtype)}", (n_rows,), (LN_THREADS,),
                  (x, residual, s, gamma, beta, y, np.int32(n_rows), np.int32(n_cols), np.float32(eps)), (s, y),
                  shared_mem=_shared(4 * n_cols, f"layer norm of {n_cols} columns"))


# ---- decode_attention.cu ----------------------------------------------------------------------------------------

def _head_rows(*arrays, name):
    """Arrays ``[rows, heads, hs]`` (None stays None) whose heads and elements are contiguous, and their common row
    stride in elements: views of a wider projection (GPT-2's fused q|k|v columns) go in as they are; anything else
    is copied contiguous."""
    given = [a for a in arrays if a is not None]
    for a in given:
        _check(a.ndim == 3 and a.shape == given[0].shape, f"{name}: expected [rows, heads, head_size] arrays of one "
               f"shape, got {[tuple(a.shape) for a in given]}")
    item = given[0].itemsize
    rows, heads, hs = given[0].shape
    inner = [a.strides[2] == item and a.strides[1] == hs * item for a in given]
    strides = {a.strides[0] for a in given}
    if not all(inner) or len(strides) != 1 or next(iter(strides)) % item:
        arrays = _contiguous(*arrays)
        return arrays, heads * hs
    return list(arrays), next(iter(strides)) // item


def _scale(scale, head_size):
    return np.float32(1.0 / math.sqrt(head_size) if scale is None else scale)


def decode_self_attention(q, k_new, v_new, k_cache, v_cache, lengths, *, scale=None, dtype=None, out=None,
                          max_keys=None):
    """One query per row over its self-attention cache (decode_attention.cu): q, k_new, v_new ``[rows, heads, hs]``
    (k_new/v_new None when the cache already holds the step), caches ``[rows, heads, max_len, hs]`` (contiguous:
    written in place), lengths ``[rows]`` int32 on the device (the positions filled, the new one included).
    Output: ``[rows, heads, hs]`` (``out`` if given). ``max_keys`` (default max_len) sizes the shared memory for
    the scores: the caller promises that no row's length exceeds it while the launch runs or is replayed (a
    captured step's length bucket, graphs.py)."""
    _check((k_new is None) == (v_new is None), "decode_self_attention: give k_new and v_new together, or neither")
    (q, k_new, v_new), row_stride = _head_rows(q, k_new, v_new, name="decode_self_attention")
    rows, heads, hs = q.shape
    _check(k_cache.ndim == 4 and k_cache.shape[:2] == (rows, heads) and k_cache.shape[3] == hs
           and v_cache.shape == k_cache.shape, f"decode_self_attention: caches must be [{rows}, {heads}, max_len, "
           f"{hs}], got {tuple(k_cache.shape)} and {tuple(v_cache.shape)}")
    _check(k_cache.flags.c_contiguous and v_cache.flags.c_contiguous,
           "decode_self_attention: the caches are written in place and must be C-contiguous")
    _check(lengths.shape == (rows,) and lengths.dtype == np.int32,
           f"decode_self_attention: lengths must be int32 [{rows}], got {lengths.dtype} {tuple(lengths.shape)}")
    _check(hs <= DA_MAX_HEAD, f"decode_self_attention: head_size {hs} > DA_MAX_HEAD {DA_MAX_HEAD}")
    max_len = k_cache.shape[2]
    _check(max_keys is None or 1 <= max_keys <= max_len,
           f"decode_self_attention: max_keys {max_keys} must be in [1, max_len {max_len}]")
    out = get_array_module(q).empty((rows, heads, hs), dtype=q.dtype) if out is None else \
        _out(out, (rows, heads, hs), "decode_self_attention")
    return Launch("decode_attention", f"decode_self_attention_{suffix(dtype or q.dtype)}", (heads, rows),
                  (DA_THREADS,), (q, _or_null(k_new), _or_null(v_new), np.int64(row_stride), k_cache, v_cache,
                                  lengths, out, np.int32(heads), np.int32(hs), np.int32(max_len), _scale(scale, hs)),
                  out, shared_mem=_decode_shared(hs, max_len if max_keys is None else max_keys))


def decode_cross_attention(q, k_enc, v_enc, *, source_of_row=None, keep=None, scale=None, dtype=None, out=None):
    """One query per row over its source's encoder keys/values (decode_attention.cu): q ``[rows, heads, hs]``,
    k_enc and v_enc ``[sources, heads, S, hs]``, source_of_row ``[rows]`` int32 or None (row i reads source i),
    keep ``[sources, S]`` bool or None. Output: ``[rows, heads, hs]`` (``out`` if given)."""
    (q,), row_stride = _head_rows(q, name="decode_cross_attention")
    k_enc, v_enc, keep, source_of_row = _contiguous(k_enc, v_enc, keep, source_of_row)
    rows, heads, hs = q.shape
    _check(k_enc.ndim == 4 and k_enc.shape[1] == heads and k_enc.shape[3] == hs and v_enc.shape == k_enc.shape,
           f"decode_cross_attention: k_enc and v_enc must be [sources, {heads}, S, {hs}], got "
           f"{tuple(k_enc.shape)} and {tuple(v_enc.shape)}")
    sources, _, src_len, _ = k_enc.shape
    _check(source_of_row is not None or sources == rows,
           f"decode_cross_attention: {rows} rows and {sources} sources need source_of_row")
    _check(source_of_row is None or (source_of_row.shape == (rows,) and source_of_row.dtype == np.int32),
           f"decode_cross_attention: source_of_row must be int32 [{rows}]")
    _check(keep is None or (keep.shape == (sources, src_len) and keep.dtype == np.bool_),
           f"decode_cross_attention: keep must be bool [{sources}, {src_len}]")
    _check(hs <= DA_MAX_HEAD and src_len > 0, f"decode_cross_attention: head_size {hs} (at most {DA_MAX_HEAD}), "
           f"source length {src_len} (at least 1)")
    out = get_array_module(q).empty((rows, heads, hs), dtype=q.dtype) if out is None else \
        _out(out, (rows, heads, hs), "decode_cross_attention")
    return Launch("decode_attention", f"decode_cross_attention_{suffix(dtype or q.dtype)}", (heads, rows),
                  (DA_THREADS,), (q, np.int64(row_stride), k_enc, v_enc, _or_null(source_of_row), _or_null(keep),
                                  out, np.int32(heads), np.int32(hs), np.int32(src_len), _scale(scale, hs)),
                  out, shared_mem=_decode_shared(hs, src_len))


def _decode_shared(head_size, n_keys):
    """decode_attention.cu's dynamic shared memory: the query, the scores, each warp's partial output (float32)."""
    return _shared(4 * (head_size + n_keys + (DA_THREADS // 32) * head_size), f"one-query attention over {n_keys} keys")


# ---- flash_attention.cu ---------------------------------------------------------------------------------------

def _token_rows(a):
    """``[B, T, heads, hs]`` with heads and elements contiguous -> (a, token stride in elements); else a copy."""
    item = a.itemsize
    b, t, heads, hs = a.shape
    if a.strides[3] != item or a.strides[2] != hs * item or a.strides[0] != t * a.strides[1] or a.strides[1] % item:
        a = get_array_module(a).ascontiguousarray(a)
    return a, a.strides[1] // item


def flash_attention(q, k, v, *, key_keep=None, causal=False, scale=None, dtype=None):
    """Fused attention of q ``[B, T, heads, hs]`` over k and v ``[B, S, heads, hs]`` (the projections' [B, T, C]
    layout split into heads, views of a fused q|k|v projection welcome; k and v with one token stride),
    key_keep ``[B, S]`` bool or None, causal or not. Output: ``[B, T, heads, hs]``."""
    _check(q.ndim == 4 and k.ndim == 4 and k.shape == v.shape and k.shape[0] == q.shape[0]
           and k.shape[2:] == q.shape[2:], f"flash_attention: q [B, T, heads, hs] and k, v [B, S, heads, hs], "
           f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    b, t, heads, hs = q.shape
    s = k.shape[1]
    _check(s > 0, "flash_attention: no keys (S = 0)")
    q, q_stride = _token_rows(q)
    (k, kv_stride), (v, v_stride) = _token_rows(k), _token_rows(v)
    if kv_stride != v_stride:
        (k, v), kv_stride = _contiguous(k, v), heads * hs
    (key_keep,) = _contiguous(key_keep)
    _check(key_keep is None or (key_keep.shape == (b, s) and key_keep.dtype == np.bool_),
           f"flash_attention: key_keep must be bool [{b}, {s}]")
    out = get_array_module(q).empty((b, t, heads, hs), dtype=q.dtype)
    return Launch("flash_attention", f"flash_attention_{suffix(dtype or q.dtype)}",
                  ((t + FA_QUERIES - 1) // FA_QUERIES, heads, b), (FA_QUERIES,),
                  (q, k, v, np.int64(q_stride), np.int64(kv_stride), _or_null(key_keep), out, np.int32(heads),
                   np.int32(t), np.int32(s), np.int32(bool(causal)), _scale(scale, hs)),
                  out, defines=(("FA_HEAD_SIZE", hs),))


# ---- embeddings.cu ----------------------------------------------------------------------------------------------

def embed(ids, word, position_table, *, positions=None, position_offset=0, type_table=None, token_types=None,
          gamma=None, beta=None, word_scale=1.0, eps=1e-12, with_sum=False, dtype=None, out=None):
    """``word[ids] * word_scale (+ type_table[token_types or 0]) + position_table[position + position_offset]``,
    then LayerNorm with gamma and beta if given (embeddings.cu). ids ``[B, T]`` int64; positions ``[B, T]`` or
    ``[B * T]`` int64, or None for 0..T-1 in each row. Output: y ``[B, T, C]``, or (sum, y) with ``with_sum``
    (``out`` if given: y, or the pair)."""
    _check(ids.ndim == 2, f"embed: ids must be [batch, seq], got {tuple(ids.shape)}")
    _check((gamma is None) == (beta is None), "embed: give gamma and beta together, or neither")
    xp = get_array_module(word)
    ids, positions, token_types, word, position_table, type_table, gamma, beta = _contiguous(
        xp.asarray(ids, dtype=np.int64), None if positions is None else xp.asarray(positions, dtype=np.int64),
        None if token_types is None else xp.asarray(token_types, dtype=np.int64), word, position_table, type_table,
        gamma, beta)
    b, t = ids.shape
    n_rows, n_cols = b * t, word.shape[1]
    _check(positions is None or positions.size == n_rows, f"embed: positions must have {n_rows} entries")
    if out is None:
        y = xp.empty((b, t, n_cols), dtype=word.dtype)
        total = xp.empty_like(y) if with_sum else None
    else:
        total, y = out if with_sum else (None, out)
        total, y = (None if a is None else _out(a, (b, t, n_cols), "embed") for a in (total, y))
    return Launch("embeddings", f"embed_{suffix(dtype or word.dtype)}", (n_rows,), (EM_THREADS,),
                  (ids, _or_null(positions), _or_null(token_types), word, position_table, _or_null(type_table),
                   _or_null(gamma), _or_null(beta), _or_null(total), y, np.int32(n_rows), np.int32(n_cols),
                   np.int32(t), np.int32(position_offset), np.float32(word_scale), np.float32(eps)),
                  (total, y) if with_sum else y, shared_mem=_shared(4 * n_cols, f"embeddings of width {n_cols}"))


# ---- next_token.cu ----------------------------------------------------------------------------------------------

def argmax(scores, *, dtype=None):
    """The first index of each row's largest score, scores ``[rows, V]``. Output: ids ``[rows]`` int64."""
    (scores,) = _contiguous(scores)
    n_rows, vocab = _rows(scores)
    ids = get_array_module(scores).empty((n_rows,), dtype=np.int64)
    return Launch("next_token", f"argmax_{suffix(dtype or scores.dtype)}", (n_rows,), (NT_THREADS,),
                  (scores, ids, np.int32(n_rows), np.int32(vocab)), ids)


def beam_topk(scores, k, *, beam_scores=None, normalise=True, with_log_probs=False, dtype=None):
    """Per row of scores ``[rows, V]``: log-softmax (``normalise``), then the k best of that plus beam_scores
    ``[rows]`` float32 (or 0). Outputs: (top_values ``[rows, k]`` float32, top_ids ``[rows, k]`` int64), with
    ``with_log_probs`` preceded by the log-probs ``[rows, V]`` float32."""
    scores, beam_scores = _contiguous(scores, beam_scores)
    n_rows, vocab = _rows(scores)
    _check(0 <= k <= min(vocab, NT_MAX_K), f"beam_topk: k = {k} must be in [0, min(vocab {vocab}, {NT_MAX_K})]")
    _check(beam_scores is None or (beam_scores.shape == (n_rows,) and beam_scores.dtype == np.float32),
           f"beam_topk: beam_scores must be float32 [{n_rows}]")
    xp = get_array_module(scores)
    values, ids = xp.empty((n_rows, k), dtype=np.float32), xp.empty((n_rows, k), dtype=np.int64)
    log_probs = xp.empty((n_rows, vocab), dtype=np.float32) if with_log_probs else None
    return Launch("next_token", f"beam_topk_{suffix(dtype or scores.dtype)}", (n_rows,), (NT_THREADS,),
                  (scores, _or_null(beam_scores), np.int32(bool(normalise)), _or_null(log_probs), values, ids,
                   np.int32(n_rows), np.int32(vocab), np.int32(k)),
                  (log_probs, values, ids) if with_log_probs else (values, ids))


def beam_merge(top_values, top_ids, *, n_beams, vocab):
    """The k best of each batch row's ``n_beams`` rows of beam_topk candidates ``[B * n_beams, k]``, ranked by value
    and then by flat index ``beam * vocab + token``. Outputs: (values ``[B, k]`` float32, flat ``[B, k]`` int64)."""
    top_values, top_ids = _contiguous(top_values, top_ids)
    rows, k = top_values.shape
    _check(rows % n_beams == 0 and top_ids.shape == (rows, k),
           f"beam_merge: [B * {n_beams}, k] candidates expected, got {tuple(top_values.shape)}")
    xp = get_array_module(top_values)
    n_batch = rows // n_beams
    values, flat = xp.empty((n_batch, k), dtype=np.float32), xp.empty((n_batch, k), dtype=np.int64)
    return Launch("next_token", "beam_merge", (n_batch,), (NT_THREADS,),
                  (top_values, top_ids, values, flat, np.int32(n_batch), np.int32(n_beams), np.int32(k),
                   np.int32(vocab)), (values, flat))


def sample(scores, uniforms, *, dtype=None):
    """One inverse-CDF draw per row from softmax(scores ``[rows, V]``), with uniforms ``[rows]`` float64 in [0, 1)
    drawn on the host (``rng.random(rows)``, as generation/sampling.sample_tokens draws them). Output: ids
    ``[rows]`` int64, -1 where a row cannot be drawn from (a NaN or +inf score, or all -inf)."""
    scores, uniforms = _contiguous(scores, uniforms)
    n_rows, vocab = _rows(scores)
    _check(uniforms.shape == (n_rows,) and uniforms.dtype == np.float64,
           f"sample: uniforms must be float64 [{n_rows}], got {uniforms.dtype} {tuple(uniforms.shape)}")
    ids = get_array_module(scores).empty((n_rows,), dtype=np.int64)
    return Launch("next_token", f"sample_{suffix(dtype or scores.dtype)}", (n_rows,), (NT_THREADS,),
                  (scores, uniforms, ids, np.int32(n_rows), np.int32(vocab)), ids)
