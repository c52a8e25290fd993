"""The fused CPU form of ``nn.functional.Linear``: y = x W^T + b with OpenBLAS's preferences taken into account.

The plain form is ``x2 @ w + b`` forward and three products backward. What this form changes, and why:

- **Up to ``thin.MAX_ROWS`` rows go to ``thin.py``** when the weight, read as ``[in, out]``, is row-major
  (Linear's column-major weights, GPT-2's, the tied LM head's): column chunks of it on every core. A row-major
  ``[out, in]`` weight (one moved from a GPU, say) with up to ``FEW_ROWS`` rows multiplies the other way round,
  (x W)^T = W^T x^T, which OpenBLAS runs faster than x W for few rows (measured: benchmarks/RESULTS.md); the
  transpose of the result is a view.
- **The bias is added in blocks of rows** on every core (``parallel.for_each_block``).
- **The weight's gradient comes in the weight's memory order.** A column-major tied LM-head table (see
  ``layers.lm_head_layout``) gets a column-major gradient, so the optimizer's blockwise update (``optim.py`` here)
  reads it as it lies instead of copying it first.
- **The bias's gradient, a sum over rows, is a matrix-vector product** ``gy^T @ ones``: BLAS runs it on every
  core, where ``gy.sum(axis=0)`` runs on one.

Arrays come as rows: ``x2`` ``[N, in]``, ``gy2`` ``[N, out]``; ``weight`` as stored (``[out, in]``, or ``[in,
out]`` with ``in_out=True``, GPT-2's Conv1D layout).
"""
import numpy as np

from ...core.backend import memory_order
from .parallel import for_each_block
from .thin import MAX_ROWS, is_thin_layout, thin_products

FEW_ROWS = 64  # up to this many rows, forward multiplies in the order that is faster for thin inputs


def linear_forward(x2, weight, bias, *, in_out):
    """``x2 @ w + bias`` as ``[N, out]`` (C-ordered, or a transposed view for at most ``FEW_ROWS`` rows)."""
    w = weight if in_out else weight.T  # [in, out]
    if x2.shape[0] <= MAX_ROWS and is_thin_layout(w):
        return thin_products(x2, [(w, bias)])[0]  # [N, in] @ [in, out] -> [N, out], in chunks on every core
    if x2.shape[0] <= FEW_ROWS and weight.flags.c_contiguous:
        y = (w.T @ x2.T).T  # [out, in] @ [in, N] -> [out, N] -> [N, out], a view
    else:
        y = x2 @ w  # [N, in] @ [in, out] -> [N, out]
    if bias is not None and y.flags.c_contiguous:  # in blocks of rows on every core (parallel.py)
        for_each_block(lambda rows: np.add(y[rows], bias, out=y[rows]), *y.shape)
    elif bias is not None:  # the transposed result of a few rows: small
        y += bias
    return y


def linears_forward(x2, pairs):
    """``[linear_forward(x2, w, b, in_out=False) for w, b in pairs]``, the thin ones' chunks shared out together."""
    if x2.shape[0] <= MAX_ROWS and all(is_thin_layout(w.T) for w, _ in pairs):
        return thin_products(x2, [(w.T, b) for w, b in pairs])  # [N, in] @ [in, out_i] -> [N, out_i] each
    return [linear_forward(x2, w, b, in_out=False) for w, b in pairs]


def linear_backward(gy2, x2, weight, *, in_out, needs):
    """``(gx2, gw, gb)`` for ``needs`` = (x, weight, bias) wanted; None for each one not wanted."""
    need_x, need_weight, need_bias = needs
    w = weight if in_out else weight.T  # [in, out]
    gx2 = gy2 @ w.T if need_x else None  # [N, out] @ [out, in] -> [N, in]
    gw = weight_grad(gy2, x2, weight, in_out=in_out) if need_weight else None
    # the sum over rows as a matrix-vector product: BLAS runs it on every core
    gb = gy2.T @ np.ones(gy2.shape[0], dtype=gy2.dtype) if need_bias else None  # [out, N] @ [N] -> [out]
    return gx2, gw, gb


def weight_grad(gy2, x2, weight, *, in_out):
    """The weight's gradient, shaped as ``weight`` is stored and laid out in its memory order."""
    if memory_order(weight) == "F":
        # Written through its transpose, a C-ordered view, so that gw owns its memory (no view to copy later).
        gw = np.empty(weight.shape, dtype=gy2.dtype, order="F")
        if in_out:
            np.matmul(gy2.T, x2, out=gw.T)  # [out, N] @ [N, in] -> [out, in]
        else:
            np.matmul(x2.T, gy2, out=gw.T)  # [in, N] @ [N, out] -> [in, out]
        return gw
    return x2.T @ gy2 if in_out else gy2.T @ x2  # [in, out] or [out, in], as stored
