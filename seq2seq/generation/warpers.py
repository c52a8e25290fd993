"""Sampling warpers: the processors that run only with ``do_sample`` (reshaping the distribution a token is drawn
from), and the final log-softmax (``renormalize_logits``), as transformers' ``logits_process.py`` computes them.

Each filter sets the scores of the tokens it drops to -inf and keeps at least ``min_tokens_to_keep`` tokens (with
beams: one more than the eos ids, so that every beam has a continuation to explore). Probabilities are float32
softmaxes of the scores, as in transformers, so the kept sets agree at the boundary too.

    Temperature   scores / temperature
    TopK          the k highest scores
    TopP          the most probable tokens whose mass exceeds top_p (nucleus sampling)
    MinP          tokens at least min_p times as probable as the most probable one
    Typical       tokens whose surprisal is closest to the entropy, up to a mass of typical_p
    Epsilon       tokens of probability >= epsilon_cutoff
    Eta           tokens of probability >= min(eta, sqrt(eta) * exp(-entropy))
    LogitNormalization   log_softmax of the scores, after everything else (renormalize_logits)
"""
import numpy as np

from ..core.backend import get_array_module
from ..core.errors import GenerationError
from ..core.inputs import is_number
from .logits_process import _positive_int, _remove


def softmax(scores):
    """float32 softmax over the last axis (-inf scores get probability 0)."""
    xp = get_array_module(scores)
    e = xp.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(scores):
    xp = get_array_module(scores)
    shifted = scores - scores.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


def _argsort(values, *, descending=False):
    """A stable argsort over the last axis: among equal values the lower id comes first."""
    xp = get_array_module(values)
    stable = {"kind": "stable"} if xp is np else {}  # CuPy's sort is always stable and refuses `kind`
    return xp.argsort(-values if descending else values, axis=-1, **stable)


def _unsort(remove_sorted, order):
    """A mask in sorted order (``order`` from ``_argsort``) back in vocabulary order."""
    xp = get_array_module(remove_sorted)
    remove = xp.empty_like(remove_sorted)
    remove[xp.arange(order.shape[0])[:, None], order] = remove_sorted
    return remove


def _kth_highest(scores, k):
    """``[N, 1]``: the k-th highest score of each row (k clipped to the vocabulary)."""
    xp = get_array_module(scores)
    v = scores.shape[-1]
    k = min(k, v)
    return xp.partition(scores, v - k, axis=-1)[:, v - k:v - k + 1]


def _open_unit(name, value):
    """A float strictly between 0 and 1, or GenerationError naming ``name``."""
    if not is_number(value) or not 0 < value < 1:
        raise GenerationError(f"`{name}` has to be a float > 0 and < 1, but is {value!r}")
    return float(value)


class Temperature:
    """Divide scores by ``temperature``: above 1 flattens the distribution, below 1 sharpens it."""

    def __init__(self, temperature):
        if not is_number(temperature) or not temperature > 0:
            hint = " For greedy decoding, set do_sample=False." if temperature == 0 else ""
            raise GenerationError(f"`temperature` (={temperature!r}) has to be a strictly positive float, otherwise "
                                  f"the next-token scores are invalid.{hint}")
        self.temperature = float(temperature)

    def __call__(self, input_ids, scores):
        return scores / self.temperature


class TopK:
    """Keep the ``top_k`` highest scores (at least ``min_tokens_to_keep``), -inf elsewhere.

    Ties at the boundary are all kept: a token is removed only if its score is strictly below the k-th highest.
    """

    def __init__(self, top_k, *, min_tokens_to_keep=1):
        self.min_tokens_to_keep = _positive_int("min_tokens_to_keep", min_tokens_to_keep)
        self.top_k = max(_positive_int("top_k", top_k), self.min_tokens_to_keep)

    def __call__(self, input_ids, scores):
        return _remove(scores, scores < _kth_highest(scores, self.top_k))


class TopP:
    """Nucleus sampling: keep the most probable tokens whose probabilities add up to ``top_p``.

    Going up from the least likely token, a token is removed while the cumulative probability up to and including
    it is still <= 1 - top_p; so the kept set is the smallest one whose mass exceeds top_p (the token crossing the
    line is kept). The ``min_tokens_to_keep`` most likely tokens are always kept.
    """

    def __init__(self, top_p, *, min_tokens_to_keep=1):
        if not is_number(top_p) or not 0 < top_p <= 1:
            raise GenerationError(f"`top_p` has to be a float in (0, 1], but is {top_p!r}")
        self.top_p = float(top_p)
        self.min_tokens_to_keep = _positive_int("min_tokens_to_keep", min_tokens_to_keep)

    def __call__(self, input_ids, scores):
        xp = get_array_module(scores)
        # Why a stable ascending sort: among tied scores at the boundary, the lower id is dropped first. (In
        # transformers that choice is left to torch's unstable sort; the number of tokens kept is the same.)
        order = _argsort(scores)  # [N, V], ascending
        probs = softmax(xp.take_along_axis(scores, order, axis=-1))  # float32, as transformers computes it
        # Why float64 accumulation: torch's CPU cumsum accumulates float32 in double, so this matches it at the edge.
        cumulative = xp.cumsum(probs.astype(xp.float64), axis=-1).astype(scores.dtype, copy=False)
        remove_sorted = cumulative <= scores.dtype.type(1 - self.top_p)
        remove_sorted[:, -self.min_tokens_to_keep:] = False
        return _remove(scores, _unsort(remove_sorted, order))


class MinP:
    """Keep the tokens whose probability is at least ``min_p`` times that of the most probable token: the filter
    tightens when the model is confident."""

    def __init__(self, min_p, *, min_tokens_to_keep=1):
        if not is_number(min_p) or not 0 <= min_p <= 1:
            raise GenerationError(f"`min_p` has to be a float in the [0, 1] interval, but is {min_p!r}")
        self.min_p = float(min_p)
        self.min_tokens_to_keep = _positive_int("min_tokens_to_keep", min_tokens_to_keep)

    def __call__(self, input_ids, scores):
        probs = softmax(scores)  # [N, V]
        remove = probs < self.min_p * probs.max(axis=-1, keepdims=True)
        keep = _argsort(probs, descending=True)[:, :self.min_tokens_to_keep]  # [N, k]
        remove[get_array_module(scores).arange(scores.shape[0])[:, None], keep] = False  # our own mask
        return _remove(scores, remove)


class Typical:
    """Typical sampling: rank tokens by how far their surprisal ``-log p`` is from the entropy, and keep the closest
    ones until their probabilities add up to ``typical_p`` (the one crossing the line included)."""

    def __init__(self, typical_p, *, min_tokens_to_keep=1):
        if not is_number(typical_p) or not 0 < typical_p < 1:
            raise GenerationError(f"`typical_p` has to be a float > 0 and < 1, but is {typical_p!r}")
        self.mass = float(typical_p)
        self.min_tokens_to_keep = _positive_int("min_tokens_to_keep", min_tokens_to_keep)

    def __call__(self, input_ids, scores):
        xp = get_array_module(scores)
        log_p = log_softmax(scores)  # [N, V]
        p = xp.exp(log_p)
        # [N, 1]; transformers' nansum skips the NaN of -inf * 0 (a filtered token), as the 0 here does
        entropy = -(xp.where(p > 0, log_p, 0) * p).sum(axis=-1, keepdims=True)
        distance = xp.abs(-log_p - entropy)  # [N, V]
        order = _argsort(distance)  # closest to the entropy first
        sorted_distance = xp.take_along_axis(distance, order, axis=-1)
        probs = softmax(xp.take_along_axis(scores, order, axis=-1))
        cumulative = xp.cumsum(probs.astype(xp.float64), axis=-1).astype(scores.dtype, copy=False)
        last = xp.minimum((cumulative < self.mass).sum(axis=-1), scores.shape[-1] - 1)  # [N]
        # A token is dropped when it is farther from the entropy than the one that crossed the mass (ties kept).
        remove_sorted = sorted_distance > xp.take_along_axis(sorted_distance, last[:, None], axis=-1)
        remove_sorted[:, :self.min_tokens_to_keep] = False
        return _remove(scores, _unsort(remove_sorted, order))


class Epsilon:
    """Keep the tokens of probability at least ``epsilon_cutoff`` (and always the ``min_tokens_to_keep`` best)."""

    def __init__(self, epsilon, *, min_tokens_to_keep=1):
        self.epsilon = _open_unit("epsilon_cutoff", epsilon)
        self.min_tokens_to_keep = _positive_int("min_tokens_to_keep", min_tokens_to_keep)

    def __call__(self, input_ids, scores):
        remove = softmax(scores) < self.epsilon
        return _remove(scores, remove & (scores < _kth_highest(scores, self.min_tokens_to_keep)))


class Eta:
    """Eta sampling: keep the tokens of probability at least ``min(eta, sqrt(eta) * exp(-entropy))``, a cutoff that
    loosens when the distribution is spread out (high entropy)."""

    def __init__(self, eta, *, min_tokens_to_keep=1):
        self.eta = np.float32(_open_unit("eta_cutoff", eta))  # float32, as transformers' torch.tensor(epsilon)
        self.min_tokens_to_keep = _positive_int("min_tokens_to_keep", min_tokens_to_keep)

    def __call__(self, input_ids, scores):
        xp = get_array_module(scores)
        probs = softmax(scores)
        # Why the clamp: torch's Categorical.entropy() clamps -inf log-probs to the dtype's minimum, so 0 * -inf
        # (a filtered token) counts 0 instead of NaN.
        log_p = xp.maximum(log_softmax(scores), xp.finfo(scores.dtype).min)
        entropy = -(log_p * probs).sum(axis=-1, keepdims=True)  # [N, 1]
        cutoff = xp.minimum(self.eta, xp.sqrt(self.eta) * xp.exp(-entropy))
        remove = probs < cutoff
        return _remove(scores, remove & (scores < _kth_highest(scores, self.min_tokens_to_keep)))


class LogitNormalization:
    """``log_softmax`` of the scores: the last processor when ``renormalize_logits`` is set, so that what the
    tokens are chosen from (and what ``output_scores`` shows) are log-probabilities again after the filters."""

    def __call__(self, input_ids, scores):
        return log_softmax(scores)
