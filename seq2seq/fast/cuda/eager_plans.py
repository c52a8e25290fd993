"""How the eager path's kernels are launched (``eager.py``: training, and a CuPy model's encoder): the activations'
backward, LayerNorm with its statistics and its backward, attention's masked softmax and its backward, the
cross-entropy's statistics and gradient, AdamW, dropout's keep mask.

The same conventions as ``plans.py``, whose helpers this file uses: each function checks the arrays in hand, makes
contiguous the ones a kernel reads without strides, allocates the outputs and returns a ``plans.Launch``; nothing
runs until ``kernels.run`` (or, in the tests, the CPU emulation) launches it.
"""
import numpy as np

from ...core.backend import flat_view, get_array_module, memory_order
from .plans import BA_MAX_BLOCKS, BA_THREADS, LN_THREADS, NULL, Launch, _check, _contiguous, _or_null, _rows, \
    _shared, grid_stride_blocks, suffix

SM_THREADS = 256  # softmax.cu
OP_THREADS, OP_MAX_BLOCKS = 256, 65535  # optim.cu
CE_THREADS = 256  # cross_entropy.cu
DR_THREADS, DR_MAX_BLOCKS = 256, 65535  # dropout.cu


# ---- bias_activation.cu, layer_norm.cu ----------------------------------------------------------------------------

def activation_backward(gy, v, act, *, dtype=None):
    """``gy * act'(v)`` elementwise (``bias_activation.cu``'s backward kernels), v the activation's input. Output:
    gx."""
    gy, v = _contiguous(gy, v)
    _check(gy.shape == v.shape, f"activation_backward: gy {tuple(gy.shape)} and v {tuple(v.shape)} differ")
    gx = get_array_module(gy).empty_like(gy)
    blocks = grid_stride_blocks(gy.size, BA_THREADS, BA_MAX_BLOCKS)
    return Launch("bias_activation", f"{act}_backward_{suffix(dtype or gy.dtype)}", (blocks,), (BA_THREADS,),
                  (gy, v, gx, np.int64(gy.size)), gx)


def layer_norm(x, gamma, beta, eps, *, dtype=None):
    """``LayerNorm(x) * gamma + beta`` over the last axis, with each row's statistics for backward. Outputs:
    (y, mean, rstd), mean and rstd float32 ``[rows]``."""
    x, gamma, beta = _contiguous(x, gamma, beta)
    n_rows, n_cols = _rows(x)
    xp = get_array_module(x)
    y, mean, rstd = xp.empty_like(x), xp.empty(n_rows, dtype=np.float32), xp.empty(n_rows, dtype=np.float32)
    return Launch("layer_norm", f"layer_norm_{suffix(dtype or x.dtype)}", (n_rows,), (LN_THREADS,),
                  (x, gamma, beta, y, mean, rstd, np.int32(n_rows), np.int32(n_cols), np.float32(eps)),
                  (y, mean, rstd), shared_mem=_shared(4 * n_cols, f"layer norm of {n_cols} columns"))


def layer_norm_backward(gy, kept, mean, rstd, gamma, beta, *, from_output, need_x=True, dtype=None):
    """A LayerNorm's backward over ``[..., C]`` rows: xhat from forward's input (``kept`` = x, ``beta`` may be
    None) or, ``from_output``, from its output (``kept`` = y). Outputs: (gx or None without ``need_x``, gy * xhat
    in float32, ``[rows, C]``: its column sums are gamma's gradient)."""
    gy, kept, mean, rstd, gamma, beta = _contiguous(gy, kept, mean, rstd, gamma, beta)
    _check(gy.shape == kept.shape, f"layer_norm_backward: gy {tuple(gy.shape)} and the kept rows "
           f"{tuple(kept.shape)} differ")
    _check(beta is not None or not from_output, "layer_norm_backward: xhat from the output needs beta")
    n_rows, n_cols = _rows(gy)
    xp = get_array_module(gy)
    gx = xp.empty_like(gy) if need_x else None
    gy_xhat = xp.empty((n_rows, n_cols), dtype=np.float32)
    return Launch("layer_norm", f"layer_norm_backward_{suffix(dtype or gy.dtype)}", (n_rows,), (LN_THREADS,),
                  (gy, kept, mean, rstd, gamma, _or_null(beta), np.int32(bool(from_output)), _or_null(gx), gy_xhat,
                   np.int32(n_rows), np.int32(n_cols)), (gx, gy_xhat))


# ---- softmax.cu -----------------------------------------------------------------------------------------------

def _keep_strides(keep, shape):
    """(keep as given or NULL, its four strides in elements over ``shape`` [B, nh, T, S], 0 where broadcast)."""
    if keep is None:
        return NULL, (np.int64(0),) * 4
    _check(keep.dtype == np.bool_ and keep.ndim <= 4, f"softmax: keep must be a bool mask broadcastable to "
           f"{tuple(shape)}, got {keep.dtype} {tuple(keep.shape)}")
    keep = get_array_module(keep).broadcast_to(keep, shape)  # a view: a broadcast axis has stride 0
    return keep, tuple(np.int64(stride // keep.itemsize) for stride in keep.strides)


def masked_softmax(scores, keep=None, *, dtype=None):
    """``softmax(where(keep, scores, LOWEST))`` over the last axis of scores ``[B, nh, T, S]``; keep a bool mask
    broadcastable to them, or None. Output: the probabilities, like scores."""
    (scores,) = _contiguous(scores)
    _check(scores.ndim == 4, f"masked_softmax: scores must be [B, nh, T, S], got {tuple(scores.shape)}")
    b, nh, t, s = scores.shape
    keep, strides = _keep_strides(keep, scores.shape)
    probs = get_array_module(scores).empty_like(scores)
    return Launch("softmax", f"masked_softmax_{suffix(dtype or scores.dtype)}", (b * nh * t,), (SM_THREADS,),
                  (scores, keep, *strides, probs, np.int32(nh), np.int32(t), np.int32(s)), probs,
                  shared_mem=_shared(4 * s, f"a softmax over {s} keys"))


def softmax_backward(gp, probs, keep=None, *, dtype=None):
    """``probs * (gp - sum(gp * probs))`` over the last axis, 0 where keep is False: the scores' gradient from
    the probabilities' ``gp``, all ``[B, nh, T, S]``. Output: gs."""
    gp, probs = _contiguous(gp, probs)
    _check(gp.ndim == 4 and gp.shape == probs.shape, f"softmax_backward: gp {tuple(gp.shape)} and probs "
           f"{tuple(probs.shape)} must be one [B, nh, T, S] shape")
    b, nh, t, s = gp.shape
    keep, strides = _keep_strides(keep, gp.shape)
    gs = get_array_module(gp).empty_like(gp)
    return Launch("softmax", f"softmax_backward_{suffix(dtype or gp.dtype)}", (b * nh * t,), (SM_THREADS,),
                  (gp, probs, keep, *strides, gs, np.int32(nh), np.int32(t), np.int32(s)), gs)


# ---- cross_entropy.cu ----------------------------------------------------------------------------------------

def softmax_statistics(x, *, with_mean, dtype=None):
    """Each row's float32 maximum m, log sum_j exp(x_j - m) and (``with_mean``) mean_j(x_j) - m, of logits ``x``
    ``[N, V]``. Outputs: (m, log_sum, mean_shifted or None), each ``[N]``."""
    (x,) = _contiguous(x)
    _check(x.ndim == 2, f"softmax_statistics: logits must be [N, V], got {tuple(x.shape)}")
    n, v = x.shape
    xp = get_array_module(x)
    m, log_sum = xp.empty(n, dtype=np.float32), xp.empty(n, dtype=np.float32)
    mean_shifted = xp.empty(n, dtype=np.float32) if with_mean else None
    return Launch("cross_entropy", f"softmax_statistics_{suffix(dtype or x.dtype)}", (n,), (CE_THREADS,),
                  (x, m, log_sum, _or_null(mean_shifted), np.int32(n), np.int32(v)), (m, log_sum, mean_shifted))


def cross_entropy_grad(x, m, log_sum, labels, weight, *, smoothing, dtype=None):
    """The loss's gradient ``[N, V]``: (softmax(x) - target) * weight, the target (1 - smoothing) on each row's label
    plus smoothing / V everywhere; m, log_sum, weight float32 ``[N]`` (or ``[N, 1]``), labels ``[N]``. Output: g."""
    xp = get_array_module(x)
    m, log_sum, weight = (xp.asarray(a, dtype=np.float32).reshape(-1) for a in (m, log_sum, weight))  # [N]
    x, m, log_sum, weight = _contiguous(x, m, log_sum, weight)
    labels = xp.ascontiguousarray(xp.asarray(labels, dtype=np.int64).reshape(-1))
    n, v = x.shape
    _check(m.shape == log_sum.shape == weight.shape == labels.shape == (n,), "cross_entropy_grad: m, log_sum, "
           f"labels and weight must have one entry per row of the logits {tuple(x.shape)}")
    g = xp.empty_like(x)
    return Launch("cross_entropy", f"cross_entropy_grad_{suffix(dtype or x.dtype)}", (n,), (CE_THREADS,),
                  (x, m, log_sum, labels, weight, np.float32(smoothing), g, np.int32(n), np.int32(v)), g)


# ---- optim.cu -----------------------------------------------------------------------------------------------------

def adamw(p, g, m, v, *, lr, beta1, beta2, eps, weight_decay, step_size, bias_correction2, dtype=None):
    """torch.optim.AdamW's step on parameter ``p`` and its moments ``m``, ``v`` (updated in place) given gradient
    ``g``, all of one shape; p, m and v contiguous in one memory order (as ``zeros_like`` makes the moments), g
    copied into it if it lies otherwise. Outputs: (p, m, v)."""
    _check(p.shape == g.shape == m.shape == v.shape, f"adamw: p {tuple(p.shape)}, g {tuple(g.shape)}, m "
           f"{tuple(m.shape)} and v {tuple(v.shape)} must be one shape")
    order = memory_order(p)
    fp, fm, fv = (flat_view(a, order) for a in (p, m, v))
    _check(fp is not None and fm is not None and fv is not None, "adamw: the parameter and its moments must be "
           "contiguous in one memory order, updated in place")
    fg = flat_view(g, order)
    if fg is None:
        fg = get_array_module(g).asarray(g, order=order).reshape(-1, order=order)
    blocks = grid_stride_blocks(p.size, OP_THREADS, OP_MAX_BLOCKS)
    return Launch("optim", f"adamw_{suffix(dtype or p.dtype)}", (blocks,), (OP_THREADS,),
                  (fp, fg, fm, fv, np.int64(p.size), np.float32(lr), np.float32(beta1), np.float32(beta2),
                   np.float32(eps), np.float32(weight_decay), np.float32(step_size),
                   np.float32(bias_correction2 ** 0.5)), (p, m, v))


# ---- dropout.cu ---------------------------------------------------------------------------------------------------

def dropout_mask(xp, shape, p, seed):
    """Dropout's keep mask ``shape`` (bool, of array module ``xp``): each element kept with probability 1 - p, a
    function of ``seed`` (a 64-bit integer) and its index alone. Output: the mask."""
    _check(0.0 <= p <= 1.0, f"dropout probability must be in [0, 1], got {p}")
    keep = xp.empty(shape, dtype=np.bool_)
    n = keep.size
    blocks = grid_stride_blocks(n, DR_THREADS, DR_MAX_BLOCKS)
    return Launch("dropout", "dropout_mask", (blocks,), (DR_THREADS,),
                  (np.uint64(seed), np.int64(n), np.int64(round(p * 2 ** 32)), keep), keep)
