"""Logits processors: the small rules that reshape next-token scores before a token is chosen.

Each decoding step of ``generate`` computes scores ``[N, V]`` for the next token of N sequences, then passes them
through a list of processors, in order, and only then picks a token (argmax, a draw, or the best beams):

    scores = processors(input_ids, scores)     # input_ids [N, cur_len]: the decoder sequences so far

Every processor is a pure callable ``(input_ids, scores) -> scores``: it never writes into the array it was given,
so the caller's logits stay intact (they may be a view into the decoder's output). They run on NumPy or CuPy
arrays alike (``get_array_module``). ``input_ids`` include the decoder start token, so for an encoder-decoder model
``cur_len`` is 1 at the first step: the "prompt" of the decoder is that one token.

The rules are those of transformers' ``generation/logits_process.py`` with the same arguments and edge cases
(ties, ``min_tokens_to_keep``, ``-inf`` as the filter value, eos given as one id or a list), and
``build_logits_processors`` assembles them in exactly the order transformers' ``_get_logits_processor`` does:
penalties and constraints first, then, only when sampling, the "warpers" temperature -> top-k -> top-p. The order
matters: top-k after temperature keeps the same tokens, but top-p after temperature keeps a different set.

Who checks what (each argument once per ``generate`` call, before the first step): a processor's constructor
checks the arguments only that processor reads (temperature, top_k, top_p, min_tokens_to_keep, repetition_penalty,
no_repeat_ngram_size); that is its contract, and it guards direct use too, so ``generate.validate`` does not repeat
those rules. Lengths and token ids (MinLength, MinNewTokens, ForcedBOS, ForcedEOS) are ``generate``'s: it resolves
them and checks them against the vocabulary, which no processor knows, and these processors trust what they get.
"""
import math

import numpy as np

from ..core.backend import get_array_module
from ..core.errors import GenerationError
from ..core.inputs import is_int, is_number

NEG_INF = -math.inf  # the filter value: a token with score -inf has probability exactly 0


def eos_ids(eos_token_id):
    """``None``, an id or a list of ids -> ``None`` or a list of ints (transformers accepts all three)."""
    if eos_token_id is None:
        return None
    if isinstance(eos_token_id, (list, tuple)):
        return list(eos_token_id)
    return [eos_token_id]


def _token_mask(ids, vocab_size, xp):
    """Boolean ``[V]`` that is True at ``ids``; ids outside the scores' vocabulary are ignored, as in transformers."""
    mask = xp.zeros(vocab_size, dtype=bool)
    inside = [i for i in ids if 0 <= i < vocab_size]
    if inside:
        mask[xp.asarray(inside)] = True
    return mask


def _forced(scores, ids):
    """Scores that allow only ``ids``: 0 there, -inf everywhere else (transformers' forced-token rule)."""
    xp = get_array_module(scores)
    row = xp.where(_token_mask(ids, scores.shape[-1], xp), 0.0, NEG_INF).astype(scores.dtype)  # [V]
    return xp.repeat(row[None], scores.shape[0], axis=0)  # [N, V]


def _remove(scores, mask):
    """``scores`` with -inf where ``mask`` (``[V]`` or ``[N, V]``) is True; a new array, same dtype."""
    xp = get_array_module(scores)
    return xp.where(mask, NEG_INF, scores).astype(scores.dtype, copy=False)


def _positive_int(name, value):
    if not is_int(value) or value < 1:
        raise GenerationError(f"`{name}` has to be a positive integer, but is {value!r}")
    return int(value)


# ---- length constraints ---------------------------------------------------------------------------------------

class MinLength:
    """Ban eos while the whole decoder sequence (start token included) is shorter than ``min_length``."""

    def __init__(self, min_length, eos_token_id):
        self.min_length = min_length
        self.eos = eos_ids(eos_token_id)

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] >= self.min_length:
            return scores
        xp = get_array_module(scores)
        return _remove(scores, _token_mask(self.eos, scores.shape[-1], xp))


class MinNewTokens:
    """Ban eos until ``min_new_tokens`` tokens follow the prompt (for an encoder-decoder: the start token)."""

    def __init__(self, prompt_length, min_new_tokens, eos_token_id):
        self.prompt_length, self.min_new_tokens = prompt_length, min_new_tokens
        self.eos = eos_ids(eos_token_id)

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] - self.prompt_length >= self.min_new_tokens:
            return scores
        xp = get_array_module(scores)
        return _remove(scores, _token_mask(self.eos, scores.shape[-1], xp))


class ForcedBOS:
    """Force ``bos_token_id`` as the first generated token (when the sequence is just the start token)."""

    def __init__(self, bos_token_id):
        self.bos = [bos_token_id]

    def __call__(self, input_ids, scores):
        return _forced(scores, self.bos) if input_ids.shape[-1] == 1 else scores


class ForcedEOS:
    """Force eos as the last token: at ``cur_len == max_length - 1`` only eos (any of a list) is allowed."""

    def __init__(self, max_length, eos_token_id):
        self.max_length = max_length
        self.eos = eos_ids(eos_token_id)

    def __call__(self, input_ids, scores):
        return _forced(scores, self.eos) if input_ids.shape[-1] == self.max_length - 1 else scores


# ---- repetition -----------------------------------------------------------------------------------------------

class RepetitionPenalty:
    """Make every token already in the sequence less likely: a score s becomes s / penalty if s > 0, else
    s * penalty (CTRL's rule; dividing a negative score would *raise* it). Applied once per distinct token."""

    def __init__(self, penalty):
        if not is_number(penalty) or not penalty > 0:
            raise GenerationError(f"`repetition_penalty` has to be a strictly positive float, but is {penalty!r}")
        self.penalty = float(penalty)

    def __call__(self, input_ids, scores):
        xp = get_array_module(scores)
        n, v = scores.shape
        # Why the spare column: ids past the scores' vocabulary (an embedding larger than the LM head) land there
        # and are dropped, as transformers does.
        padded = xp.concatenate([scores, xp.zeros((n, 1), dtype=scores.dtype)], axis=1)  # [N, V + 1]
        ids = xp.minimum(input_ids, v)
        rows = xp.arange(n)[:, None]
        seen = padded[rows, ids]  # [N, cur_len]
        padded[rows, ids] = xp.where(seen < 0, seen * self.penalty, seen / self.penalty)  # repeats write equal values
        return padded[:, :v]


class NoRepeatNGram:
    """Ban any token that would complete an n-gram already present in the sequence (n = ``ngram_size``).

    The next token completes an n-gram whose first n-1 tokens are the current suffix; so every earlier window of n
    tokens whose first n-1 tokens equal that suffix bans its last token.
    """

    def __init__(self, ngram_size):
        self.n = _positive_int("no_repeat_ngram_size", ngram_size)

    def __call__(self, input_ids, scores):
        n_rows, cur_len = input_ids.shape
        if cur_len < self.n:
            return scores  # no complete n-gram yet
        xp = get_array_module(scores)
        v = scores.shape[-1]
        starts = xp.arange(cur_len - self.n + 1)[:, None] + xp.arange(self.n)[None, :]  # [W, n]
        windows = input_ids[:, starts]  # [N, W, n]: every n-gram so far
        suffix = input_ids[:, cur_len + 1 - self.n:]  # [N, n-1] (empty for n = 1: every window matches)
        matches = (windows[..., :-1] == suffix[:, None, :]).all(axis=-1)  # [N, W]
        banned = xp.zeros((n_rows, v + 1), dtype=bool)  # spare column v: where non-matching windows point
        banned[xp.arange(n_rows)[:, None], xp.where(matches, xp.minimum(windows[..., -1], v), v)] = True
        return _remove(scores, banned[:, :v])


# ---- sampling warpers -----------------------------------------------------------------------------------------

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
        xp = get_array_module(scores)
        v = scores.shape[-1]
        k = min(self.top_k, v)
        kth = xp.partition(scores, v - k, axis=-1)[:, v - k:v - k + 1]  # [N, 1]: the k-th highest score
        return _remove(scores, scores < kth)


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
        n = scores.shape[0]
        # Why a stable ascending sort: among tied scores at the boundary, the lower id is dropped first. (In
        # transformers that choice is left to torch's unstable sort; the number of tokens kept is the same.)
        stable = {"kind": "stable"} if xp is np else {}  # CuPy's sort is always stable and refuses `kind`
        order = xp.argsort(scores, axis=-1, **stable)  # [N, V], ascending
        ascending = xp.take_along_axis(scores, order, axis=-1)
        probs = xp.exp(ascending - ascending[:, -1:])
        probs /= probs.sum(axis=-1, keepdims=True)  # float32 softmax, as transformers computes it
        # Why float64 accumulation: torch's CPU cumsum accumulates float32 in double, so this matches it at the edge.
        cumulative = xp.cumsum(probs.astype(xp.float64), axis=-1).astype(scores.dtype, copy=False)
        remove_sorted = cumulative <= scores.dtype.type(1 - self.top_p)
        remove_sorted[:, -self.min_tokens_to_keep:] = False
        remove = xp.empty_like(remove_sorted)
        remove[xp.arange(n)[:, None], order] = remove_sorted  # back to vocabulary order
        return _remove(scores, remove)


# ---- the list ---------------------------------------------------------------------------------------------------

class LogitsProcessorList(list):
    """Processors applied in order: ``scores = processors(input_ids, scores)``."""

    def __call__(self, input_ids, scores):
        for processor in self:
            scores = processor(input_ids, scores)
        return scores


def _off(value, neutral):
    """True when a setting is unset (None) or at its neutral value (transformers skips the processor then)."""
    return value is None or value == neutral


def build_logits_processors(config, *, prompt_length=1):
    """The processors a resolved ``GenerationConfig`` (``generate.prepare_config``'s) asks for, in transformers 5's
    ``_get_logits_processor`` order:

        RepetitionPenalty, NoRepeatNGram, MinLength, MinNewTokens, ForcedBOS, ForcedEOS,
        and only with ``do_sample``: Temperature, TopK, TopP.

    ``max_length`` and ``min_length`` are read as resolved (the ``prompt_length`` decoder tokens included). Any
    setting other than unset (None) or neutral builds its processor, whose constructor checks it.
    """
    eos = eos_ids(config.eos_token_id)
    processors = LogitsProcessorList()
    if not _off(config.repetition_penalty, 1.0):
        processors.append(RepetitionPenalty(config.repetition_penalty))
    if not _off(config.no_repeat_ngram_size, 0):
        processors.append(NoRepeatNGram(config.no_repeat_ngram_size))
    if eos is not None and not _off(config.min_length, 0):
        processors.append(MinLength(config.min_length, eos))
    if eos is not None and not _off(config.min_new_tokens, 0):
        processors.append(MinNewTokens(prompt_length, config.min_new_tokens, eos))
    if config.forced_bos_token_id is not None:
        processors.append(ForcedBOS(config.forced_bos_token_id))
    if config.forced_eos_token_id is not None:
        processors.append(ForcedEOS(config.max_length, config.forced_eos_token_id))

    if config.do_sample:
        # Why more than one token with beams: each beam needs a non-eos continuation to explore, whatever eos is.
        keep = 1 if (config.num_beams or 1) <= 1 else (len(eos) + 1 if eos is not None else 2)
        if not _off(config.temperature, 1.0):
            processors.append(Temperature(config.temperature))
        if not _off(config.top_k, 0):
            processors.append(TopK(config.top_k, min_tokens_to_keep=keep))
        if not _off(config.top_p, 1.0):  # transformers: top_p < 1.0; the same list for every valid top_p
            processors.append(TopP(config.top_p, min_tokens_to_keep=keep))
    return processors
