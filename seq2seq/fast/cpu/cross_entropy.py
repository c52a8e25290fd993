"""The fused CPU form of ``nn.loss.CrossEntropy``'s ``[N, V]`` work: softmax statistics and the gradient, and
the backward of ``nn.loss.LinearCrossEntropy``, the LM head's projection and the loss as one op.

One row is one position's softmax over the vocabulary, so the loss's own work runs on blocks of rows
(``parallel.for_each_block``), each block's temporaries in this thread's scratch buffer: the ``[N, V]`` logits
are the largest array of a training step, and the plain form's ``exp(x - m)`` and its sum make full-size
temporaries on one core. The values are the plain form's, computed the same way row by row.

**With the projection (``projected_grads``) the work runs on slices of the vocabulary instead.** The gradient of
the logits, (softmax - target) * weight, is made for some vocabulary columns at a time, in this thread's scratch
buffer (``BLOCK_FACTOR`` times ``parallel.BLOCK_VALUES`` values, 4 MiB of float32: in the L3 cache; 512 rows, 2048
columns; 1 MiB slices took 8% longer, from the more and smaller products), and multiplied at once into
the three gradients of the projection: the weight's rows of those tokens, the bias's entries, and a share of the
input's gradient. So the ``[N, V]`` gradient never exists whole: composed, the loss hands the projection 60 MB for
16 x 32 target tokens of a 30,522-token vocabulary, at the moment of the step when every saved activation is still
held (the peak of its memory). The slices are dealt out in ``GROUPS`` fixed groups of consecutive slices, each
summing its share of the input's gradient in a buffer of its own; the groups' shares are added in order at the end,
so the result does not depend on which thread ran which group, nor on how many threads there are. Each value of the
logits' gradient is the plain form's, bit for bit; the input's gradient is a sum taken in another order than one
product over the whole vocabulary, so it differs from the composed form's in the last bits.
"""
import numpy as np

from ...core.backend import memory_order
from .parallel import BLOCK_VALUES, blas_on_calling_threads, for_each_block, for_each_task, scratch

BLOCK_FACTOR = 8  # a vocabulary slice's gradient holds about this many times parallel.BLOCK_VALUES values
GROUPS = 8  # groups of consecutive vocabulary slices (a constant, never the number of threads: see above)
ALIGN = 64  # slices are whole multiples of this many columns (of every SIMD width)


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
        labelled = (np.arange(rows.stop - rows.start), labels[rows])  # every row's label is among the columns
        _logits_grad(x[rows], m[rows], log_sum[rows], labelled, weight[rows], smoothing=smoothing, vocab=v,
                     out=p[rows])

    for_each_block(block, n, v)
    return p


def _logits_grad(x, m, log_sum, labelled, weight, *, smoothing, vocab, out):
    """(softmax(x) - target) * weight into ``out``, for ``x`` some rows of the logits or some of their columns, with
    those rows' ``m``, ``log_sum`` and ``weight`` ``[n, 1]``; ``labelled`` indexes ``out`` where a row's label lies
    (its (rows, columns)). The softmax is recomputed instead of kept: it is ``[N, V]``."""
    np.subtract(x, m, out=out)
    out -= log_sum
    np.exp(out, out=out)
    out[labelled] -= 1 - smoothing
    if smoothing:
        out -= smoothing / vocab
    out *= weight
    return out


def projected_grads(x, m, log_sum, labels, weight, *, smoothing, g_logits, h2, w, needs):
    """The gradients ``(gh2, gw, gb)`` of the projection ``x = h2 @ w.T + b`` given the loss's, by vocabulary slices
    (see the module's docstring); None for each one ``needs`` (for h2, w, b) does not ask for.

    ``x`` ``[N, V]`` the logits, ``m``, ``log_sum`` ``[N, 1]`` their softmax statistics, ``labels`` ``[N]`` (each
    inside the vocabulary), ``weight`` ``[N, 1]`` each row's share of the loss's gradient, ``smoothing`` eps as in
    ``cross_entropy_grad``; ``g_logits`` ``[N, V]`` a gradient that reached the logits themselves, or None;
    ``h2`` ``[N, C]`` the projection's input; ``w`` ``[V, C]`` its weight as stored (a column-major one gets a
    column-major gradient, as ``linear.weight_grad`` makes it).
    """
    n, v = x.shape
    need_h, need_w, need_b = needs
    slices = vocabulary_slices(n, v)
    groups = [slices[i::GROUPS] for i in range(min(GROUPS, len(slices)))]  # interleaved: even shares of work
    shares = np.zeros((len(groups), n, h2.shape[1]), dtype=x.dtype) if need_h else None  # [G, N, C]
    gw = np.empty(w.shape, dtype=x.dtype, order=memory_order(w)) if need_w else None  # [V, C]
    gb = np.empty(v, dtype=x.dtype) if need_b else None
    ones = np.ones(n, dtype=x.dtype)  # [N]: ones @ p = p's column sums
    rows = np.arange(n)

    def group(g):
        for columns in groups[g]:
            width = columns.stop - columns.start
            (p,) = scratch((n, width), x.dtype, name="projected_grads")
            inside = (labels >= columns.start) & (labels < columns.stop)  # rows whose label is in this slice
            labelled = (rows[inside], labels[inside] - columns.start)
            # the logits' gradient over the slice, [N, width], as cross_entropy_grad makes it
            _logits_grad(x[:, columns], m, log_sum, labelled, weight, smoothing=smoothing, vocab=v, out=p)
            if g_logits is not None:
                p += g_logits[:, columns]
            if need_h:  # [N, width] @ [width, C] -> [N, C], added to this group's share
                (product,) = scratch(shares[g].shape, x.dtype, name="projected_share")
                np.matmul(p, w[columns], out=product)
                shares[g] += product
            if need_w:  # the weight's rows of these tokens: [width, N] @ [N, C] -> [width, C]
                if memory_order(gw) == "F":
                    np.matmul(h2.T, p, out=gw.T[:, columns])  # through the C-ordered transpose, as weight_grad
                else:
                    np.matmul(p.T, h2, out=gw[columns])
            if need_b:
                np.matmul(ones, p, out=gb[columns])  # [N] @ [N, width] -> [width]

    with blas_on_calling_threads():  # one thread per product: the same bits whatever runs it
        for_each_task(group, len(groups))
    gh2 = None
    if need_h:
        gh2 = shares[0]
        for share in shares[1:]:
            gh2 += share  # in group order
    return gh2, gw, gb


def vocabulary_slices(rows, vocab):
    """The column slices ``projected_grads`` works on: about ``BLOCK_FACTOR * BLOCK_VALUES`` values of ``rows``
    rows each, whole ``ALIGN`` groups of columns (the last one narrower). A function of the shapes alone."""
    width = max(ALIGN, (BLOCK_FACTOR * BLOCK_VALUES // max(rows, 1)) // ALIGN * ALIGN)
    return [slice(start, min(start + width, vocab)) for start in range(0, vocab, width)]
