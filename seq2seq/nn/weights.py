"""From a flat checkpoint ``{hf_key: array}`` to parameters, one prefix view at a time (candle's VarBuilder).

A ``ParamStore`` holds the tensors read from a checkpoint (possibly none, for a random model) and every parameter
created so far. A layer is built from a ``ParamView``, a prefix into that store: ``view.sub("attention.self")``
narrows it, ``view.param("query.weight", (C, C), init=normal(0.02))`` returns the parameter. So the Hugging Face key
names appear exactly where the layer that uses them is built, and our attribute names stay our own.

``param`` either takes the checkpoint's tensor (checking its shape) or, when the checkpoint lacks it, makes a
fresh one with the given initialiser and records the key as *missing*. Loading a checkpoint, warm-starting from
two, and random initialisation are therefore one code path. Afterwards the store reports which checkpoint tensors
were never asked for (*unused*), and its ``params`` map, keyed by the full Hugging Face names, is what
``save_pretrained`` writes.

Two twists on plain prefixes:
- ``source_prefix``: where to *read* a view's tensors when the checkpoint spells the prefix differently, e.g. a
  ``BertModel`` checkpoint (keys ``embeddings.*``) serving as the ``bert.*`` part of a ``BertLMHeadModel``. The
  parameter is still *named* (and saved) under the canonical prefix.
- ``tied_to``: a view whose parameters are reused instead of created (``tie_encoder_decoder``): the decoder asks
  for ``bert.encoder.layer.0.attention.self.query.weight`` and receives the encoder's tensor of the same relative
  name, when the encoder has one.
"""
import re

import numpy as np

from ..core.autograd import Tensor
from ..core.errors import CheckpointError

# Buffers that checkpoints carry but no model here needs (recomputed or implied): never reported as unused.
IGNORED_KEYS = re.compile(r"(^|\.)(position_ids|token_type_ids|attn\.bias|attn\.masked_bias)$")


# -- initialisers: (xp, rng, shape, dtype) -> array ---------------------------------------------------------------
def normal(std):
    """Weights as transformers initialises them: normal(0, initializer_range)."""
    def init(xp, rng, shape, dtype):
        return xp.asarray(rng.normal(0.0, std, size=shape).astype(dtype))
    return init


def zeros(xp, rng, shape, dtype):
    return xp.zeros(shape, dtype=dtype)


def ones(xp, rng, shape, dtype):
    return xp.ones(shape, dtype=dtype)


class ParamStore:
    """Checkpoint tensors in, named parameters out, with a record of what was missing and what went unused."""

    def __init__(self, tensors=None, *, xp=np, dtype=np.float32, seed=0, source="random initialisation"):
        self.tensors = dict(tensors or {})
        self.xp, self.dtype, self.source = xp, np.dtype(dtype), source
        self.rng = np.random.default_rng(seed)
        self.params = {}  # full key -> Tensor, in creation order (a tied tensor appears once, under its owner)
        self.buffers = {}  # full key -> array: saved with the model but not trained (e.g. BERT's pooler)
        self.aliases = {}  # full key -> the key of the parameter it shares (tie_encoder_decoder)
        self.missing = []  # keys the checkpoint lacked, freshly initialised
        self.used = set()

    def view(self, prefix="", *, source_prefix=None):
        return ParamView(self, prefix, prefix if source_prefix is None else source_prefix)

    def has_prefix(self, prefix):
        """True when some checkpoint tensor's key starts with ``prefix``."""
        return any(key.startswith(prefix) for key in self.tensors)

    def unused(self):
        """Checkpoint keys no layer asked for (known buffers such as position_ids excluded)."""
        return sorted(k for k in self.tensors if k not in self.used and not IGNORED_KEYS.search(k))

    def fetch(self, key, source_key, shape, init):
        """The array for ``key``: the checkpoint's ``source_key`` if present, else a fresh one from ``init``."""
        if source_key not in self.tensors:
            self.missing.append(key)
            return init(self.xp, self.rng, shape, self.dtype)
        array = self.tensors[source_key]
        self.used.add(source_key)
        if tuple(array.shape) != tuple(shape):
            raise CheckpointError(f"{self.source}: tensor {source_key!r} has shape {tuple(array.shape)}, "
                                  f"but the config calls for {tuple(shape)}")
        if array.dtype.kind != "f":
            raise CheckpointError(f"{self.source}: tensor {source_key!r} has dtype {array.dtype}, "
                                  "expected a floating-point tensor")
        return self.xp.asarray(array.astype(self.dtype, copy=False))


class ParamView:
    """A prefix into a ParamStore: ``sub`` narrows it, ``param`` and ``buffer`` create what a layer holds."""

    def __init__(self, store, prefix, source_prefix, tied_to=None):
        self.store, self.prefix, self.source_prefix, self.tied_to = store, prefix, source_prefix, tied_to

    def sub(self, name, *, source_name=None):
        """The view one level down: ``view.sub("attention").sub("self")``.

        ``source_name`` reads from a differently named level of the checkpoint ("" to read from this level).
        """
        source_name = name if source_name is None else source_name
        tied = self.tied_to.sub(name) if self.tied_to is not None else None
        return ParamView(self.store, _join(self.prefix, name), _join(self.source_prefix, source_name), tied)

    def reading_from(self, source_name):
        """The same view, reading its tensors one level further down the checkpoint (``"bert"``: ``bert.*``)."""
        return ParamView(self.store, self.prefix, _join(self.source_prefix, source_name), self.tied_to)

    def reading_at(self, source_prefix):
        """The same view, reading its tensors from ``source_prefix`` (a full key prefix) of the checkpoint."""
        return ParamView(self.store, self.prefix, source_prefix, self.tied_to)

    def tie(self, other):
        """This view, reusing ``other``'s parameters wherever ``other`` has one of the same relative name."""
        return ParamView(self.store, self.prefix, self.source_prefix, other)

    def param(self, name, shape, *, init):
        """The trainable parameter ``prefix + name`` of ``shape`` (from the checkpoint, the tied view, or ``init``)."""
        key = self.prefix + name
        if self.tied_to is not None:
            shared = self.store.params.get(self.tied_to.prefix + name)
            if shared is not None:
                self.store.aliases[key] = shared.name
                self.store.used.add(self.source_prefix + name)  # the decoder's own copy is superseded
                return shared
        data = self.store.fetch(key, self.source_prefix + name, shape, init)
        tensor = Tensor(data, requires_grad=True, name=key)
        self.store.params[key] = tensor
        return tensor

    def buffer(self, name, shape, *, init):
        """An array saved with the model but not trained (kept only so checkpoints round-trip)."""
        key = self.prefix + name
        self.store.buffers[key] = self.store.fetch(key, self.source_prefix + name, shape, init)
        return self.store.buffers[key]


def _join(prefix, name):
    return prefix + name + "." if name else prefix
