"""What the kernels in ``kernels/*.cu`` compute, in NumPy (or CuPy) arrays with the same buffer layouts.

Each section mirrors one kernel family (one file), each function one kernel, taking the arrays its launch takes
(``plans.py``) in the same layouts: rows ``[N, F]`` or ``[N, C]`` over the last axis, parameters ``[F]`` /
``[C]``, attention in the layouts its kernel's header gives. As in the kernels, storage may be float16 but the
arithmetic is float32: inputs are widened, computed on, and the result is rounded once to the input's dtype.
(NumPy has no bfloat16; the GPU parity test rounds float32 to bfloat16 bits itself.) These are definitions,
written for reading, not speed.
"""
import math

import numpy as np

from ...core.backend import erf_float64, get_array_module

ACTIVATIONS = ("gelu", "gelu_tanh", "relu")  # the kernel names' activation part
_SQRT_HALF = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _erf(v):
    """erf in float32 through float64 (exact enough to be the definition), on NumPy or CuPy."""
    return erf_float64(v.astype(np.float64)).astype(np.float32)


def bias_activation(x, b, act):
    """``act(x + b)`` for x ``[N, F]`` and b ``[F]``, computed in float32, returned in x's dtype.

    act: ``"gelu"`` (erf), ``"gelu_tanh"`` (transformers' "gelu_new") or ``"relu"``.
    """
    xp = get_array_module(x, b)
    v = x.astype(np.float32) + b.astype(np.float32)
    if act == "gelu":
        y = 0.5 * v * (1 + _erf(v * np.float32(_SQRT_HALF)))
    elif act == "gelu_tanh":
        y = 0.5 * v * (1 + xp.tanh(np.float32(_SQRT_2_OVER_PI) * (v + np.float32(0.044715) * v * v * v)))
    elif act == "relu":
        y = xp.maximum(v, 0)
    else:
        raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")
    return y.astype(x.dtype)


def _layer_norm(v, gamma, beta, eps):
    """Float32 layer norm over the last axis with the biased variance about the mean (torch.nn.LayerNorm)."""
    mean = v.mean(axis=-1, keepdims=True)
    d = v - mean
    var = (d * d).mean(axis=-1, keepdims=True)
    return d / np.sqrt(var + np.float32(eps)) * gamma.astype(np.float32) + beta.astype(np.float32)


def add_layer_norm(x, residual, bias, gamma, beta, eps):
    """Post-LN (BERT, BART): ``LayerNorm(x + residual + bias) * gamma + beta`` over the last axis of ``[N, C]``."""
    v = x.astype(np.float32) + residual.astype(np.float32) + bias.astype(np.float32)
    return _layer_norm(v, gamma, beta, eps).astype(x.dtype)


def add_layer_norm_pre(x, residual, gamma, beta, eps):
    """Pre-LN (GPT-2): ``(s, LayerNorm(s) * gamma + beta)`` with ``s = x + residual``, both in x's dtype.

    The normalised rows are computed from the float32 sum, as the kernel does, not from its rounded copy.
    """
    s = x.astype(np.float32) + residual.astype(np.float32)
    return s.astype(x.dtype), _layer_norm(s, gamma, beta, eps).astype(x.dtype)


def activation_backward(gy, v, act):
    """``gy * act'(v)`` elementwise, v the activation's input, in float32, returned in gy's dtype."""
    xp = get_array_module(gy, v)
    v32, gy32 = v.astype(np.float32), gy.astype(np.float32)
    if act == "gelu":
        grad = 0.5 * (1 + _erf(v32 * np.float32(_SQRT_HALF))) + v32 * xp.exp(-0.5 * v32 * v32) / math.sqrt(2 * math.pi)
    elif act == "gelu_tanh":
        t = xp.tanh(np.float32(_SQRT_2_OVER_PI) * (v32 + np.float32(0.044715) * v32 ** 3))
        grad = 0.5 * (1 + t) + 0.5 * v32 * (1 - t * t) * np.float32(_SQRT_2_OVER_PI) * (1 + 3 * 0.044715 * v32 * v32)
    elif act == "relu":
        grad = (v32 > 0).astype(np.float32)
    else:
        raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")
    return (gy32 * grad).astype(gy.dtype)


def layer_norm(x, gamma, beta, eps):
    """``(y, mean, rstd)``: LayerNorm over the last axis of ``[N, C]`` (y in x's dtype) and each row's float32 mean
    and 1 / sqrt(var + eps), ``[N]``."""
    v = x.astype(np.float32)
    mean = v.mean(axis=-1)
    d = v - mean[:, None]
    rstd = 1 / np.sqrt((d * d).mean(axis=-1) + np.float32(eps))
    y = d * rstd[:, None] * gamma.astype(np.float32) + beta.astype(np.float32)
    return y.astype(x.dtype), mean.astype(np.float32), rstd.astype(np.float32)


def layer_norm_backward(gy, kept, mean, rstd, gamma, beta, from_output):
    """``(gx, gy_xhat)`` of a LayerNorm over ``[N, C]`` rows: gx in gy's dtype, gy * xhat in float32 (its column
    sums are gamma's gradient). xhat from forward's input (``kept`` = x) or, ``from_output``, its output (y)."""
    gam = gamma.astype(np.float32)
    k, gy32 = kept.astype(np.float32), gy.astype(np.float32)
    xhat = (k - beta.astype(np.float32)) / gam if from_output else (k - mean[:, None]) * rstd[:, None]
    g = gy32 * gam
    gx = rstd[:, None] * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    return gx.astype(gy.dtype), gy32 * xhat


# ---- softmax.cu ---------------------------------------------------------------------------------------------------

def masked_softmax(scores, keep):
    """``softmax(where(keep, scores, LOWEST))`` over the last axis, float32 arithmetic, in scores' dtype."""
    xp = get_array_module(scores)
    s = scores.astype(np.float32)
    if keep is not None:
        s = xp.where(keep, s, np.float32(np.finfo(np.float32).min))
    e = xp.exp(s - s.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(scores.dtype)


def softmax_backward(gp, probs, keep):
    """``probs * (gp - sum(gp * probs))`` over the last axis, 0 where keep is False, in gp's dtype."""
    xp = get_array_module(gp)
    g, p = gp.astype(np.float32), probs.astype(np.float32)
    gs = p * (g - (g * p).sum(axis=-1, keepdims=True))
    if keep is not None:
        gs = xp.where(keep, gs, np.float32(0))
    return gs.astype(gp.dtype)


# ---- cross_entropy.cu --------------------------------------------------------------------------------------------

def softmax_statistics(x, *, with_mean):
    """``(m, log_sum, mean_shifted or None)`` of logits ``[N, V]``, each float32 ``[N]``."""
    xp = get_array_module(x)
    x32 = x.astype(np.float32)
    m = x32.max(axis=-1)
    log_sum = xp.log(xp.exp(x32 - m[:, None]).sum(axis=-1))
    return m, log_sum, (x32.mean(axis=-1) - m) if with_mean else None


def cross_entropy_grad(x, m, log_sum, labels, weight, smoothing):
    """``(softmax(x) - target) * weight`` in x's dtype, the target (1 - smoothing) at each row's label plus
    smoothing / V; m, log_sum, weight ``[N]``."""
    xp = get_array_module(x)
    n, v = x.shape
    p = xp.exp(x.astype(np.float32) - (m + log_sum)[:, None])
    p[xp.arange(n), labels] -= np.float32(1 - smoothing)
    return ((p - np.float32(smoothing / v)) * weight[:, None]).astype(x.dtype)


# ---- dropout.cu ---------------------------------------------------------------------------------------------------

def dropout_mask(shape, p, seed):
    """The kernel's keep mask, bit for bit: element i kept when splitmix64(seed + (i + 1) * golden) >> 32 is at least
    round(p * 2^32) (uint64 arithmetic wraps, as the kernel's)."""
    z = np.uint64(seed) + np.arange(1, math.prod(shape) + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return ((z >> np.uint64(32)).astype(np.int64) >= round(p * 2 ** 32)).reshape(shape)


# ---- optim.cu -----------------------------------------------------------------------------------------------------

def adamw(p, g, m, v, *, lr, beta1, beta2, eps, weight_decay, step_size, bias_correction2):
    """torch.optim.AdamW's step in float32, in its order: the new ``(p, m, v)`` in p's dtype (inputs untouched)."""
    xp = get_array_module(p)
    p32, g32, m32, v32 = (a.astype(np.float32) for a in (p, g, m, v))
    if weight_decay != 0:
        p32 = p32 * np.float32(1 - lr * weight_decay)
    m32 = m32 + np.float32(1 - beta1) * (g32 - m32)
    v32 = np.float32(beta2) * v32 + np.float32(1 - beta2) * g32 * g32
    p32 = p32 - np.float32(step_size) * m32 / (xp.sqrt(v32) / np.float32(bias_correction2 ** 0.5) + np.float32(eps))
    return p32.astype(p.dtype), m32.astype(p.dtype), v32.astype(p.dtype)


# ---- decode_attention.cu: one query per row ---------------------------------------------------------------------

LOWEST = np.float32(np.finfo(np.float32).min)  # a masked score, as nn/attention.py fills it


def _softmax_times(scores, keep, v):
    """softmax(scores masked by keep) @ v in float32: scores ``[..., n]``, keep broadcastable to them or None,
    v ``[..., n, hs]`` -> ``[..., hs]``."""
    xp = get_array_module(scores)
    if keep is not None:
        scores = xp.where(keep, scores, LOWEST)
    e = xp.exp(scores - scores.max(axis=-1, keepdims=True))
    return (e[..., None, :] @ v.astype(np.float32))[..., 0, :] / e.sum(axis=-1)[..., None]


def _scaled(q, scale):
    return q.astype(np.float32) * np.float32(1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)


def decode_self_attention(q, k_new, v_new, k_cache, v_cache, lengths, *, scale=None):
    """Attention of one query per row over its cache: q, k_new, v_new ``[rows, heads, hs]`` (k_new/v_new None when
    the cache holds the step already), caches ``[rows, heads, max_len, hs]``, lengths ``[rows]`` (positions filled,
    the new one included; clamped to [1, max_len]). Writes k_new and v_new into the caches at ``lengths - 1`` (in
    place, as the kernel does) and returns ``[rows, heads, hs]`` in q's dtype."""
    xp = get_array_module(q)
    out = xp.empty(q.shape, dtype=q.dtype)
    max_len = k_cache.shape[2]
    for r in range(q.shape[0]):
        n = min(max(int(lengths[r]), 1), max_len)
        if k_new is not None:
            k_cache[r, :, n - 1], v_cache[r, :, n - 1] = k_new[r], v_new[r]
        keys = k_cache[r, :, :n].astype(np.float32)  # [heads, n, hs]
        scores = (keys @ _scaled(q[r], scale)[:, :, None])[:, :, 0]  # [heads, n, hs] @ [heads, hs, 1] -> [heads, n]
        out[r] = _softmax_times(scores, None, v_cache[r, :, :n]).astype(q.dtype)
    return out


def decode_cross_attention(q, k_enc, v_enc, *, source_of_row=None, keep=None, scale=None):
    """Attention of one query per row over its source's encoder keys/values: q ``[rows, heads, hs]``, k_enc and
    v_enc ``[sources, heads, S, hs]``, source_of_row ``[rows]`` (None: row i reads source i), keep ``[sources, S]``
    bool or None. Returns ``[rows, heads, hs]`` in q's dtype."""
    xp = get_array_module(q)
    source = xp.arange(q.shape[0]) if source_of_row is None else xp.asarray(source_of_row)
    keys = k_enc[source].astype(np.float32)  # [rows, heads, S, hs]: a copy per row, fine for a definition
    scores = (keys @ _scaled(q, scale)[..., None])[..., 0]  # [rows, heads, S, hs] @ [rows, heads, hs, 1]
    row_keep = None if keep is None else keep[source][:, None, :]  # [rows, 1, S]
    return _softmax_times(scores, row_keep, v_enc[source]).astype(q.dtype)


# ---- flash_attention.cu: many queries, fused ------------------------------------------------------------------

def flash_attention(q, k, v, *, key_keep=None, causal=False, scale=None):
    """softmax(scale q k^T, masked) v for q ``[B, T, heads, hs]``, k and v ``[B, S, heads, hs]`` (the projections'
    layout), key_keep ``[B, S]`` bool or None; causal: query t sees keys j <= t + S - T. ``[B, T, heads, hs]``."""
    xp = get_array_module(q)
    t, s = q.shape[1], k.shape[1]
    qh = xp.swapaxes(_scaled(q, scale), 1, 2)  # [B, T, nh, hs] -> [B, nh, T, hs]
    kh, vh = (xp.swapaxes(a.astype(np.float32), 1, 2) for a in (k, v))  # [B, S, nh, hs] -> [B, nh, S, hs]
    scores = qh @ xp.swapaxes(kh, -1, -2)  # [B, nh, T, hs] @ [B, nh, hs, S] -> [B, nh, T, S]
    keep = xp.ones((1, 1, t, s), dtype=bool)
    if key_keep is not None:
        keep = keep & key_keep[:, None, None, :]
    if causal:
        keep = keep & (xp.arange(s)[None, :] <= xp.arange(t)[:, None] + (s - t))
    e = xp.exp(xp.where(keep, scores, LOWEST) - xp.where(keep, scores, LOWEST).max(axis=-1, keepdims=True))
    out = (e @ vh) / e.sum(axis=-1, keepdims=True)  # [B, nh, T, S] @ [B, nh, S, hs] -> [B, nh, T, hs]
    return xp.swapaxes(out, 1, 2).astype(q.dtype)  # -> [B, T, nh, hs]


# ---- embeddings.cu ------------------------------------------------------------------------------------------------

def embed(ids, word, position_table, *, positions=None, position_offset=0, type_table=None, token_types=None,
          gamma=None, beta=None, word_scale=1.0, eps=1e-12):
    """``v = word[ids] * word_scale (+ type_table[token_types or 0]) + position_table[position + position_offset]``
    in float32, ids ``[B, T]``, positions ``[B, T]`` or None (0..T-1 in each row). Returns (v, y) in word's dtype,
    y = LayerNorm(v) * gamma + beta, or v itself without gamma."""
    xp = get_array_module(word)
    b, t = ids.shape
    if positions is None:
        positions = xp.broadcast_to(xp.arange(t), (b, t))
    v = word[ids].astype(np.float32) * np.float32(word_scale)  # [B, T] -> [B, T, C]
    if type_table is not None:
        v = v + type_table[0 if token_types is None else token_types].astype(np.float32)
    v = v + position_table[xp.asarray(positions).reshape(b, t) + position_offset].astype(np.float32)
    y = v if gamma is None else _layer_norm(v, gamma, beta, eps)
    return v.astype(word.dtype), y.astype(word.dtype)


# ---- next_token.cu: argmax, beam search's candidates ----------------------------------------------------------

def argmax(scores):
    """The first index of each row's largest score (NaN counting as largest), scores ``[rows, V]``: int64 ``[rows]``."""
    return get_array_module(scores).argmax(scores.astype(np.float32), axis=-1).astype(np.int64)


def log_softmax(scores):
    """float32 ``(x - max) - log(sum(exp(x - max)))`` over the last axis (beam_search.log_softmax's formula)."""
    xp = get_array_module(scores)
    shifted = scores.astype(np.float32) - scores.astype(np.float32).max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


def _best_first(values, k):
    """Column indices of the k best of each row: larger first, the lower column on ties (a stable sort)."""
    xp = get_array_module(values)
    order = xp.argsort(-values, axis=-1, kind="stable") if xp is np else xp.argsort(-values, axis=-1)
    return order[:, :k]


def beam_topk(scores, k, *, beam_scores=None, normalise=True):
    """Per row of scores ``[rows, V]``: lp = log_softmax(scores) (or the scores themselves), then the k best of
    ``lp + beam_scores[row]`` (no NaN). Returns (lp float32, top_values ``[rows, k]`` float32, top_ids int64)."""
    xp = get_array_module(scores)
    lp = log_softmax(scores) if normalise else scores.astype(np.float32)
    total = lp if beam_scores is None else lp + beam_scores.astype(np.float32)[:, None]
    ids = _best_first(total, k)
    return lp, xp.take_along_axis(total, ids, -1), ids.astype(np.int64)


def beam_merge(top_values, top_ids, *, n_beams, vocab):
    """The k best of each batch row's n_beams rows of candidates ``[B * n_beams, k]``, by value and then by flat
    index ``beam * vocab + token``. Returns (values ``[B, k]`` float32, flat ``[B, k]`` int64)."""
    xp = get_array_module(top_values)
    rows, k = top_values.shape
    values = top_values.reshape(rows // n_beams, n_beams * k)  # [B * nb, k] -> [B, nb * k]
    flat = (top_ids.reshape(rows // n_beams, n_beams, k) + (xp.arange(n_beams) * vocab)[None, :, None])
    flat = flat.reshape(rows // n_beams, n_beams * k)
    by_flat = xp.argsort(flat, axis=-1)  # flat indices are distinct: any sort is the stable one
    values, flat = xp.take_along_axis(values, by_flat, -1), xp.take_along_axis(flat, by_flat, -1)
    best = _best_first(values, k)  # stable: equal values stay in flat order
    return xp.take_along_axis(values, best, -1), xp.take_along_axis(flat, best, -1).astype(np.int64)


def sample(scores, uniforms):
    """generation/sampling.sample_tokens with its uniforms given: in float64, p = exp(x - max), the first token
    whose cumulative p exceeds ``u * sum(p)``, at most the last token with p > 0; -1 for a row with a NaN or +inf
    score or all -inf (sample_tokens raises there). scores ``[rows, V]``, uniforms ``[rows]``: ids int64 ``[rows]``."""
    xp = get_array_module(scores)
    scores = scores.astype(np.float64)
    top = scores.max(axis=-1, keepdims=True)
    bad = ~xp.isfinite(top)  # [rows, 1]
    p = xp.exp(xp.where(bad, 0.0, scores) - xp.where(bad, 0.0, top))  # [rows, V]; bad rows: any finite values
    bad = bad[:, 0]
    cdf = xp.cumsum(p, axis=-1)
    tokens = (cdf <= (uniforms * cdf[:, -1])[:, None]).sum(axis=-1)
    last = scores.shape[-1] - 1 - xp.argmax(p[:, ::-1] > 0, axis=-1)
    return xp.where(bad, -1, xp.minimum(tokens, last)).astype(np.int64)
