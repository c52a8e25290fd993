"""Logits processors: the small rules that reshape next-token scores before a token is chosen.

Each decoding step of ``generate`` computes scores ``[N, V]`` for the next token of N sequences, then passes them
through a list of processors, in order, and only then picks a token (argmax, a draw, or the best beams):

    scores = processors(input_ids, scores)     # input_ids [N, cur_len]: the decoder sequences so far

Every processor is a pure callable ``(input_ids, scores) -> scores``: it never writes into the array it was given,
so the caller's logits stay intact (they may be a view into the decoder's output). They run on NumPy or CuPy
arrays alike (``get_array_module``). ``input_ids`` include the decoder start token, so for an encoder-decoder model
``cur_len`` is 1 at the first step: the "prompt" of the decoder is that one token.

The rules are those of transformers' ``generation/logits_process.py`` with the same arguments and edge cases
(ties, ``min_tokens_to_keep``, ``-inf`` as the filter value, eos given as one id or a list). They live in four
files, read in this order:

    logits_process.py   this one: the shared helpers, the list, and the constraints on lengths, forced tokens,
                        repetition (of the decoder's own tokens and of the source's), suppressed tokens and the
                        exponential length penalty
    sequence_bias.py    additive biases on token sequences, and the banned sequences (bad_words_ids) built on them
    warpers.py          the sampling "warpers": temperature, top-k, top-p, min-p, typical, epsilon, eta, and the
                        final log-softmax (renormalize_logits)
    processors.py       ``build_logits_processors``: which of them a config asks for, in transformers' order

Who checks what (each argument once per ``generate`` call, before the first step): a processor's constructor
checks the arguments only that processor reads (temperature, top_k, top_p, repetition_penalty, bad_words_ids, ...);
that is its contract, and it guards direct use too, so ``generate.validate`` does not repeat those rules. Lengths
and the special token ids (MinLength, MinNewTokens, ForcedBOS, ForcedEOS, eos) are ``generate``'s: it resolves them
and checks them against the vocabulary, and these processors trust what they get. A processor whose ids must lie
inside the vocabulary (sequence biases) is told its size when it is made.
"""
import math

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


def _positive_float(name, value):
    if not is_number(value) or not value > 0:
        raise GenerationError(f"`{name}` has to be a strictly positive float, but is {value!r}")
    return float(value)


def token_id_list(name, ids):
    """``ids`` as a list of ints, or GenerationError unless it is a list (or tuple) of non-negative integers."""
    if not isinstance(ids, (list, tuple)) or not all(is_int(i) and i >= 0 for i in ids):
        raise GenerationError(f"`{name}` has to be a list of token ids (integers >= 0), but is {ids!r}")
    return [int(i) for i in ids]


def _expand_rows(rows, n):
    """Source rows ``[B, ...]`` repeated for the ``n`` decoder rows (each source's ``n // B`` beams or samples are
    adjacent, as ``generate`` lays them out)."""
    xp = get_array_module(rows)
    return rows if rows.shape[0] == n else xp.repeat(rows, n // rows.shape[0], axis=0)


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
        self.penalty = _positive_float("repetition_penalty", penalty)

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
        cur_len = input_ids.shape[1]
        if cur_len < self.n:
            return scores  # no complete n-gram yet
        xp = get_array_module(scores)
        starts = xp.arange(cur_len - self.n + 1)[:, None] + xp.arange(self.n)[None, :]  # [W, n]
        return _ban_continuations(scores, input_ids[:, starts], input_ids[:, cur_len + 1 - self.n:])


def _ban_continuations(scores, windows, suffix):
    """Scores with -inf at the last token of every n-gram in ``windows`` ``[N, W, n]`` whose first n-1 tokens equal
    the row's ``suffix`` ``[N, n-1]`` (empty for n = 1: every window matches)."""
    xp = get_array_module(scores)
    n_rows, v = scores.shape
    matches = (windows[..., :-1] == suffix[:, None, :]).all(axis=-1)  # [N, W]
    banned = xp.zeros((n_rows, v + 1), dtype=bool)  # spare column v: where non-matching windows point
    banned[xp.arange(n_rows)[:, None], xp.where(matches, xp.minimum(windows[..., -1], v), v)] = True
    return _remove(scores, banned[:, :v])


# ---- repeating the source -------------------------------------------------------------------------------------

class EncoderRepetitionPenalty:
    """RepetitionPenalty's rule turned around, for the tokens of the *source*: with ``penalty`` > 1 they become
    more likely (a score s becomes s * penalty if s > 0, else s / penalty), against hallucination in summaries."""

    def __init__(self, penalty, encoder_input_ids):
        # Why the inverse: transformers stores 1 / penalty and then applies RepetitionPenalty's arithmetic with it.
        self.inverse = 1 / _positive_float("encoder_repetition_penalty", penalty)
        self.encoder_input_ids = encoder_input_ids  # [B, S], checked by model.start_decoding

    def __call__(self, input_ids, scores):
        xp = get_array_module(scores)
        n, v = scores.shape
        source = xp.minimum(_expand_rows(self.encoder_input_ids, n), v)  # [N, S]; ids past V -> spare column
        padded = xp.concatenate([scores, xp.zeros((n, 1), dtype=scores.dtype)], axis=1)  # [N, V + 1]
        rows = xp.arange(n)[:, None]
        seen = padded[rows, source]  # [N, S]
        padded[rows, source] = xp.where(seen < 0, seen * self.inverse, seen / self.inverse)
        return padded[:, :v]


class EncoderNoRepeatNGram:
    """Ban any token that would complete an n-gram of the row's *source* (n = ``ngram_size``): the decoder may not
    copy ``ngram_size`` source tokens in a row."""

    def __init__(self, ngram_size, encoder_input_ids):
        self.n = _positive_int("encoder_no_repeat_ngram_size", ngram_size)
        self.encoder_input_ids = encoder_input_ids  # [B, S], checked by model.start_decoding

    def __call__(self, input_ids, scores):
        source = self.encoder_input_ids
        cur_len, src_len = input_ids.shape[1], source.shape[1]
        if cur_len < self.n - 1 or src_len < self.n:
            return scores  # no suffix of n-1 tokens yet, or no source n-gram at all
        xp = get_array_module(scores)
        starts = xp.arange(src_len - self.n + 1)[:, None] + xp.arange(self.n)[None, :]  # [W, n]
        windows = _expand_rows(source, scores.shape[0])[:, starts]  # [N, W, n]: every source n-gram
        return _ban_continuations(scores, windows, input_ids[:, cur_len + 1 - self.n:])


# ---- suppressed tokens and the length penalty -------------------------------------------------------------------

class SuppressTokens:
    """Never choose ``suppress_tokens`` (-inf at every step); ids outside the vocabulary are ignored."""

    def __init__(self, suppress_tokens):
        self.ids = token_id_list("suppress_tokens", suppress_tokens)

    def __call__(self, input_ids, scores):
        return _remove(scores, _token_mask(self.ids, scores.shape[-1], get_array_module(scores)))


class SuppressTokensAtBegin:
    """Suppress ``begin_suppress_tokens`` at one step only: when the sequences are ``begin_index`` tokens long (for
    an encoder-decoder the first generated token, or the second when ForcedBOS forces the first)."""

    def __init__(self, begin_suppress_tokens, begin_index):
        self.ids = token_id_list("begin_suppress_tokens", begin_suppress_tokens)
        self.begin_index = begin_index

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] != self.begin_index:
            return scores
        return _remove(scores, _token_mask(self.ids, scores.shape[-1], get_array_module(scores)))


class ExponentialDecayLengthPenalty:
    """After ``start_index`` generated tokens, raise eos's score by ``|s| * (decay_factor ** k - 1)`` at the k-th
    token past it, so that sequences end softly near a length instead of being cut at max_length."""

    def __init__(self, exponential_decay_length_penalty, eos_token_id, prompt_length):
        pair = exponential_decay_length_penalty
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2 or not is_int(pair[0]) or pair[0] < 0
                or not is_number(pair[1])):
            raise GenerationError("`exponential_decay_length_penalty` has to be a pair (start_index, decay_factor) "
                                  f"of an integer >= 0 and a number, but is {pair!r}")
        if eos_token_id is None:
            raise GenerationError("`exponential_decay_length_penalty` raises the score of eos, but no "
                                  "`eos_token_id` is set")
        self.start = int(pair[0]) + prompt_length
        self.factor = float(pair[1])
        self.eos = eos_ids(eos_token_id)

    def __call__(self, input_ids, scores):
        cur_len = input_ids.shape[-1]
        if cur_len <= self.start:
            return scores
        xp = get_array_module(scores)
        eos = xp.asarray(self.eos)
        at_eos = scores[:, eos]  # [N, n_eos]
        # abs(): a negative score is raised too (multiplying it by a factor > 1 would lower it)
        penalty = xp.abs(at_eos) * (self.factor ** (cur_len - self.start) - 1)
        penalties = xp.zeros_like(scores)
        penalties[:, eos] = xp.where(xp.isfinite(at_eos), penalty, 0.0).astype(scores.dtype)
        return scores + penalties


# ---- the list ---------------------------------------------------------------------------------------------------

class LogitsProcessorList(list):
    """Processors applied in order: ``scores = processors(input_ids, scores)``."""

    def __call__(self, input_ids, scores):
        for processor in self:
            scores = processor(input_ids, scores)
        return scores
