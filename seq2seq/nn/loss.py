"""The loss: softmax cross-entropy, and the LM head's projection fused with it.

    logits = h @ W^T + b                          # [..., C] -> [..., V], functional.py's Linear
    loss   = cross_entropy(logits, labels)        # [N, V] -> (), CrossEntropy below

``CrossEntropy`` is the loss on its own. ``LinearCrossEntropy`` is the projection and the loss as one op, which the
model uses whenever it has labels. Why one op for two that exist on their own: memory in backward. Composed, the
loss's backward hands the projection a gradient as large as the logits, ``[N, V]``: 60 MB for a batch of 16 x 32
target tokens and BERT's 30,522-token vocabulary. It appears at the start of backward, beside every activation
the forward pass saved, which is when a training step needs the most memory. Fused, the backward's fast CPU form
(``fast/cpu/cross_entropy.py``, ``projected_grads``) makes that gradient a slice of the vocabulary at a time and
multiplies each slice into the gradients of the input, the weight and the bias at once, so the ``[N, V]`` gradient
never exists whole.

The plain form of the fused op is the two ops, forward and backward, composed: what CuPy (and
``fast_cpu.disabled()``) runs, and what the fused form is tested against. The forward pass is the same in both.

Two outputs: the logits (the model returns them) and the loss. A gradient usually reaches only the loss, but a
caller may build a loss of their own from the logits as well; both are taken. ``fills_missing_grads`` is off: the
logits' gradient comes as None when nothing used them, rather than as an ``[..., V]`` array of zeros.

Only a weight stored ``[V, C]`` (``torch.nn.Linear``'s layout, which every LM head here has: the tied word
embeddings) is taken; GPT-2's ``Conv1D`` layout is not an LM head's.
"""
import numpy as np

from ..core.autograd import Function
from ..core.backend import get_array_module
from ..core.errors import InputError
from ..core.inputs import IGNORE_INDEX
from ..fast import cpu as fast_cpu
from ..fast import cuda_enabled, cuda_forms
from ..fast.cpu import cross_entropy as fast_cross_entropy
from .functional import Linear


def check_label_smoothing(eps, *, name="label_smoothing"):
    """Refuse a smoothing weight outside [0, 1] (as torch does), naming the argument that carried it."""
    if not 0.0 <= eps <= 1.0:
        raise InputError(f"{name} must be in [0, 1], got {eps}")


class CrossEntropy(Function):
    """Mean over the non-ignored rows of -log softmax(logits)[label]; rows labelled ``ignore_index`` are skipped.

    logits ``[N, V]`` (any float dtype; computed in float32 at least), labels ``[N]`` integers. When every row is
    ignored the mean is 0/0 = NaN, as in torch. The fused CPU form (``fast/cpu/cross_entropy.py``) runs the
    ``[N, V]`` work on blocks of rows (one row = one position's softmax over the vocabulary).

    ``label_smoothing`` eps aims each row at (1 - eps) on its label plus eps spread evenly over the vocabulary, as
    ``torch.nn.functional.cross_entropy(label_smoothing=eps)`` and transformers' Trainer
    (``label_smoothing_factor``): row loss (1 - eps) * -log p_label + eps * mean_j(-log p_j).
    """

    def __init__(self, labels, ignore_index=IGNORE_INDEX, *, label_smoothing=0.0):
        check_label_smoothing(label_smoothing)
        self.labels, self.ignore_index, self.eps = labels, ignore_index, float(label_smoothing)

    def forward(self, logits):
        xp = get_array_module(logits)
        n, v = logits.shape
        labels = self.labels.reshape(-1)
        valid = labels != self.ignore_index
        bad = valid & ((labels < 0) | (labels >= v))
        if bool(bad.any()):
            raise InputError(f"label {int(labels[bad][0])} is outside the vocabulary [0, {v}) "
                             f"(use {self.ignore_index} to ignore a position)")
        x = xp.ascontiguousarray(logits.astype(xp.promote_types(logits.dtype, xp.float32), copy=False))
        # m: the row maxima; log_sum: log sum_j exp(x_j - m), kept apart from m (m + log_sum rounded at
        # |m| = 1000 loses 6e-5); mean_shifted: mean_j(x_j) - m, for smoothing. Each [N, 1].
        if fast_cpu.enabled(xp):
            m, log_sum, mean_shifted = fast_cross_entropy.softmax_statistics(x, with_mean=bool(self.eps))
        elif cuda_enabled(xp, x.dtype):  # one kernel over the logits (fast/cuda/eager.py)
            m, log_sum, mean_shifted = cuda_forms().softmax_statistics(x, with_mean=bool(self.eps))
        else:
            m = x.max(axis=-1, keepdims=True)  # [N, V] -> [N, 1]
            shifted = x - m  # the largest exponent becomes 0: no overflow
            log_sum = xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))
            mean_shifted = shifted.mean(axis=-1, keepdims=True) if self.eps else None
        safe = xp.where(valid, labels, 0)
        picked = x[xp.arange(n), safe] - m[:, 0]  # the label's logit minus the max, [N]
        self.x, self.m, self.log_sum, self.safe, self.valid, self.dtype = x, m, log_sum, safe, valid, logits.dtype
        self.count = valid.sum()
        nll = log_sum[:, 0] - picked  # -log p_label, [N]
        if self.eps:  # mean_j(-log p_j) = log-sum-exp - mean_j(x_j), both taken relative to the max
            nll = (1 - self.eps) * nll + self.eps * (log_sum[:, 0] - mean_shifted[:, 0])
        nll = nll * valid
        with np.errstate(invalid="ignore", divide="ignore"):
            return (nll.sum() / self.count).astype(logits.dtype)

    def row_weights(self, gy):
        """Each row's share of the loss's gradient ``gy``, ``[N, 1]``: gy / count for the rows counted, 0 for the
        ignored ones."""
        xp = get_array_module(gy)
        # max(count, 1): with every row ignored the gradient is zeros, as torch's, not 0 * inf = NaN
        return (self.valid * (gy / xp.maximum(self.count, 1)))[:, None].astype(self.x.dtype)  # [N] -> [N, 1]

    def backward(self, gy):
        xp = get_array_module(gy)
        n, v = self.x.shape
        weight = self.row_weights(gy)  # [N, 1]
        # d(-log p_label)/dx = p - onehot(label); with smoothing p - (1 - eps) onehot(label) - eps / V
        if fast_cpu.enabled(xp):
            p = fast_cross_entropy.cross_entropy_grad(self.x, self.m, self.log_sum, self.safe, weight,
                                                      smoothing=self.eps)
        elif cuda_enabled(xp, self.x.dtype):
            p = cuda_forms().cross_entropy_grad(self.x, self.m, self.log_sum, self.safe, weight, smoothing=self.eps)
        else:
            p = xp.exp(self.x - self.m - self.log_sum)  # softmax, recomputed instead of kept: it is [N, V]
            p[xp.arange(n), self.safe] -= 1 - self.eps
            if self.eps:
                p -= self.eps / v
            p *= weight
        return p.astype(self.dtype, copy=False)  # float16 logits get a float16 gradient


class LinearCrossEntropy(Function):
    """``(h W^T + b, cross_entropy(h W^T + b, labels))`` for ``h`` ``[..., C]``, ``W`` ``[V, C]``, ``b`` ``[V]`` or
    absent, ``labels`` with one entry per row of ``h`` (``ignore_index`` and ``label_smoothing`` as CrossEntropy's).
    """

    fills_missing_grads = False  # see the module's docstring

    def __init__(self, labels, ignore_index=IGNORE_INDEX, *, label_smoothing=0.0):
        self.projection = Linear()
        self.loss = CrossEntropy(labels, ignore_index, label_smoothing=label_smoothing)

    def forward(self, h, weight, bias=None):
        logits = self.projection.forward(h, weight, bias)  # [..., C] -> [..., V]
        loss = self.loss.forward(logits.reshape(-1, logits.shape[-1]))  # [..., V] -> [N, V] -> ()
        return logits, loss

    def backward(self, g_logits, g_loss):
        xp = get_array_module(g_logits if g_loss is None else g_loss)
        shape = self.projection.x.shape[:-1] + (self.loss.x.shape[-1],)  # the logits', [..., V]
        self.projection.needs_input_grad = self.needs_input_grad
        if g_loss is None:  # only the logits were used: the projection's own backward
            return self.projection.backward(g_logits)
        g2 = None if g_logits is None else g_logits.reshape(-1, shape[-1])  # [..., V] -> [N, V]
        if fast_cpu.enabled(xp) and self.loss.x.dtype == self.loss.dtype:  # float16: the plain form (wider x)
            ce, h = self.loss, self.projection.x
            needs = tuple(self.needs_input_grad) + (False,) * (3 - len(self.needs_input_grad))  # (h, weight, bias)
            gh2, gw, gb = fast_cross_entropy.projected_grads(
                ce.x, ce.m, ce.log_sum, ce.safe, ce.row_weights(g_loss), smoothing=ce.eps, g_logits=g2,
                h2=h.reshape(-1, h.shape[-1]), w=self.projection.weight, needs=needs)
            return (None if gh2 is None else gh2.reshape(h.shape)), gw, gb  # [N, C] -> [..., C]
        g = self.loss.backward(g_loss)  # [N, V], an array of its own
        if g2 is not None:
            g += g2
        return self.projection.backward(g.reshape(shape))  # [N, V] -> [..., V]


def linear_cross_entropy(h, weight, bias, labels, ignore_index=IGNORE_INDEX, *, label_smoothing=0.0):
    """``(logits, loss)`` as Tensors: ``linear(h, weight, bias)`` and ``cross_entropy`` of those logits (flattened
    to rows) against ``labels``, as one op (see the module's docstring)."""
    op = LinearCrossEntropy(labels, ignore_index, label_smoothing=label_smoothing)
    return op(h, weight) if bias is None else op(h, weight, bias)


def cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, *, label_smoothing=0.0):
    return CrossEntropy(labels, ignore_index, label_smoothing=label_smoothing)(logits)
