"""The fused CPU form of ``nn.functional.CrossEntropy``'s ``[N, V]`` work: softmax statistics and the gradient.

One row is one position's softmax over the vocabulary, so the work runs on blocks of rows
(``parallel.for_each_block``), each block's temporaries in this thread's scratch buffer: the ``[N, V]`` logits
are the largest array of a training step, and the plain form's ``exp(x - m)`` and its sum make full-size
temporaries on one core. The values are the plain form's, computed the same way row by row.
"""
import numpy as np

from .parallel import for_each_block, scratch


def softmax_statistics(x, *, with_mean):
    """``(m, log_sum, mean_shifted)`` of logits ``x`` ``[N, V]``, each ``[N, 1]``: the row maxima, the log of
    sum_j exp(x_j - m), and (with ``with_mean``, else None) mean_j(x_j) - m."""
    n, v = x.shape
    m = np.empty((n, 1), dtype=x.dtype)
    log_sum = np.empty((n, 1), dtype=x.dtype)
    mean_shifted = np.empty((n, 1), dtype=x.dtype) if with_mean else None

    def block(rows):
        xb = x[rows]
        np.max(xb, axis=-1, keepdims=True, out=m[rows])
        (shifted,) = scratch(xb.shape, xb.dtype, name="cross_entropy")
        np.subtract(xb, m[rows], out=shifted)
        if mean_shifted is not None:
            np.mean(shifted, axis=-1, keepdims=True, out=mean_shifted[rows])
        np.exp(shifted, out=shifted)
        np.log(shifted.sum(axis=-1, keepdims=True), out=log_sum[rows])

    for_each_block(block, n, v)
    return m, log_sum, mean_shifted


def cross_entropy_grad(x, m, log_sum, labels, weight, *, smoothing):
    """The gradient ``[N, V]``: (softmax(x) - target) * weight, the target (1 - eps) on each row's label
    (``labels`` ``[N]``, every one inside the vocabulary) plus eps / V everywhere; ``weight`` ``[N, 1]``."""
    n, v = x.shape
    p = np.empty(x.shape, dtype=x.dtype)

    def block(rows):
        pb = p[rows]
        np.subtract(x[rows], m[rows], out=pb)  # softmax, recomputed instead of kept: it is [N, V]
        pb -= log_sum[rows]
        np.exp(pb, out=pb)
        pb[np.arange(pb.shape[0]), labels[rows]] -= 1 - smoothing
        if smoothing:
            pb -= smoothing / v
        pb *= weight[rows]

    for_each_block(block, n, v)
    return p
