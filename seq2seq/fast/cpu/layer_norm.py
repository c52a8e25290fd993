"""The fused CPU form of ``nn.functional.LayerNorm``: both passes on blocks of rows, on every core.

Each row is normalised on its own, so the blocks are independent (``parallel.for_each_block``); the gradients of
gamma and beta are sums over rows, added up block by block in block order. The arithmetic is the plain form's,
written as in-place ufuncs on the block's rows and this thread's scratch buffers.

Why the sums along rows are ``vecdot``s (``parallel.row_dots``) and the sums over rows ``ones @ rows``: NumPy's
reduction along a short last axis pays a start-up per row, and the rows here are only C values long; ``vecdot``
takes a row's mean several times faster than ``mean(axis=-1)`` (measured: benchmarks/RESULTS.md), and the variance
without writing the squares out. (BLAS's gemv, ``rows @ ones``, is faster still, but rounds a row differently by
where it falls in the block: a row's result must not depend on the block size. The column sums are per-block
partial sums anyway.)

``mean`` and ``rstd`` are shaped ``[..., 1]`` like ``x`` with its last axis 1, as the plain form keeps them, so
that either form's backward can follow either form's forward.
"""
import functools

import numpy as np

from .parallel import BLOCK_VALUES, as_rows, blas_on_calling_threads, for_each_block, row_dots, scratch


def layer_norm_forward(x, gamma, beta, eps):
    """``(y, mean, rstd)``: y = (x - mean) * rstd * gamma + beta, rstd = 1 / sqrt(var + eps), over the last axis."""
    x = np.ascontiguousarray(x)
    y = np.empty(x.shape, dtype=x.dtype)
    x2, y2 = as_rows(x), as_rows(y)  # [..., C] -> [N, C] views
    c = x2.shape[1]
    mean = np.empty((x2.shape[0], 1), dtype=x.dtype)  # [N, 1]
    rstd = np.empty((x2.shape[0], 1), dtype=x.dtype)  # [N, 1]
    averaging = _averaging(c, x.dtype)  # [C]: row @ averaging = the row's mean

    def block(rows):
        xb, yb, mb, rb = x2[rows], y2[rows], mean[rows], rstd[rows]
        row_dots(xb, averaging, out=mb[:, 0])  # the rows' means, [n]
        np.subtract(xb, mb, out=yb)  # centred
        row_dots(yb, yb, out=rb[:, 0])  # sum of squares, [n]
        rb *= 1.0 / c  # biased variance
        rb += eps
        np.sqrt(rb, out=rb)
        np.divide(1.0, rb, out=rb)  # 1 / sqrt(var + eps)
        yb *= rb  # normalised: xhat
        yb *= gamma
        yb += beta

    if x2.size <= BLOCK_VALUES:  # one block (a decode step's few rows): on this thread, no BLAS call to hold
        block(slice(0, x2.shape[0]))
    else:
        with blas_on_calling_threads():
            for_each_block(block, *x2.shape)
    stats_shape = x.shape[:-1] + (1,)
    return y, mean.reshape(stats_shape), rstd.reshape(stats_shape)  # [N, 1] -> [..., 1] views


@functools.lru_cache(maxsize=None)
def _averaging(c, dtype):
    """``[C]`` of 1/C (read-only: one array shared by every call of that width and dtype)."""
    averaging = np.full(c, 1.0 / c, dtype=dtype)
    averaging.flags.writeable = False
    return averaging


def layer_norm_backward(gy, mean, rstd, gamma, *, x=None, y=None, beta=None, needs):
    """``(gx, ggamma, gbeta)`` for ``needs`` = (x, gamma, beta) wanted; None for each one not wanted. xhat comes
    from forward's input ``x`` (with ``mean``), or, when that is None, from its output ``y`` and ``beta`` (see
    ``nn.functional.LayerNorm``)."""
    need_x, need_gamma, need_beta = needs
    kept = x if x is not None else y  # [..., C]
    gy2, kept2 = as_rows(np.ascontiguousarray(gy)), as_rows(np.ascontiguousarray(kept))  # [N, C]
    mean2, rstd2 = mean.reshape(-1, 1), rstd.reshape(-1, 1)  # [..., 1] -> [N, 1]
    c = kept2.shape[1]
    gx = np.empty(kept.shape, dtype=gy.dtype) if need_x else None
    gx2 = None if gx is None else as_rows(gx)
    averaging = _averaging(c, gy.dtype)  # [C]
    ones = np.ones(kept2.shape[0], dtype=gy.dtype)  # [N]: ones[rows] @ rows = the column sums

    def block(rows):
        gyb, mb, rb = gy2[rows], mean2[rows], rstd2[rows]
        xhat, g = scratch(gyb.shape, gyb.dtype, name="layer_norm", count=2)
        if x is not None:
            np.subtract(kept2[rows], mb, out=xhat)
            xhat *= rb
        else:  # from the output, as the plain form: (y - beta) / gamma
            np.subtract(kept2[rows], beta, out=xhat)
            xhat /= gamma
        gamma_part = ones[rows] @ np.multiply(gyb, xhat, out=g) if need_gamma else None  # [n] @ [n, C]
        beta_part = ones[rows] @ gyb if need_beta else None  # [C]
        if need_x:  # the plain form's three terms (nn/functional.py)
            gxb = gx2[rows]
            np.multiply(gyb, gamma, out=g)  # g = gy * gamma
            g_mean = row_dots(g, averaging)[:, None]  # [n, 1]
            gx_mean = row_dots(g, xhat)[:, None]  # [n, 1]
            gx_mean *= 1.0 / c
            np.subtract(g, g_mean, out=gxb)  # term 1 - term 2
            xhat *= gx_mean
            gxb -= xhat  # - term 3
            gxb *= rb
        return gamma_part, beta_part

    with blas_on_calling_threads():
        parts = for_each_block(block, *gy2.shape)
    ggamma = _sum_parts([gamma for gamma, _ in parts]) if need_gamma else None
    gbeta = _sum_parts([beta for _, beta in parts]) if need_beta else None
    return gx, ggamma, gbeta


def _sum_parts(parts):
    """Per-block partial sums added up in block order (a fixed order: the same result on any number of threads)."""
    total = parts[0].copy()
    for part in parts[1:]:
        total += part
    return total
