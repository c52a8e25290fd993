"""Biases on token sequences (``sequence_bias``) and banned sequences (``bad_words_ids``), as transformers'.

A biased sequence ``[t1, ..., tk]`` with bias b adds b to the score of its *last* token ``tk`` at every step where
the sequence so far ends with ``t1 .. t(k-1)``: the step that would complete it. A one-token sequence is biased at
every step. Banning a sequence is biasing it by -inf, so ``NoBadWords`` is a ``SequenceBias``.

    sequence_bias = [[[10, 45], -2.0], [[64], -7.5]]     # transformers' list form (JSON can hold it)
    sequence_bias = {(10, 45): -2.0, (64,): -7.5}       # the dict form transformers also accepts
    bad_words_ids = [[10, 45], [64]]

Biases that fall on the same token at the same step add up, in the order transformers adds them: one-token
sequences first, then the longer ones grouped by length, each group in the order given.
"""
import math

from ..core.backend import get_array_module
from ..core.errors import GenerationError
from ..core.inputs import is_int, is_number
from .logits_process import eos_ids


def _checked_sequence(name, ids, vocab_size):
    """One biased sequence as a tuple of ints, or GenerationError naming ``name``."""
    if not isinstance(ids, (list, tuple)) or not ids or not all(is_int(i) and i >= 0 for i in ids):
        raise GenerationError(f"each sequence of `{name}` has to be a non-empty list of token ids (integers >= 0), "
                              f"but one is {ids!r}")
    outside = [i for i in ids if vocab_size is not None and i >= vocab_size]
    if outside:
        raise GenerationError(f"`{name}` holds token id(s) {outside} outside the decoder's vocabulary "
                              f"[0, {vocab_size})")
    return tuple(int(i) for i in ids)


def _bias_dict(sequence_bias, vocab_size):
    """transformers' two forms (a list of ``[ids, bias]`` pairs, or a dict ``{tuple(ids): bias}``) -> one dict."""
    pairs = sequence_bias.items() if isinstance(sequence_bias, dict) else sequence_bias
    if not isinstance(sequence_bias, (dict, list, tuple)) or not sequence_bias:
        raise GenerationError("`sequence_bias` has to be a non-empty list of [token ids, bias] pairs (or a dict "
                              f"from tuples of token ids to biases), but is {sequence_bias!r}")
    biases = {}
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not is_number(pair[1]):
            raise GenerationError(f"each entry of `sequence_bias` has to be a pair [token ids, bias] with a number "
                                  f"as the bias, but one is {pair!r}")
        biases[_checked_sequence("sequence_bias", pair[0], vocab_size)] = float(pair[1])
    return biases


class SequenceBias:
    """Add each sequence's bias to its last token's score when the sequence so far ends with the rest of it.

    ``vocab_size``, when given, is checked against every id (transformers checks at the first step); ids are
    otherwise assumed to lie inside the scores' vocabulary.
    """

    def __init__(self, sequence_bias, *, vocab_size=None):
        self._group(_bias_dict(sequence_bias, vocab_size))

    def _group(self, biases):
        """``{ids: bias}`` -> the one-token biases and the longer ones grouped by prefix length."""
        self.single = {ids[0]: bias for ids, bias in biases.items() if len(ids) == 1}
        groups = {}  # prefix length -> [(prefix, last token, bias)], in the order given
        for ids, bias in biases.items():
            if len(ids) > 1:
                groups.setdefault(len(ids) - 1, []).append((ids[:-1], ids[-1], bias))
        self.groups = list(groups.values())

    def __call__(self, input_ids, scores):
        xp = get_array_module(scores)
        n, v = scores.shape
        bias = xp.zeros((n, v), dtype=scores.dtype)  # our own array: written in place below
        if self.single:
            bias[:, xp.asarray(list(self.single))] = xp.asarray(list(self.single.values()), dtype=scores.dtype)
        cur_len = input_ids.shape[1]
        for group in self.groups:
            prefix_length = len(group[0][0])
            if prefix_length > cur_len:
                continue  # the prefix is longer than the sequence so far
            prefixes = xp.asarray([prefix for prefix, _, _ in group])  # [G, p]
            matching = (input_ids[:, None, -prefix_length:] == prefixes[None]).all(axis=-1)  # [N, G]
            for g, (_, last, value) in enumerate(group):  # one at a time: equal last tokens add up
                bias[:, last] += xp.where(matching[:, g], scores.dtype.type(value), scores.dtype.type(0))
        return scores + bias


class NoBadWords(SequenceBias):
    """Never complete any of ``bad_words_ids`` (a bias of -inf). A one-token entry that is an eos id is dropped,
    as transformers does: banning eos is min_length's job."""

    def __init__(self, bad_words_ids, eos_token_id=None, *, vocab_size=None):
        if not isinstance(bad_words_ids, (list, tuple)) or not bad_words_ids:
            raise GenerationError(f"`bad_words_ids` has to be a non-empty list of lists of token ids, but is "
                                  f"{bad_words_ids!r}")
        sequences = [_checked_sequence("bad_words_ids", ids, vocab_size) for ids in bad_words_ids]
        eos = eos_ids(eos_token_id) or []
        kept = [ids for ids in sequences if not (len(ids) == 1 and ids[0] in eos)]
        self._group({ids: -math.inf for ids in kept})  # why not super().__init__: these are checked already
