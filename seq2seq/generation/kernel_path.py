"""``generate(..., cuda_graph=...)``: the decode loops over a fused decoder step instead of the model's
array-by-array ``decode_step``: on a GPU the kernel step of ``fast/cuda`` (decode_step.py) replayed from CUDA graphs
(graphs.py), on the CPU the step of ``fast/cpu/decode_step.py`` (the same fused forms as the eager step, called
without the autograd: the same logits, bit for bit, in less time).

    cuda_graph=None   (the default) a fused step where one applies: the kernel step on a model on the CuPy
                      backend with a CUDA device, the CPU step on a NumPy model (unless ``fast.cpu.disabled()``),
                      for a call the step serves (below); the eager path everywhere else
    cuda_graph=True   the same, but on a model the kernels cannot run for at all (the NumPy backend, no CUDA
                      device) it raises GenerationError rather than quietly computing on the CPU
    cuda_graph=False  the eager path on either device: the reference both fused steps are tested against

A fused step produces the decoder's logits; everything after them (processors, argmax, draws, beam bookkeeping) is
the same array code on every path. Calls a step does not serve fall back to the eager path without a warning,
even with ``cuda_graph=True``: ``return_dict_in_generate`` with ``output_attentions`` or ``output_hidden_states``
(the steps record nothing), ``use_cache=False``, and models the step's ``unsupported`` names (for the kernels:
decoders other than BERT's, GPT-2's and BART's, float64, an activation without a kernel, ``max_length`` beyond the
position table; for the CPU step: ``max_length`` beyond the position table, weights not in the thin layout).
``generate_stream`` takes no ``cuda_graph``: it decodes through the CPU step where that applies, eagerly on a GPU
(its steps run between the caller's own operations, which a held kernel step's buffers would not survive).

The kernel runtime (launcher, product and capture) comes from ``runtime()``: ``kernels.run``, a cuBLAS handle and a
CUDA stream capture on a GPU. The CPU tests replace it (and ``available``) with the kernels' CPU emulation,
``numpy.matmul`` and a ``graphs.Recorder``, and so run this very path through ``model.generate``.

A model keeps its last kernel step between generate calls (``kernel_decoding``): the next call with as many rows,
the same ``max_length`` and sources of the same shape refills its buffers in place and replays the graphs already
captured, instead of capturing them again. So the GPU memory of that step (its KV cache above all) stays held
until another shape replaces it, the model goes, or ``release(model)``. Weights changed in place (training)
are seen: the step's copies of them are refilled each call; weight arrays replaced (``model.to``, a load) make
a new step. One generate at a time per model on this path (a second one, interleaved from another thread, would
share the buffers). The CPU step is made for each call (its weights are views of the model's, its cache is
allocated lazily by the system): nothing is kept between calls.

``fast/cuda`` is imported inside the functions that need it, never at package import and never for a NumPy model
left at the default (tests/fast/test_cuda_kernels.py checks the first).
"""
import weakref

from ..core.backend import backend_of
from ..core.errors import GenerationError
from ..fast import cpu as fast_cpu
from ..fast.cpu import decode_step as cpu_step
from ..nn.activations import array_activation

_HELD = weakref.WeakKeyDictionary()  # model -> its last KernelDecoding


def available(model):
    """Whether the kernels can run for ``model`` at all: its arrays are CuPy's and a CUDA device is there."""
    if backend_of(model.parameters()[0].data) != "cupy":
        return False
    from ..fast.cuda import kernels  # noqa: PLC0415 - the GPU side only
    return kernels.available()


def runtime():
    """(launch, product, capture) for the kernel step: the GPU's (graphs.gpu_runtime)."""
    from ..fast.cuda import graphs  # noqa: PLC0415 - the GPU side only
    return graphs.gpu_runtime()


def serves(model, config):
    """Whether the kernel step serves a generate call of this resolved config (see the module docstring)."""
    from ..fast.cuda import decode_step  # noqa: PLC0415 - imported on the kernel path only
    return _records_nothing(config) and decode_step.unsupported(model, max_length=config.max_length) is None


def _records_nothing(config):
    """True for a call that records no attentions or hidden states and uses the cache: what a fused step serves."""
    records = config.return_dict_in_generate and (config.output_attentions or config.output_hidden_states)
    return config.use_cache and not records


def cpu_serves(model, config):
    """Whether the CPU step serves a generate call of this resolved config: a NumPy model with the fused CPU
    forms on (not inside ``fast.cpu.disabled()``), and what ``cpu_step.unsupported`` accepts."""
    return (fast_cpu.enabled(model.xp) and _records_nothing(config)
            and cpu_step.unsupported(model, max_length=config.max_length) is None)


def choose(model, config, cuda_graph):
    """The fused step this generate call decodes through: ``"cuda"``, ``"cpu"`` or None (the eager path), for
    ``cuda_graph`` None, True or False (see above)."""
    if cuda_graph not in (None, True, False):
        raise GenerationError(f"cuda_graph must be True, False or None (the default), got {cuda_graph!r}")
    if cuda_graph is False:
        return None
    if available(model):
        return "cuda" if serves(model, config) else None
    if cuda_graph:
        raise GenerationError("cuda_graph=True needs the model on backend='cupy' with a CUDA device (the "
                              "kernels of fast/cuda); on the NumPy backend leave it unset or pass False")
    return "cpu" if cpu_serves(model, config) else None


def fused_decoding(path, model, cache, *, copies, max_length):
    """The fused step ``path`` (``choose``) for the sources of ``cache`` (a DecoderCache of one row per source),
    each serving ``copies`` rows."""
    if path == "cuda":
        return kernel_decoding(model, cache, copies=copies, max_length=max_length)
    return CpuDecoding(model, cache, copies=copies, max_length=max_length)


def kernel_decoding(model, cache, *, copies, max_length):
    """The KernelDecoding for the sources of ``cache`` (a DecoderCache of one row per source), each serving
    ``copies`` rows: the model's last one refilled when it fits (see the module docstring), else a new one."""
    key = (copies, max_length, tuple(cache.memory.shape), cache.memory_keep is None,
           tuple(id(p.data) for p in model.parameters()))
    held = _HELD.get(model)
    if held is not None and held.key == key:
        held.step.refill(model, cache.memory, cache.memory_keep)
        return held
    _HELD.pop(model, None)  # its buffers go before the new ones are allocated
    _HELD[model] = KernelDecoding(model, cache, copies=copies, max_length=max_length, key=key)
    return _HELD[model]


def release(model):
    """Drop the kernel step ``model`` keeps between generate calls (its GPU memory)."""
    _HELD.pop(model, None)


class FusedDecoding:
    """A fused step in the place of a ``DecoderCache``: what the decode loops read of a cache (``batch_size``,
    ``reorder_beams``) and ``decode(ids)``, the logits after each row's newest token. ``self.step`` is the step
    (``rows``, ``step(token_ids)`` -> its logits buffer, ``reorder_beams(index)``)."""

    step = None

    @property
    def batch_size(self):
        return self.step.rows

    def decode(self, newest):
        """Logits ``[rows, V]`` after the tokens ``newest`` ``[rows, 1]``: a copy, the step's buffer being reused."""
        return self.step.step(newest[:, -1]).copy()

    def reorder_beams(self, index):
        self.step.reorder_beams(index)


class KernelDecoding(FusedDecoding):
    """The kernel step, replayed from CUDA graphs (graphs.GraphedStep). ``key``: what it was made for
    (kernel_decoding)."""

    def __init__(self, model, cache, *, copies, max_length, key=None):
        from ..fast.cuda import decode_step, graphs  # noqa: PLC0415 - imported on the kernel path only
        launch, product, capture = runtime()
        with capture.context():  # on the stream of the products (the encoder's keys and values are some)
            step = decode_step.DecodeStep(model, cache.memory, cache.memory_keep, copies=copies,
                                          max_length=max_length, launch=launch, product=product)
        self.step, self.key = graphs.GraphedStep(step, capture=capture), key


class CpuDecoding(FusedDecoding):
    """The CPU step (fast/cpu/decode_step.py), made for this call."""

    def __init__(self, model, cache, *, copies, max_length):
        self.step = cpu_step.CpuDecodeStep(model, cache.memory, cache.memory_keep, copies=copies,
                                           max_length=max_length, activation=array_activation)


def decode_step_logits(model, newest, cache):
    """The logits ``[N, V]`` after ``newest`` ``[N, 1]``: a fused step's, or ``model.decode_step``'s."""
    if isinstance(cache, FusedDecoding):
        return cache.decode(newest)
    return model.decode_step(newest, cache)
