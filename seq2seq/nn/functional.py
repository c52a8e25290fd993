"""Neural-network ops with hand-derived backward passes: linear, layer norm, masked softmax, embedding lookup and
dropout (the loss has a file of its own: loss.py).

Each of these could be composed from the primitives in ``ops.py``, and the gradients would come for free. They are
written as ``Function``s instead because their derivatives are worth reading written out, and because they run on
the largest arrays in the model, where every extra pass over memory costs time.

Each op here is its plain form: a few lines of ``xp`` math, the definition of the op and what CuPy runs. Linear
and layer norm also have a fused CPU form (``fast/cpu/``: blockwise, in place, on every core), taken
on NumPy through one explicit branch, ``if fast_cpu.enabled(xp):``; layer norm a fused CUDA form on CuPy
(``fast/cuda/eager.py``), ``elif cuda_enabled(xp, dtype):``. The forms keep the same state for backward, so any
backward can follow any forward.

Shapes use: B batch, T query length, S key length, C channels (hidden size), V vocabulary, N = B * T rows.

In-place arithmetic appears only on arrays the op has just allocated itself: never on an input, and never on an
array saved for backward after it has been saved.
"""
import numpy as np

from ..core.autograd import Function
from ..core.backend import get_array_module, memory_order
from ..core.errors import InputError
from ..fast import cpu as fast_cpu
from ..fast import cuda_enabled, cuda_forms
from ..fast.cpu import layer_norm as fast_layer_norm
from ..fast.cpu import linear as fast_linear


class Linear(Function):
    """y = x W^T + b, with W stored ``[out, in]`` as ``torch.nn.Linear`` stores it.

    ``in_out=True`` takes W stored ``[in, out]`` instead (y = x W + b): GPT-2's ``Conv1D`` layout. Why GPT-2
    differs: its weights come from OpenAI's TensorFlow code, which multiplies on the right; transformers kept the
    layout so the original checkpoints load unchanged.

    The fused CPU form (``fast/cpu/linear.py``) orders the products for thin inputs, adds the bias on every core,
    and makes the weight's gradient in the weight's memory order. That last point is about memory layout, but it
    serves only the CPU's blockwise optimizer update (which reads a gradient laid out as its parameter without a
    copy); the plain form's gradient is C-ordered, and the plain update takes any layout.
    """

    def __init__(self, *, in_out=False):
        self.in_out = in_out

    def forward(self, x, weight, bias=None):
        xp = get_array_module(x)
        self.x, self.weight = x, weight
        out = weight.shape[1] if self.in_out else weight.shape[0]
        x2 = x.reshape(-1, x.shape[-1])  # [..., in] -> [N, in]: one large product instead of a loop over batches
        if fast_cpu.enabled(xp):
            y = fast_linear.linear_forward(x2, weight, bias, in_out=self.in_out)
        else:
            w = weight if self.in_out else weight.T  # [in, out]
            y = x2 @ w  # [N, in] @ [in, out] -> [N, out]
            if bias is not None:
                y += bias
        return y.reshape(*x.shape[:-1], out)  # [N, out] -> [..., out]

    def backward(self, gy):
        xp = get_array_module(gy)
        gy2 = gy.reshape(-1, gy.shape[-1])  # [..., out] -> [N, out]
        x2 = self.x.reshape(-1, self.x.shape[-1])  # [..., in] -> [N, in]
        needs = tuple(self.needs_input_grad) + (False,) * (3 - len(self.needs_input_grad))  # (x, weight, bias)
        if fast_cpu.enabled(xp):
            gx2, gw, gb = fast_linear.linear_backward(gy2, x2, self.weight, in_out=self.in_out, needs=needs)
        else:
            w = self.weight if self.in_out else self.weight.T  # [in, out]
            gx2 = gy2 @ w.T if needs[0] else None  # [N, out] @ [out, in] -> [N, in]
            gw = (x2.T @ gy2 if self.in_out else gy2.T @ x2) if needs[1] else None  # [in, out] or [out, in]
            gb = gy2.sum(axis=0) if needs[2] else None  # [N, out] -> [out]
        gx = None if gx2 is None else gx2.reshape(self.x.shape)  # [N, in] -> [..., in]
        return gx, gw, gb


class Linears(Function):
    """Several linear layers applied to the same input: ``(x W1^T + b1, x W2^T + b2, ...)``, as one op.

    A self-attention block's query, key and value projections all read the same rows. The plain form is one
    ``Linear`` after the other; the fused CPU form hands the products of few rows to ``fast/cpu/thin.py`` together,
    so that their column chunks share the cores in one go. Every output is computed as ``Linear`` computes it, and
    backward is theirs, with the input's gradients added up. Inputs: ``x``, then each weight and its bias (if
    ``has_bias`` says it has one); weights stored ``[out, in]``.
    """

    def __init__(self, has_bias):
        self.has_bias = tuple(has_bias)

    def forward(self, x, *params):
        xp = get_array_module(x)
        self.x, self.pairs = x, _pairs(params, self.has_bias)
        x2 = x.reshape(-1, x.shape[-1])  # [..., in] -> [N, in]
        if fast_cpu.enabled(xp):
            ys = fast_linear.linears_forward(x2, self.pairs)
        else:
            ys = [x2 @ w.T for w, _ in self.pairs]  # [N, in] @ [in, out] -> [N, out] each
            for y, (_, b) in zip(ys, self.pairs):
                if b is not None:
                    y += b
        return tuple(y.reshape(*x.shape[:-1], y.shape[-1]) for y in ys)  # [N, out] -> [..., out] each

    def backward(self, *gys):
        gx, grads = None, []
        needs = iter(self.needs_input_grad[1:])
        for (w, b), gy in zip(self.pairs, gys):
            op = Linear()
            op.x, op.weight = self.x, w
            op.needs_input_grad = (self.needs_input_grad[0], next(needs)) + ((next(needs),) if b is not None else ())
            g = op.backward(gy)
            gx = g[0] if gx is None else (gx if g[0] is None else gx + g[0])
            grads += [g[1]] + ([g[2]] if b is not None else [])
        return (gx, *grads)


def _pairs(params, has_bias):
    """``[(weight, bias or None)]`` from the flat inputs of ``Linears``."""
    pairs, i = [], 0
    for with_bias in has_bias:
        pairs.append((params[i], params[i + 1] if with_bias else None))
        i += 2 if with_bias else 1
    return pairs


class LayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta over the last axis (biased variance, as torch).

    Backward, with xhat = (x - mean) * rstd, rstd = 1 / sqrt(var + eps) and g = gy * gamma, is three terms
    (llm.c's layout): term 1, g itself; term 2, its mean (the mean was subtracted); term 3, xhat times
    mean(g * xhat) (the variance depends on x too); gx = rstd * (term 1 - term 2 - term 3). gamma's and beta's
    gradients are sums over rows. The fused CPU form (``fast/cpu/layer_norm.py``) runs both passes on blocks of
    rows on every core.

    What is kept for backward is the output y, not the input x, wherever xhat = (y - beta) / gamma can be had back
    to within a few float32 roundings (``recovers_xhat``), as Apex's "memory-efficient" LayerNorm does. Why: the
    layer after a LayerNorm (a linear layer, attention's projections) keeps y as its own input anyway, while x, a
    residual sum, is kept by nothing else: keeping y frees one array of the activations' size per LayerNorm until
    backward (54 MiB of a MiniLM bert2bert's training step, 16 x 128 tokens; benchmarks/RESULTS.md). torch keeps x.
    On NumPy arrays only: on CuPy, deciding would copy a result from the device at every LayerNorm (the CUDA
    backward takes either).
    """

    def __init__(self, eps):
        self.eps = eps

    def forward(self, x, gamma, beta):
        xp = get_array_module(x)
        if fast_cpu.enabled(xp):
            y, mean, rstd = fast_layer_norm.layer_norm_forward(x, gamma, beta, self.eps)
        elif cuda_enabled(xp, x.dtype):
            y, mean, rstd = cuda_forms().layer_norm_forward(x, gamma, beta, self.eps)  # one kernel; float32 statistics
        else:
            mean = x.mean(axis=-1, keepdims=True)  # [..., C] -> [..., 1]
            centred = x - mean
            var = (centred * centred).mean(axis=-1, keepdims=True)  # [..., 1]
            rstd = 1.0 / xp.sqrt(var + self.eps)
            y = centred * rstd * gamma + beta
        # Why x or y, with mean and rstd, rather than xhat: the graph holds one of them anyway, so xhat would be one
        # more array of the activations' size per LayerNorm; backward rebuilds it in one pass.
        self.mean, self.rstd, self.gamma = mean, rstd, gamma
        # (on NumPy only: on CuPy the check would wait for the device at every LayerNorm of a training step)
        keep_output = self.records and xp is np and recovers_xhat(gamma, beta)
        self.x, self.y, self.beta = (None, y, beta) if keep_output else (x, None, None)
        return y

    def xhat(self):
        """The normalised input, ``[..., C]``, from what forward kept (the plain form's; fast/cpu has its own)."""
        if self.x is not None:
            return (self.x - self.mean) * self.rstd
        return (self.y - self.beta) / self.gamma

    def backward(self, gy):
        xp = get_array_module(gy)
        if fast_cpu.enabled(xp):
            return fast_layer_norm.layer_norm_backward(gy, self.mean, self.rstd, self.gamma, x=self.x, y=self.y,
                                                       beta=self.beta, needs=self.needs_input_grad)
        if cuda_enabled(xp, gy.dtype):
            return cuda_forms().layer_norm_backward(gy, self.mean, self.rstd, self.gamma, x=self.x, y=self.y,
                                                    beta=self.beta, needs=self.needs_input_grad)
        need_x, need_gamma, need_beta = self.needs_input_grad
        xhat = self.xhat()  # [..., C]
        c = xhat.shape[-1]
        gx = ggamma = gbeta = None
        if need_x:
            g = gy * self.gamma  # term 1
            term2 = g.mean(axis=-1, keepdims=True)  # [..., 1]
            term3 = xhat * (g * xhat).mean(axis=-1, keepdims=True)
            gx = (g - term2 - term3) * self.rstd
        if need_gamma:
            ggamma = (gy * xhat).reshape(-1, c).sum(axis=0)  # [N, C] -> [C]
        if need_beta:
            gbeta = gy.reshape(-1, c).sum(axis=0)  # [N, C] -> [C]
        return gx, ggamma, gbeta


RECOVERY_LIMIT = 64  # the largest |beta / gamma| from which LayerNorm's backward recovers xhat from its output


def recovers_xhat(gamma, beta):
    """Whether xhat = (y - beta) / gamma comes back close enough from y = xhat * gamma + beta, rounded.

    Rounding y leaves an error of about float32's epsilon times |y|, which the division turns into
    eps * (|xhat| + |beta / gamma|) in xhat: small while |beta / gamma| is, at most ``RECOVERY_LIMIT`` (4e-6 in
    float32; the real MiniLM's LayerNorms reach 58). A gamma of 0 (nothing to divide by) says no: 0 / 0 is NaN.
    """
    xp = get_array_module(gamma)
    with np.errstate(divide="ignore", invalid="ignore"):
        return bool(xp.max(xp.abs(beta) / xp.abs(gamma)) <= RECOVERY_LIMIT)


class MaskedSoftmax(Function):
    """softmax(scores * scale) over the last axis, with positions where ``keep`` is False left out.

    ``keep`` is a boolean array broadcastable to the scores (``[B, 1, T, S]`` for attention) or None.
    Why a finite fill instead of -inf: a row whose every position is masked (a padded query) would give
    exp(-inf - -inf) = NaN; with the dtype's lowest finite value it gives a harmless uniform row instead, which is
    also what transformers' eager attention gives.
    """

    def __init__(self, keep=None, scale=1.0):
        self.keep, self.scale = keep, scale

    def forward(self, scores):
        xp = get_array_module(scores)
        y = scores * scores.dtype.type(self.scale)
        if self.keep is not None:
            xp.copyto(y, xp.finfo(y.dtype).min, where=~self.keep)
        y -= y.max(axis=-1, keepdims=True)  # the largest exponent becomes 0: no overflow
        xp.exp(y, out=y)
        y /= y.sum(axis=-1, keepdims=True)
        self.y = y
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        y = self.y
        gx = gy * y
        gx -= y * gx.sum(axis=-1, keepdims=True)  # dx_i = y_i (gy_i - sum_j gy_j y_j)
        gx *= self.scale
        if self.keep is not None:
            xp.copyto(gx, 0, where=~self.keep)  # masked scores were replaced by a constant: no gradient
        return gx


class Embedding(Function):
    """Row lookup ``weight[ids]``; backward scatter-adds each output gradient into the row it came from."""

    def __init__(self, ids):
        self.ids = ids

    def forward(self, weight):
        self.weight_shape = weight.shape
        self.weight_order = memory_order(weight)  # the gradient's too (see Linear.backward)
        return weight[self.ids]  # [B, T] -> [B, T, C]

    def backward(self, gy):
        xp = get_array_module(gy)
        gw = xp.zeros(self.weight_shape, dtype=gy.dtype, order=self.weight_order)
        # add.at, not gw[ids] += gy: a repeated id must receive the sum of its gradients, not the last one.
        xp.add.at(gw, self.ids.reshape(-1), gy.reshape(-1, gy.shape[-1]))
        return gw


class Dropout(Function):
    """Zero each element with probability p and scale the rest by 1 / (1 - p) (inverted dropout, as torch).

    The mask is kept as booleans for backward: a quarter of the memory of a float mask. With ``packing`` (an
    ``nn.packing.Packing``; x its real rows ``[N, C]``) the mask is drawn for the padded batch ``[B, S, C]`` and
    the real rows' part taken: the same draws, and the same mask for each token, as without packing.
    """

    def __init__(self, p, rng, *, packing=None):
        self.p, self.rng, self.packing = p, rng, packing

    def forward(self, x):
        xp = get_array_module(x)
        shape = x.shape if self.packing is None else self.packing.padded_shape(x)  # [N, C] -> (B, S, C)
        if cuda_enabled(xp, x.dtype):  # made on the device from one seed drawn here (fast/cuda/eager.py)
            self.kept = cuda_forms().dropout_keep(x, shape, self.p, self.rng)
        else:
            self.kept = xp.asarray(self.rng.random(shape, dtype=np.float32) >= self.p)
        if self.packing is not None:
            self.kept = self.packing.take(self.kept)  # [B, S, C] -> [N, C]
        y = x * self.kept
        y *= x.dtype.type(dropout_scale(self.p))
        return y

    def backward(self, gy):
        gx = gy * self.kept
        gx *= gy.dtype.type(dropout_scale(self.p))
        return gx


def dropout_scale(p):
    """What inverted dropout multiplies the kept values by: 1 / (1 - p), and 0 when p = 1 (all dropped, as torch)."""
    if not 0.0 <= p <= 1.0:
        raise InputError(f"dropout probability must be in [0, 1], got {p}")
    return 0.0 if p == 1.0 else 1.0 / (1.0 - p)


# -- lowercase wrappers ---------------------------------------------------------------------------------------
def linear(x, weight, bias=None, *, in_out=False):
    op = Linear(in_out=in_out)
    return op(x, weight) if bias is None else op(x, weight, bias)


def linears(x, layers):
    """``tuple(layer(x) for layer in layers)`` for linear layers (``.weight`` ``[out, in]``, ``.bias`` or None), as
    one op (``Linears``)."""
    params = [p for layer in layers for p in (layer.weight, layer.bias) if p is not None]
    return Linears([layer.bias is not None for layer in layers])(x, *params)


def layer_norm(x, gamma, beta, eps=1e-5):
    return LayerNorm(eps)(x, gamma, beta)


def masked_softmax(scores, keep=None, scale=1.0):
    return MaskedSoftmax(keep, scale)(scores)


def softmax(x):
    return MaskedSoftmax()(x)


def embedding(ids, weight):
    return Embedding(ids)(weight)


def dropout(x, p, rng, *, training, packing=None):
    """Dropout in training mode with ``p > 0``; the identity otherwise (no copy)."""
    if not training or p == 0:
        return x
    return Dropout(p, rng, packing=packing)(x)
