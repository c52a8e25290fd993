"""The fused CPU form of ``nn.functional.CrossEntropy``'s ``[N, V]`` work: softmax statistics and the gradient.

One row is one position's softmax over the vocabulary, so the work runs on blocks of rows
(``parallel.for_each_block``), each block's temporaries in this thread's scratch buffer: the ``[N, V]`` logits
are the largest array of a training step, and the plain form's ``exp(x - m)`` and its sum make full-size
temporaries on one core. The values are the plain form's, computed the same way row by row.
"""
from ...core.backend import get_array_module
from .parallel import for_each_block, scratch


def softmax_statistics(x, *, with_mean):
    """``(m, log_sum, mean_shifted)`` of logits ``x`` ``[N, V]``, each ``[N, 1]``: the row maxima, the log of
    sum_j exp(x_j - m), and (with ``with_mean``, else None) mean_j(x_j) - m."""
    xp = get_array_module(x)
    n, v = x.shape
    m = xp.empty((n, 1), dtype=x.dtype)
    log_sum = xp.empty((n, 1), dtype=x.dtype)
    mean_shifted = xp.empty((n, 1), dtype=x.dtype) if with_mean else None

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
    return m, log_sum, mean_shifted


def cross_entropy_grad(x, m, log_sum, labels, weight, *, smoothing):
    """The gradient ``[N, V]``: (softmax(x) - target) * weight, the target (1 - eps) on each row's label
    (``labels`` ``[N]``, every one inside the vocabulary) plus eps / V everywhere; ``weight`` ``[N, 1]``."""
    xp = get_array_module(x)
    n, v = x.shape
    p = xp.empty(x.shape, dtype=x.dtype)

    def block(rows):
        pb = p[rows]
        xp.subtract(x[rows], m[rows], out=pb)  # softmax, recomputed instead of kept: it is [N, V]
        pb -= log_sum[rows]
        xp.exp(pb, out=pb)
        pb[xp.arange(pb.shape[0]), labels[rows]] -= 1 - smoothing
        if smoothing:
            pb -= smoothing / v
        pb *= weight[rows]

    for_each_block(block, n, v, xp=xp)
    return p
