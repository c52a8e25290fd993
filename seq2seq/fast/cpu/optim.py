"""The fused CPU forms of the optimizer's elementwise updates (``training/optim.py``): in blocks, on every core.

AdamW's update makes about a dozen passes over p, g, m and v; done a block at a time they run in the CPU cache, on
every core (``parallel.for_each_block``), instead of streaming the whole tensors from memory each time, and the
one temporary is this thread's scratch buffer instead of a fresh array per operation. The arithmetic is the plain
form's, operation for operation, so the results are the same bit for bit (the resume tests rely on it).

The blocks follow the parameter's memory order (the tied LM-head table is column-major, see
``layers.lm_head_layout``): p, m and v are flattened as views in that order, so the update lands in them; the
gradient too when it has the same layout (``nn.functional.Linear``'s fused backward makes it so), else a copy.
"""
import numpy as np

from ...core.backend import flat_view, memory_order
from .parallel import for_each_block, scratch


def adamw_update(p, g, m, v, *, lr, beta1, beta2, eps, weight_decay, step_size, bias_correction2):
    """torch.optim.AdamW's step, in place on parameter ``p`` and its moments ``m``, ``v``, given gradient ``g``."""
    hyper = {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": weight_decay,
             "step_size": step_size, "bias_correction2": bias_correction2}
    order = memory_order(p)
    fp, fm, fv = (flat_view(a, order) for a in (p, m, v))
    if fp is not None and fm is not None and fv is not None:
        fg = g.reshape(-1, order=order)  # a copy only when g's layout differs from p's
        for_each_block(lambda rows: _adamw_block(fp[rows], fg[rows], fm[rows], fv[rows], **hyper),
                       fp.size, 1)
    else:  # not contiguous (never for parameters the engine makes): one block, on the arrays themselves
        _adamw_block(p, g, m, v, **hyper)


def _adamw_block(p, g, m, v, *, lr, beta1, beta2, eps, weight_decay, step_size, bias_correction2):
    """The plain form's arithmetic, in its order, in place on views of one block of a parameter."""
    (tmp,) = scratch(p.shape, p.dtype, name="adamw")  # one reused buffer, not a temporary per operation
    if weight_decay != 0:
        p *= 1 - lr * weight_decay
    np.subtract(g, m, out=tmp)  # m += (1 - beta1) (g - m)
    tmp *= 1 - beta1
    m += tmp
    v *= beta2  # v = beta2 v + (1 - beta2) g^2
    np.multiply(g, 1 - beta2, out=tmp)
    tmp *= g
    v += tmp
    np.sqrt(v, out=tmp)  # denom = sqrt(v) / sqrt(bias_correction2) + eps
    tmp /= bias_correction2 ** 0.5
    tmp += eps
    np.divide(step_size * m, tmp, out=tmp)  # p -= step_size m / denom
    p -= tmp


def scale_in_place(g, factor):
    """``g *= factor`` in blocks on every core (clip_grad_norm_'s scaling of each gradient)."""
    flat = flat_view(g, memory_order(g))
    if flat is not None:
        for_each_block(lambda rows: np.multiply(flat[rows], factor, out=flat[rows]), flat.size, 1)
    else:  # not contiguous: one pass on the array itself
        g *= factor
