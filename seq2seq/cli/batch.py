"""``generate --input in.jsonl --output out.jsonl``: a JSON Lines file of sources -> one output line per input line,
in input order, resumable after a crash.

    records = read_records(...)                      # the input's objects, checked (file and line in each error)
    batches = plan_batches(lengths, batch_size=32)   # index lists, longest sources first: little padding
    for results in run_batches(model, tokenizer, sources, batches, kwargs):   # [(index, output), ...] per batch
        ...

The work is split so that a process can be handed any share of the planned batches: ``plan_batches`` depends only
on the input and the flags, ``run_batches`` on the list of batches it is given. Under ``mpirun -n N`` every rank
plans the same batches and takes every N-th of those left to do (longest first, so the shares cost about the same),
and rank 0 writes the output: the same file one process writes, since each output comes from the same batch.

Resuming: each finished batch's results are appended to ``OUT.partial`` (rank r > 0: ``OUT.partial.r``; one
``{"index": i, "output": ...}`` a line, flushed and fsynced per batch) after a header line with the arguments that
decide the results (model, tokenizer, input file's size and SHA-256, source field, truncation, batch size,
generation flags, backend). A rerun with the same arguments reads it (a torn last line, from a kill mid-write, is
cut off), skips the batches already done and reruns a batch that was only partly written, whole, so every output
comes from the batch an uninterrupted run gives it. At the end ``OUT`` is written in input order to a temporary
file, fsynced, moved into place with ``os.replace`` and the sidecars removed: the file equals an uninterrupted
run's. A sidecar written with other arguments is refused rather than mixed. Rank 0 reads (and repairs) every rank's
sidecar before any rank writes and after all have finished, so a rerun may use another number of ranks.
"""
import hashlib
import json
import os
import re

from ..core.distributed import get_communicator, use_own_gpu
from ..core.errors import InputError
from ..models.model import EncoderDecoderModel
from ..models.tokenizer import Tokenizer
from ..training.console import progress_bar
from ..training.data import _encode, read_records

FORMAT = "seq2seq generate --input/--output progress, version 1"


def plan_batches(lengths, *, batch_size):
    """The input's indices cut into batches of ``batch_size``, longest sources first (ties in input order): each
    batch is padded to its own longest source, and an input too long for memory fails at the start."""
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def run_batches(model, tokenizer, sources, batches, kwargs, *, max_source_len=None):
    """Generate for each batch of indices into ``sources``; yield ``[(index, output), ...]`` per batch, where
    ``output`` is a text, or a list of texts with ``num_return_sequences`` > 1."""
    returns = kwargs.get("num_return_sequences") or model.generation_config.num_return_sequences or 1
    for indices in batches:
        enc = tokenizer([sources[i] for i in indices], max_length=max_source_len)
        ids = model.generate(enc["input_ids"], attention_mask=enc["attention_mask"], **kwargs)
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
        if returns > 1:  # transformers' layout: each input's sequences side by side
            texts = [texts[k * returns:(k + 1) * returns] for k in range(len(indices))]
        yield list(zip(indices, texts))


def file_digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_header(args, kwargs):
    """What decides the results: a sidecar written under another header is not this run's."""
    def where(ref):  # a local folder by its absolute path (the working directory may change), else a Hub id
        return os.path.abspath(ref) if os.path.isdir(ref) else ref
    return {"format": FORMAT, "model": where(args.model), "tokenizer": where(args.tokenizer or args.model),
            "input": os.path.abspath(args.input), "input_size": os.path.getsize(args.input),
            "input_sha256": file_digest(args.input), "source_field": args.source_field,
            "max_source_len": args.max_source_len, "batch_size": args.batch_size, "backend": args.backend,
            "dtype": args.dtype,
            "generation": kwargs}


def read_partial(path, header, count):
    """``{index: output}`` from the sidecar at ``path`` (none: ``{}``), after checking its header; a torn last line
    is cut off the file so that appending continues cleanly."""
    if not os.path.exists(path):
        return {}
    done, good = {}, 0  # good: bytes of whole, valid lines
    with open(path, "rb") as f:
        lines = f.readlines()
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line) if line.endswith(b"\n") else None
        except ValueError:
            entry = None
        if entry is None:
            if number < len(lines):
                raise InputError(f"{path}, line {number}: not a progress line; delete the file to start over")
            break  # the torn last line of a killed run
        if number == 1:
            if entry.get("header") != header:
                stored = entry.get("header") or {}
                changed = sorted(k for k in set(stored) | set(header) if stored.get(k) != header.get(k))
                raise InputError(f"{path} holds the progress of a run with other arguments (differing: "
                                 f"{', '.join(changed)}); rerun with those, or delete it to start over")
        elif not isinstance(entry.get("index"), int) or not 0 <= entry["index"] < count:
            raise InputError(f"{path}, line {number}: not a progress line of this input; delete it to start over")
        else:
            done[entry["index"]] = entry["output"]
        good += len(line)
    if good < sum(map(len, lines)):
        with open(path, "r+b") as f:
            f.truncate(good)
    return done


def sidecar(output, rank):
    """The progress file rank ``rank`` appends to."""
    return output + ".partial" + (f".{rank}" if rank else "")


def sidecars(output):
    """Every progress file of ``output`` there is: this run's ranks', and those of an earlier run with more ranks."""
    folder, name = os.path.split(os.path.abspath(output))
    pattern = re.compile(re.escape(name) + r"\.partial(\.\d+)?$")
    return sorted(os.path.join(folder, entry) for entry in os.listdir(folder) if pattern.match(entry))


def read_progress(output, header, count):
    """``{index: output}`` from every sidecar of ``output`` (each checked and repaired by ``read_partial``)."""
    done = {}
    for path in sidecars(output):
        done.update(read_partial(path, header, count))
    return done


def append_lines(f, rows):
    f.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    f.flush()
    os.fsync(f.fileno())


def write_output(path, records, outputs, args):
    """The output file, in input order, in one step: a temporary file beside it, fsynced, then ``os.replace``."""
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        for index, record in enumerate(records):
            row = {args.id_field: record[args.id_field]} if args.id_field else dict(record)
            row[args.output_field] = outputs[index]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def generate_file(args, kwargs):
    """``generate --input IN --output OUT``: every line of IN generated for, resumably (see the module's doc)."""
    if args.text:
        raise InputError("give source texts either as arguments or with --input, not both")
    if not args.output:
        raise InputError("--input needs --output (the JSON Lines file to write)")
    records = read_records(args.input, (args.source_field,), present=(args.id_field,) if args.id_field else (),
                           hint="--source-field" + (" / --id-field" if args.id_field else ""))
    comm = get_communicator()
    use_own_gpu(comm, args.backend)
    model = EncoderDecoderModel.from_pretrained(args.model, backend=args.backend, dtype=args.dtype)
    tokenizer = Tokenizer.from_pretrained(args.tokenizer or args.model)
    sources = [record[args.source_field] for record in records]
    lengths = [len(ids) for ids in _encode(tokenizer, sources, args.max_source_len)]
    batches = plan_batches(lengths, batch_size=args.batch_size)
    header = run_header(args, kwargs)
    # rank 0 reads the sidecars while no rank writes (a torn line is cut off the file)
    done = comm.broadcast(read_progress(args.output, header, len(records)) if comm.rank == 0 else None)
    todo = [batch for batch in batches if any(i not in done for i in batch)][comm.rank::comm.world_size]
    with open(sidecar(args.output, comm.rank), "a", encoding="utf-8") as f:
        if f.tell() == 0:
            append_lines(f, [{"header": header}])
        total = len(records) if comm.world_size == 1 else len(done) + sum(map(len, todo))  # rank 0's share
        with progress_bar(total=total, desc="generating", unit="text", show=comm.rank == 0) as bar:
            bar.update(len(done))
            for results in run_batches(model, tokenizer, sources, todo, kwargs, max_source_len=args.max_source_len):
                new = [(i, out) for i, out in results if i not in done]  # a partly written batch: the rest of it
                append_lines(f, [{"index": i, "output": out} for i, out in new])
                done.update(new)
                bar.update(len(new))
    comm.barrier()  # every rank's share is in its sidecar
    if comm.rank == 0:
        done = read_progress(args.output, header, len(records)) if comm.world_size > 1 else done
        write_output(args.output, records, done, args)
        for path in sidecars(args.output):
            os.remove(path)


def add_file_flags(parser):
    group = parser.add_argument_group("a JSON Lines file in, one out (instead of text arguments or stdin)")
    group.add_argument("--input", help="JSON Lines file of sources, one object a line")
    group.add_argument("--output", help="JSON Lines file to write: each input object plus the output field, in "
                                        "input order (a rerun continues from OUTPUT.partial)")
    group.add_argument("--source-field", default="source", help="the input's field to generate from")
    group.add_argument("--output-field", default="generated_text",
                       help="the field written (default: generated_text, transformers' pipeline key); a list "
                            "with --num-return-sequences > 1")
    group.add_argument("--id-field", help="write only this input field and the output field, not every field")
    group.add_argument("--batch-size", type=int, default=32, help="sources generated together (default 32)")
    group.add_argument("--max-source-len", type=int,
                       help="truncate sources to this many tokens (default: the tokenizer's model_max_length)")
