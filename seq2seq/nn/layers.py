"""The small building blocks: Linear, Conv1D, LayerNorm, Embedding, Dropout, each made from a ParamView.

Each layer pulls its own tensors out of the view under the names transformers uses (``weight``, ``bias``), holds
them as Tensors with idiomatic attribute names, and applies one op from ``nn_ops``. ``RunState`` is the one piece
of mutable state layers share: whether the model is training (dropout on) and the seeded generator dropout draws
from; ``model.train()`` and ``model.eval()`` flip it for every layer at once.
"""
import numpy as np

from ..core.backend import get_array_module
from ..core.errors import InputError
from .functional import dropout, embedding, layer_norm, linear
from .record import NOTHING
from .weights import normal, ones, zeros


class RunState:
    """Training flag, dropout random generator and what to record, shared by every layer of one model.

    The generator is a stream of its own under ``seed``, a child of it (``SeedSequence.spawn``): the model's
    random parameters draw from ``seed`` itself (``ParamStore``), and dropout's masks should not repeat those draws.
    """

    def __init__(self, *, training=False, seed=0):
        self.training = training
        self.rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
        self.records = NOTHING  # what the layers report attention probabilities and hidden states to (record.py)


class Linear:
    """y = x W^T + b; ``weight`` is shaped ``[out, in]`` (torch.nn.Linear's layout, and BERT's checkpoints'),
    kept column-major on the CPU (``thin_input_layout``)."""

    def __init__(self, view, in_features, out_features, *, std, bias=True):
        self.weight = thin_input_layout(view.param("weight", (out_features, in_features), init=normal(std)))
        self.bias = view.param("bias", (out_features,), init=zeros) if bias else None

    def __call__(self, x):
        return linear(x, self.weight, self.bias)  # [..., in] -> [..., out]


class Conv1D:
    """GPT-2's linear layer: y = x W + b with ``weight`` stored ``[in, out]`` (see ``nn_ops.Linear``)."""

    def __init__(self, view, in_features, out_features, *, std):
        self.weight = view.param("weight", (in_features, out_features), init=normal(std))
        self.bias = view.param("bias", (out_features,), init=zeros)

    def __call__(self, x):
        return linear(x, self.weight, self.bias, in_out=True)  # [..., in] -> [..., out]


class LayerNorm:
    def __init__(self, view, size, *, eps):
        self.weight = view.param("weight", (size,), init=ones)
        self.bias = view.param("bias", (size,), init=zeros)
        self.eps = eps

    def __call__(self, x):
        return layer_norm(x, self.weight, self.bias, self.eps)


class Embedding:
    """A lookup table ``[num, dim]``; ``padding_idx``'s row starts at zero when freshly initialised (as torch)."""

    def __init__(self, view, num, dim, *, std, padding_idx=None):
        def init(xp, rng, shape, dtype):
            table = normal(std)(xp, rng, shape, dtype)
            if padding_idx is not None and 0 <= padding_idx < num:
                table[padding_idx] = 0
            return table

        self.weight = view.param("weight", (num, dim), init=init)
        self.num = num

    def __call__(self, ids):
        """Rows ``ids`` of the table. Why no look at the ids: the model's entry points checked them (core/inputs.py);
        every id that reaches a layer lies inside its table."""
        return embedding(ids, self.weight)  # [B, T] -> [B, T, dim]


def lm_head_layout(weight):
    """Keep a tied embedding table ``[V, C]`` in column-major (Fortran) order, in place; returns it.

    Why: the LM head multiplies by the table's transpose, ``h @ W.T``. With W column-major, W.T is an ordinary
    row-major ``[C, V]`` matrix, and OpenBLAS runs that product markedly faster for the few rows of a decode step
    (no difference for large batches; measured: benchmarks/RESULTS.md). Shapes, values, checkpoints and gradients
    are unchanged; only row lookups become strided, which costs little for the handful of decoder input ids.
    """
    weight.data = get_array_module(weight.data).asfortranarray(weight.data)
    return weight


def thin_input_layout(weight):
    """Keep a NumPy weight ``[out, in]`` in column-major (Fortran) order, in place; returns it.

    Why: a decode step multiplies a few rows by every weight, and OpenBLAS does that fastest with the weight read as
    a row-major ``[in, out]`` matrix, ``x @ W^T`` (``fast/cpu/thin.py``; measured: benchmarks/RESULTS.md). With W
    column-major, W^T is that matrix, as it lies: no copy to keep in step with the parameter. Shapes, values,
    checkpoints and gradients are unchanged (the gradient comes in the weight's order, ``fast/cpu/linear.py``). On
    CuPy arrays nothing changes: the layout is a choice for the CPU's BLAS.
    """
    if get_array_module(weight.data) is np:
        weight.data = np.asfortranarray(weight.data)
    return weight


def check_positions(length, limit, *, name):
    """Raise InputError when a sequence needs more positions than the model has learned embeddings for."""
    if length > limit:
        raise InputError(f"{name} has {length} positions but the model has only max_position_embeddings={limit}")


class Dropout:
    def __init__(self, p, state):
        self.p, self.state = p, state

    def __call__(self, x, *, packing=None):
        """``packing`` (nn/packing.py): x holds a padded batch's real rows; the masks are theirs in the padded
        batch's masks, so that packing changes no draw."""
        return dropout(x, self.p, self.state.rng, training=self.state.training, packing=packing)
