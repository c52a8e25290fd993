"""Captured once per (rows, length bucket), replayed: the CUDA-graph bookkeeping of the kernel decode step.

A step of ``decode_step.DecodeStep`` launches ~14 kernels a layer; launching them from Python costs more than
running them. CUDA graphs record the launches once (stream capture) and replay them with one call. A replay
repeats the recorded launches exactly (same kernels, grids, arguments and addresses), so everything that changes
from step to step must live in device memory the launches read: the step's tokens (copied into a static buffer
before the replay), the rows' ``lengths`` (advanced on the device by the step itself), the KV cache. Nothing the
host computes per step goes in: a replay needs no host arguments.

What still depends on the length is the self-attention's dynamic shared memory, which holds the scores of every
key (``4 * max_keys`` bytes a block). A graph captured for the whole ``max_length`` would make short steps pay
for the longest, so the length is bucketed: powers of two up to ``max_length`` (at most log2(max_length) + 1
captures, each valid while every row's length stays inside its bucket). The key of a captured step is (rows,
bucket): rows are fixed for one ``DecodeStep``, and a step made for other rows has buffers of its own.

The first step runs eagerly: it compiles the kernels and CuPy's elementwise kernels and lets cuBLAS settle on
its algorithms, none of which may happen during a capture. Later steps replay the graph of their bucket,
capturing it the first time the bucket is reached.

The capture itself is behind a two-method interface (``context()``, ``capture(fn, ctx)``), so that the bookkeeping
is tested on the CPU: ``StreamCapture`` (CuPy: ``Stream.begin_capture()`` ... ``end_capture()`` ->
``Graph.launch()``) and ``Recorder`` (the CPU: a capture runs fn with the step's ``Context`` taping its device
operations instead of running them, as a CUDA capture runs nothing; a replay runs the tape, the same operations on
the same arrays with the same scalars, as a graph replays its kernels).
"""
import contextlib
import dataclasses
import functools

from ...core import backend
from ...core.errors import InputError


def length_bucket(length, max_length):
    """The bucket of a step whose rows reach ``length`` positions: the smallest power of two at least ``length``,
    capped at ``max_length``."""
    if not 1 <= length <= max_length:
        raise InputError(f"length {length} must be in [1, max_length {max_length}]")
    return min(1 << (length - 1).bit_length(), max_length)


def buckets(max_length):
    """Every bucket a decode of ``max_length`` positions can reach, in order."""
    return sorted({length_bucket(n, max_length) for n in range(1, max_length + 1)})


class RecordedGraph:
    """The CPU's stand-in for a ``cupy.cuda.Graph``: ``launch()`` runs the taped operations in order."""

    def __init__(self, tape):
        self.tape, self.launches = tape, 0

    def launch(self):
        self.launches += 1
        for operation in self.tape:
            operation()


class Recorder:
    """Capture on the CPU: ``capture(fn, ctx)`` runs fn with ``ctx`` (a decode_step.Context) taping its device
    operations instead of running them, and returns a RecordedGraph of the tape; counts its captures."""

    def __init__(self):
        self.captures = 0

    def context(self):
        return contextlib.nullcontext()

    def capture(self, fn, ctx):
        self.captures += 1
        ctx.tape = []
        try:
            fn()
            tape = ctx.tape
        finally:
            ctx.tape = None
        return RecordedGraph(tape)


class StreamCapture:
    """Capture on a CuPy stream (not the null stream, which cannot be captured): ``capture(fn)`` records what fn
    launches on the stream into a ``cupy.cuda.Graph`` (whose ``launch`` replays it on the stream). Every launch of a
    step must go to this stream: kernels.run launches on the current stream, so steps run inside ``context()``, and
    the products go through a cuBLAS handle bound to it (cublas.py)."""

    def __init__(self, stream):
        self.stream, self.captures = stream, 0

    @contextlib.contextmanager
    def context(self):
        """Make the stream current, ordered after what the caller's stream has queued (the step's tokens, a beam
        reorder) and before what it queues next (reading the logits): two events, no wait on the host."""
        outer = backend.cupy_module().cuda.get_current_stream()
        self.stream.wait_event(outer.record())
        with self.stream:
            yield
        outer.wait_event(self.stream.record())

    def capture(self, fn, ctx=None):
        """The graph of what fn launches (``ctx``, the step's Context, is the Recorder's business only)."""
        self.captures += 1
        with self.stream:
            self.stream.begin_capture()
            try:
                fn()
            finally:
                graph = self.stream.end_capture()
        return _StreamGraph(graph, self.stream)


@dataclasses.dataclass
class _StreamGraph:
    graph: object
    stream: object

    def launch(self):
        self.graph.launch(self.stream)


@dataclasses.dataclass
class Captured:
    """One captured step: its graph and the step whose static buffers the graph reads and writes (kept referenced
    here, so that no buffer a graph addresses can be freed while the graph may be replayed)."""

    graph: object
    step: object
    bucket: int
    replays: int = 0


class GraphedStep:
    """``step(ids)`` of a ``DecodeStep`` through graphs captured once per (rows, bucket) by ``capture`` (a Recorder
    or a StreamCapture). ``reorder_beams``, ``rows`` and ``length`` are the step's."""

    def __init__(self, step, *, capture):
        self.inner, self.capture = step, capture
        self.graphs = {}  # (rows, bucket) -> Captured

    @property
    def rows(self):
        return self.inner.rows

    @property
    def length(self):
        return self.inner.length

    def step(self, token_ids):
        """Logits ``[rows, V]`` (the step's static buffer, overwritten by the next step) after the tokens
        ``[rows]``, on the capture's stream, ordered with the caller's (``capture.context()``)."""
        with self.capture.context():
            return self._step(token_ids)

    def _step(self, token_ids):
        inner = self.inner
        inner.write_ids(token_ids)  # outside any graph: the one host -> device input of a step
        inner.length += 1
        bucket = length_bucket(inner.length, inner.ctx.max_length)
        if inner.length == 1:  # eagerly: kernels compile, cuBLAS warms up (neither may happen in a capture)
            return inner.run(max_keys=bucket)
        key = (inner.rows, bucket)
        if key not in self.graphs:
            run = functools.partial(inner.run, max_keys=bucket)
            self.graphs[key] = Captured(self.capture.capture(run, inner.ctx), inner, bucket)
        captured = self.graphs[key]
        captured.graph.launch()
        captured.replays += 1
        return inner.logits

    def refill(self, model, memory, memory_keep):
        """``DecodeStep.refill`` on the capture's stream (its products go through the stream's cuBLAS handle)."""
        with self.capture.context():
            self.inner.refill(model, memory, memory_keep)

    def reorder_beams(self, index):
        self.inner.reorder_beams(index)


@functools.lru_cache(maxsize=None)
def gpu_runtime():
    """(launch, product, capture) on the current CUDA device: ``kernels.run``, a cuBLAS handle's product and a
    StreamCapture, all on one stream of their own; made once per process (a cuBLAS handle is costly to create)."""
    from . import cublas, kernels  # noqa: PLC0415 - the GPU side only
    cupy = backend.cupy_module()
    stream = cupy.cuda.Stream(non_blocking=True)
    return kernels.run, cublas.Cublas(stream).product, StreamCapture(stream)
