"""The fused CUDA forms of nn/'s ops on the eager path (training, and the encoder's forward): each a few kernel
launches where the plain form makes one CuPy kernel per arithmetic step (attention's products stay cuBLAS's).

The plain forms (``nn/functional.py``, ``nn/activations.py``) run on CuPy as written: exact GELU is ~30 elementwise
kernels over the model's largest activation, ``[B, T, 4C]``, forward and as many backward; a LayerNorm about ten
each way. Each of those kernels reads and writes the whole array, so on a GPU they cost their memory traffic,
not their arithmetic. Here an op is one launch forward and one backward (LayerNorm's backward adds CuPy's two
column sums), planned by ``eager_plans.py`` (``plans.py`` for the forward activation) and run by ``kernels.run``:

    activation_forward(x, act)          bias_activation.cu's act(x + 0)         (GELU, tanh-GELU, ReLU)
    activation_backward(gy, x, act)     gy * act'(x)
    layer_norm_forward(x, gamma, beta)  layer_norm.cu: y, and each row's float32 mean and rstd
    layer_norm_backward(...)            gx per row, gy * xhat for gamma's column sums; beta's, gy's column sums
    masked_softmax(scores, keep)        softmax.cu: attention's softmax over the keys, the mask applied in it
    softmax_backward(gp, probs, keep)   gs = probs (gp - sum(gp probs)), 0 where masked
    softmax_statistics(x), cross_entropy_grad(...)   cross_entropy.cu: the loss's passes over the logits
    adamw_update(p, g, m, v, ...)       optim.cu: AdamW's step, one launch per parameter
    dropout_keep(like, shape, p, rng)   dropout.cu: dropout's mask made on the device from one host-drawn seed

An op takes its fused CUDA form through one explicit branch, as it takes the CPU's (``fast/__init__.py``)::

    if fast_cpu.enabled(xp): ...                 # NumPy
    elif cuda_enabled(xp, x.dtype): ...          # CuPy with a device, the kernels found: this file
    else: ...                                    # the plain form

Every function takes ``run=``, the launcher: ``kernels.run`` on a GPU; the tests pass the CPU emulation of the
kernels (tests/fast/cuda_on_cpu.py) with NumPy arrays, so the glue here (statistics' shapes, the column sums, the
zero bias) is tested without a GPU. The arithmetic is float32 whatever the storage, as in every kernel.
"""
import functools

import numpy as np

from ...core.backend import get_array_module
from . import eager_plans, kernels, plans


def activation_forward(x, act, *, run=kernels.run):
    """``act(x)`` elementwise: the bias + activation kernel with a bias of zeros."""
    x = get_array_module(x).ascontiguousarray(x)
    return run(plans.bias_activation(x, _zeros(get_array_module(x), x.shape[-1], x.dtype.str), act))


def activation_backward(gy, x, act, *, run=kernels.run):
    """``gy * act'(x)``, x the activation's input."""
    return run(eager_plans.activation_backward(gy, x, act))


def layer_norm_forward(x, gamma, beta, eps, *, run=kernels.run):
    """``(y, mean, rstd)`` as ``nn.functional.LayerNorm`` keeps them: y like x, the statistics ``[..., 1]``
    (float32, whatever x's dtype: the kernel's)."""
    y, mean, rstd = run(eager_plans.layer_norm(x, gamma, beta, eps))
    stats_shape = x.shape[:-1] + (1,)
    return y.reshape(x.shape), mean.reshape(stats_shape), rstd.reshape(stats_shape)


def layer_norm_backward(gy, mean, rstd, gamma, *, x=None, y=None, beta=None, needs, run=kernels.run):
    """``(gx, ggamma, gbeta)`` for ``needs`` = (x, gamma, beta) wanted, None for each one not wanted; xhat from
    forward's input ``x`` or, when that is None, from its output ``y`` and ``beta`` (nn.functional.LayerNorm)."""
    need_x, need_gamma, need_beta = needs
    kept = x if x is not None else y
    c = kept.shape[-1]
    gx, gy_xhat = run(eager_plans.layer_norm_backward(gy, kept, mean.reshape(-1), rstd.reshape(-1), gamma, beta,
                                                      from_output=x is None, need_x=need_x))
    ggamma = gy_xhat.sum(axis=0).astype(gamma.dtype) if need_gamma else None  # [N, C] -> [C]
    gbeta = gy.reshape(-1, c).sum(axis=0, dtype=np.float32).astype(gamma.dtype) if need_beta else None
    return (None if gx is None else gx.reshape(kept.shape)), ggamma, gbeta


def fits_softmax(scores):
    """Whether a row of ``scores`` ``[..., S]`` fits the softmax kernel's shared memory (S <= 12,288 keys); longer
    rows take the plain form."""
    return 4 * scores.shape[-1] <= plans.MAX_SHARED


def masked_softmax(scores, keep, *, run=kernels.run):
    """Attention's ``softmax(where(keep, scores, lowest))`` over the keys of scores ``[B, nh, T, S]``."""
    return run(eager_plans.masked_softmax(scores, keep))


def softmax_backward(gp, probs, keep, *, run=kernels.run):
    """The scores' gradient from the probabilities' ``gp``: ``probs * (gp - sum(gp * probs))``, 0 where masked."""
    return run(eager_plans.softmax_backward(gp, probs, keep))


def softmax_statistics(x, *, with_mean, run=kernels.run):
    """The cross-entropy's ``(m, log_sum, mean_shifted or None)`` of logits ``[N, V]``, each ``[N, 1]`` float32 as
    ``nn.loss.CrossEntropy`` keeps them."""
    stats = run(eager_plans.softmax_statistics(x, with_mean=with_mean))
    return tuple(None if a is None else a.reshape(-1, 1) for a in stats)


def cross_entropy_grad(x, m, log_sum, labels, weight, *, smoothing, run=kernels.run):
    """The cross-entropy's gradient ``[N, V]``: (softmax(x) - target) * weight (``weight`` ``[N, 1]``)."""
    return run(eager_plans.cross_entropy_grad(x, m, log_sum, labels, weight, smoothing=smoothing))


def dropout_keep(like, shape, p, rng, *, run=kernels.run):
    """Dropout's keep mask ``shape`` on the device of ``like``, kept with probability 1 - p, from one seed drawn
    from ``rng`` (the model's NumPy generator: a run still repeats from its seed, and resumes exactly)."""
    seed = int(rng.integers(0, 2 ** 63, dtype=np.int64))
    return run(eager_plans.dropout_mask(get_array_module(like), shape, p, seed))


def adamw_update(p, g, m, v, *, run=kernels.run, **hyper):
    """torch.optim.AdamW's step in place on ``p``, ``m`` and ``v`` (training/optim.py's hyper-parameters)."""
    run(eager_plans.adamw(p, g, m, v, **hyper))


@functools.lru_cache(maxsize=None)
def _zeros(xp, width, dtype):
    """A bias of zeros ``[width]`` of ``dtype``, made once per (array module, width, dtype); never written."""
    return xp.zeros(width, dtype=dtype)
