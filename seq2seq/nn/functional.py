"""Fused neural-network ops with hand-derived backward passes.

Each of these could be composed from the primitives in ``ops.py``, and the gradients would come for free. They
are fused instead because they run on the largest arrays in the model, where every extra pass over memory costs
time, and because their derivatives are worth reading written out: linear, layer norm, masked softmax,
softmax-cross-entropy, embedding lookup and dropout.

Shapes use: B batch, T query length, S key length, C channels (hidden size), V vocabulary, N = B * T rows.

In-place arithmetic appears only on arrays the op has just allocated itself: never on an input, and never on an
array saved for backward after it has been saved.
"""
import numpy as np

from ..core.autograd import Function
from ..core.backend import get_array_module, memory_order
from ..core.errors import InputError
from ..fast.cpu.parallel import as_rows, blas_on_calling_threads, for_each_block, row_dots, scratch

_FEW_ROWS = 64  # up to this many rows, Linear multiplies in the order that is faster for thin inputs


class Linear(Function):
    """y = x W^T + b, with W stored ``[out, in]`` as ``torch.nn.Linear`` stores it.

    ``in_out=True`` takes W stored ``[in, out]`` instead (y = x W + b): GPT-2's ``Conv1D`` layout. Why GPT-2
    differs: its weights come from OpenAI's TensorFlow code, which multiplies on the right; transformers kept the
    layout so the original checkpoints load unchanged.
    """

    def __init__(self, *, in_out=False):
        self.in_out = in_out

    def forward(self, x, weight, bias=None):
        self.x, self.weight = x, weight
        w = weight if self.in_out else weight.T  # [in, out]
        x2 = x.reshape(-1, x.shape[-1])  # [..., in] -> [N, in]: one large GEMM instead of a loop over batches
        if x2.shape[0] <= _FEW_ROWS and weight.flags.c_contiguous:
            # Why: for the few rows of a decode step, OpenBLAS computes (x W)^T = W^T x^T markedly faster than x W
            # (one bert-base layer, 4 rows: 1.3 ms instead of 2.2 ms); the transpose of the result is only a view.
            y = (w.T @ x2.T).T  # [out, in] @ [in, N] -> [out, N] -> [N, out]
        else:
            y = x2 @ w  # [N, in] @ [in, out] -> [N, out]
        if bias is not None and y.flags.c_contiguous:  # in blocks of rows on every core (parallel.py)
            xp = get_array_module(y)
            for_each_block(lambda rows: xp.add(y[rows], bias, out=y[rows]), *y.shape, xp=xp)
        elif bias is not None:  # the transposed result of a few rows: small
            y += bias
        return y.reshape(*x.shape[:-1], w.shape[1])  # [N, out] -> [..., out]

    def backward(self, gy):
        xp = get_array_module(gy)
        gy2 = gy.reshape(-1, gy.shape[-1])  # [..., out] -> [N, out]
        w = self.weight if self.in_out else self.weight.T  # [in, out]
        gx = gw = gb = None
        if self.needs_input_grad[0]:
            gx = (gy2 @ w.T).reshape(self.x.shape)  # [N, out] @ [out, in] -> [..., in]
        if self.needs_input_grad[1]:
            x2 = self.x.reshape(-1, self.x.shape[-1])
            if memory_order(self.weight) == "F":
                # Why: the gradient is made in the weight's memory order (a column-major tied LM-head table, see
                # layers.lm_head_layout), so that the optimizer's blockwise update reads it as it is, not a copy.
                # Written through its transpose, a C-ordered view, so gw owns its memory (no view to copy later).
                gw = xp.empty(self.weight.shape, dtype=gy2.dtype, order="F")
                if self.in_out:
                    xp.matmul(gy2.T, x2, out=gw.T)  # [out, N] @ [N, in] -> [out, in]
                else:
                    xp.matmul(x2.T, gy2, out=gw.T)  # [in, N] @ [N, out] -> [in, out]
            else:
                gw = x2.T @ gy2 if self.in_out else gy2.T @ x2  # [in, out] or [out, in], as stored
        if len(self.needs_input_grad) > 2 and self.needs_input_grad[2]:
            # the sum over rows as a matrix-vector product: BLAS runs it on every core, 2-5x faster than .sum(0)
            gb = gy2.T @ xp.ones(gy2.shape[0], dtype=gy2.dtype)  # [out, N] @ [N] -> [out]
        return gx, gw, gb


class LayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta over the last axis (biased variance, as torch).

    Both passes run on blocks of rows (``parallel.for_each_block``): each row is normalised on its own, so the
    blocks are independent; the gradients of gamma and beta are sums over rows, added up block by block in order.
    Why the sums along rows are ``vecdot``s (``parallel.row_dots``) and the sums over rows ``ones @ rows``: NumPy's
    reduction along a short last axis pays a start-up per row, and the rows here are only C values long; ``vecdot``
    takes the mean of a [341, 384] block in 9 us instead of 29 (``mean(axis=-1)``; one Xeon core), and the variance
    without writing the squares out. (BLAS's gemv, ``rows @ ones``, is faster still, but rounds a row differently
    by where it falls in the block: a row's result must not depend on the block size. The column sums are per-block
    partial sums anyway.)
    """

    def __init__(self, eps):
        self.eps = eps

    def forward(self, x, gamma, beta):
        xp = get_array_module(x)
        x = xp.ascontiguousarray(x)
        y = xp.empty(x.shape, dtype=x.dtype)
        x2, y2 = as_rows(x), as_rows(y)  # [..., C] -> [N, C] views
        c = x2.shape[1]
        mean = xp.empty((x2.shape[0], 1), dtype=x.dtype)  # [N, 1]
        rstd = xp.empty((x2.shape[0], 1), dtype=x.dtype)  # [N, 1]
        averaging = xp.full(c, 1.0 / c, dtype=x.dtype)  # [C]: row @ averaging = the row's mean

        def block(rows):
            xb, yb, mb, rb = x2[rows], y2[rows], mean[rows], rstd[rows]
            mb[:, 0] = row_dots(xp, xb, averaging)  # the rows' means, [n]
            xp.subtract(xb, mb, out=yb)  # centred
            rb[:, 0] = row_dots(xp, yb, yb)  # sum of squares, [n]
            rb *= 1.0 / c  # biased variance
            rb += self.eps
            xp.sqrt(rb, out=rb)
            xp.divide(1.0, rb, out=rb)  # 1 / sqrt(var + eps)
            yb *= rb  # normalised: xhat
            yb *= gamma
            yb += beta

        with blas_on_calling_threads(xp):
            for_each_block(block, *x2.shape, xp=xp)
        # Why keep x, mean and rstd rather than xhat: the graph holds x anyway, so xhat would be one more array of
        # the activations' size per LayerNorm; backward rebuilds it in one pass.
        self.x, self.mean, self.rstd, self.gamma = x, mean, rstd, gamma
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        need_x, need_gamma, need_beta = self.needs_input_grad
        gy2, x2 = as_rows(xp.ascontiguousarray(gy)), as_rows(self.x)  # [N, C]
        c = x2.shape[1]
        gx = xp.empty(self.x.shape, dtype=gy.dtype) if need_x else None
        gx2 = None if gx is None else as_rows(gx)
        averaging = xp.full(c, 1.0 / c, dtype=gy.dtype)  # [C]
        ones = xp.ones(x2.shape[0], dtype=gy.dtype)  # [N]: ones[rows] @ rows = the column sums

        def block(rows):
            gyb, mean, rstd = gy2[rows], self.mean[rows], self.rstd[rows]
            xhat, g = scratch(xp, gyb.shape, gyb.dtype, name="layer_norm", count=2)
            xp.subtract(x2[rows], mean, out=xhat)
            xhat *= rstd
            gamma_part = ones[rows] @ xp.multiply(gyb, xhat, out=g) if need_gamma else None  # [n] @ [n, C]
            beta_part = ones[rows] @ gyb if need_beta else None  # [C]
            if need_x:
                # With g = gy * gamma, the gradient through the normalisation has three terms (llm.c's layout):
                # term 1: g itself; term 2: minus its mean (the mean was subtracted);
                # term 3: minus xhat times mean(g * xhat) (the variance depends on x too); all scaled by rstd.
                gxb = gx2[rows]
                xp.multiply(gyb, self.gamma, out=g)
                g_mean = row_dots(xp, g, averaging)[:, None]  # [n, 1]
                gx_mean = row_dots(xp, g, xhat)[:, None]  # [n, 1]
                gx_mean *= 1.0 / c
                xp.subtract(g, g_mean, out=gxb)
                xhat *= gx_mean
                gxb -= xhat
                gxb *= rstd
            return gamma_part, beta_part

        with blas_on_calling_threads(xp):
            parts = for_each_block(block, *gy2.shape, xp=xp)
        ggamma = _sum_parts([gamma for gamma, _ in parts]) if need_gamma else None
        gbeta = _sum_parts([beta for _, beta in parts]) if need_beta else None
        return gx, ggamma, gbeta


def _sum_parts(parts):
    """Per-block partial sums added up in block order (a fixed order: the same result on any number of threads)."""
    total = parts[0].copy()
    for part in parts[1:]:
        total += part
    return total


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


def check_label_smoothing(eps, *, name="label_smoothing"):
    """Refuse a smoothing weight outside [0, 1] (as torch does), naming the argument that carried it."""
    if not 0.0 <= eps <= 1.0:
        raise InputError(f"{name} must be in [0, 1], got {eps}")


class CrossEntropy(Function):
    """Mean over the non-ignored rows of -log softmax(logits)[label]; rows labelled ``ignore_index`` are skipped.

    logits ``[N, V]`` (any float dtype; computed in float32 at least), labels ``[N]`` integers. When every row is
    ignored the mean is 0/0 = NaN, as in torch. The ``[N, V]`` work runs on blocks of rows (one row = one
    position's softmax over the vocabulary).

    ``label_smoothing`` eps aims each row at (1 - eps) on its label plus eps spread evenly over the vocabulary, as
    ``torch.nn.functional.cross_entropy(label_smoothing=eps)`` and transformers' Trainer
    (``label_smoothing_factor``): row loss (1 - eps) * -log p_label + eps * mean_j(-log p_j).
    """

    def __init__(self, labels, ignore_index=-100, *, label_smoothing=0.0):
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
        m = xp.empty((n, 1), dtype=x.dtype)  # row maxima, [N, 1]
        # log-sum-exp minus the max, [N, 1]; m is kept apart: m + log_sum rounded at |m| = 1000 loses 6e-5
        log_sum = xp.empty((n, 1), dtype=x.dtype)
        mean_shifted = xp.empty((n, 1), dtype=x.dtype) if self.eps else None  # mean_j(x_j) - max, [N, 1]

        def block(rows):
            xb = x[rows]
            xp.max(xb, axis=-1, keepdims=True, out=m[rows])
            (shifted,) = scratch(xp, xb.shape, xb.dtype, name="cross_entropy")
            xp.subtract(xb, m[rows], out=shifted)
            if mean_shifted is not None:
                xp.mean(shifted, axis=-1, keepdims=True, out=mean_shifted[rows])
            xp.exp(shifted, out=shifted)
            xp.log(shifted.sum(axis=-1, keepdims=True), out=log_sum[rows])

        for_each_block(block, n, v, xp=xp)
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

    def backward(self, gy):
        xp = get_array_module(gy)
        n, v = self.x.shape
        # max(count, 1): with every row ignored the gradient is zeros, as torch's, not 0 * inf = NaN
        weight = (self.valid * (gy / xp.maximum(self.count, 1)))[:, None].astype(self.x.dtype)  # [N, 1]
        p = xp.empty(self.x.shape, dtype=self.x.dtype)  # the gradient, [N, V]

        def block(rows):
            pb = p[rows]
            xp.subtract(self.x[rows], self.m[rows], out=pb)  # softmax, recomputed instead of kept: it is [N, V]
            pb -= self.log_sum[rows]
            xp.exp(pb, out=pb)
            # d(-log p_label)/dx = p - onehot(label); with smoothing p - (1 - eps) onehot(label) - eps / V
            pb[xp.arange(pb.shape[0]), self.safe[rows]] -= 1 - self.eps
            if self.eps:
                pb -= self.eps / v
            pb *= weight[rows]

        for_each_block(block, n, v, xp=xp)
        return p.astype(self.dtype, copy=False)  # float16 logits get a float16 gradient


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

    The mask is kept as booleans for backward: a quarter of the memory of a float mask.
    """

    def __init__(self, p, rng):
        self.p, self.rng = p, rng

    def forward(self, x):
        xp = get_array_module(x)
        self.kept = xp.asarray(self.rng.random(x.shape, dtype=np.float32) >= self.p)
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


def layer_norm(x, gamma, beta, eps=1e-5):
    return LayerNorm(eps)(x, gamma, beta)


def masked_softmax(scores, keep=None, scale=1.0):
    return MaskedSoftmax(keep, scale)(scores)


def softmax(x):
    return MaskedSoftmax()(x)


def cross_entropy(logits, labels, ignore_index=-100, *, label_smoothing=0.0):
    return CrossEntropy(labels, ignore_index, label_smoothing=label_smoothing)(logits)


def embedding(ids, weight):
    return Embedding(ids)(weight)


def dropout(x, p, rng, *, training):
    """Dropout in training mode with ``p > 0``; the identity otherwise (no copy)."""
    if not training or p == 0:
        return x
    return Dropout(p, rng)(x)
