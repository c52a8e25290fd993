"""Which logits processors a generation config asks for, in the order transformers 5's ``_get_logits_processor``
builds them (the order matters: top-k after temperature keeps the same tokens, but top-p after temperature keeps
a different set):

    SequenceBias, EncoderRepetitionPenalty, RepetitionPenalty, NoRepeatNGram, EncoderNoRepeatNGram, NoBadWords,
    MinLength, MinNewTokens, ForcedBOS, ForcedEOS, ExponentialDecayLengthPenalty, SuppressTokens,
    SuppressTokensAtBegin,
    and only with ``do_sample``: Temperature, TopK, TopP, MinP, Typical, Epsilon, Eta,
    and last, with ``renormalize_logits``: LogitNormalization.

Any setting other than unset (None) or its neutral value builds its processor, whose constructor checks it (so
``top_p=1.5`` is refused, where transformers would skip the processor).
"""
import warnings

from ..core.errors import GenerationError
from .logits_process import (EncoderNoRepeatNGram, EncoderRepetitionPenalty, ExponentialDecayLengthPenalty,
                             ForcedBOS, ForcedEOS, LogitsProcessorList, MinLength, MinNewTokens, NoRepeatNGram,
                             RepetitionPenalty, SuppressTokens, SuppressTokensAtBegin, eos_ids)
from .sequence_bias import NoBadWords, SequenceBias
from .warpers import Epsilon, Eta, LogitNormalization, MinP, Temperature, TopK, TopP, Typical


def _off(value, neutral):
    """True when a setting is unset (None) or at its neutral value (transformers skips the processor then)."""
    return value is None or value == neutral


def build_logits_processors(config, *, prompt_length=1, encoder_input_ids=None, vocab_size=None):
    """The processors a resolved ``GenerationConfig`` (``generate.prepare_config``'s) asks for, in order.

    ``max_length`` and ``min_length`` are read as resolved (the ``prompt_length`` decoder tokens included).
    ``encoder_input_ids`` ``[B, S]`` are the sources the encoder-repetition processors read (None when generate was
    handed ``encoder_outputs`` only: those settings are then ignored with a warning, as transformers does);
    ``vocab_size`` is the decoder's, against which the ids of sequence biases are checked.
    """
    eos = eos_ids(config.eos_token_id)
    processors = LogitsProcessorList()
    if config.sequence_bias is not None:
        processors.append(SequenceBias(config.sequence_bias, vocab_size=vocab_size))
    if not _off(config.encoder_repetition_penalty, 1.0):
        if _needs_sources("encoder_repetition_penalty", encoder_input_ids):
            processors.append(EncoderRepetitionPenalty(config.encoder_repetition_penalty, encoder_input_ids))
    if not _off(config.repetition_penalty, 1.0):
        processors.append(RepetitionPenalty(config.repetition_penalty))
    if not _off(config.no_repeat_ngram_size, 0):
        processors.append(NoRepeatNGram(config.no_repeat_ngram_size))
    if not _off(config.encoder_no_repeat_ngram_size, 0):
        if _needs_sources("encoder_no_repeat_ngram_size", encoder_input_ids):
            processors.append(EncoderNoRepeatNGram(config.encoder_no_repeat_ngram_size, encoder_input_ids))
    if config.bad_words_ids is not None:
        processors.append(NoBadWords(config.bad_words_ids, eos, vocab_size=vocab_size))
    if eos is not None and not _off(config.min_length, 0):
        processors.append(MinLength(config.min_length, eos))
    if eos is not None and not _off(config.min_new_tokens, 0):
        processors.append(MinNewTokens(prompt_length, config.min_new_tokens, eos))
    if config.forced_bos_token_id is not None:
        processors.append(ForcedBOS(config.forced_bos_token_id))
    if config.forced_eos_token_id is not None:
        processors.append(ForcedEOS(config.max_length, config.forced_eos_token_id))
    if config.exponential_decay_length_penalty is not None:
        processors.append(ExponentialDecayLengthPenalty(config.exponential_decay_length_penalty, eos, prompt_length))
    if config.suppress_tokens is not None:
        processors.append(SuppressTokens(config.suppress_tokens))
    if config.begin_suppress_tokens is not None:
        # Why + 1 with a forced first token: suppressing at the step ForcedBOS owns would do nothing.
        begin = prompt_length + (1 if prompt_length == 1 and config.forced_bos_token_id is not None else 0)
        processors.append(SuppressTokensAtBegin(config.begin_suppress_tokens, begin))
    if config.do_sample:
        processors.extend(_warpers(config, eos))
    if config.renormalize_logits not in (None, False, True):
        raise GenerationError(f"`renormalize_logits` must be True or False, got {config.renormalize_logits!r}")
    if config.renormalize_logits:
        processors.append(LogitNormalization())
    return processors


def _warpers(config, eos):
    # Why more than one token with beams: each beam needs a non-eos continuation to explore, whatever eos is.
    keep = 1 if (config.num_beams or 1) <= 1 else (len(eos) + 1 if eos is not None else 2)
    warpers = []
    if not _off(config.temperature, 1.0):
        warpers.append(Temperature(config.temperature))
    if not _off(config.top_k, 0):
        warpers.append(TopK(config.top_k, min_tokens_to_keep=keep))
    if not _off(config.top_p, 1.0):  # transformers: top_p < 1.0; the same list for every valid top_p
        warpers.append(TopP(config.top_p, min_tokens_to_keep=keep))
    if config.min_p is not None:
        warpers.append(MinP(config.min_p, min_tokens_to_keep=keep))
    if not _off(config.typical_p, 1.0):
        warpers.append(Typical(config.typical_p, min_tokens_to_keep=keep))
    if not _off(config.epsilon_cutoff, 0.0):
        warpers.append(Epsilon(config.epsilon_cutoff, min_tokens_to_keep=keep))
    if not _off(config.eta_cutoff, 0.0):
        warpers.append(Eta(config.eta_cutoff, min_tokens_to_keep=keep))
    return warpers


def _needs_sources(name, encoder_input_ids):
    if encoder_input_ids is None:
        warnings.warn(f"Passing `{name}` requires some form of `input_ids` to be passed to `generate`, ignoring "
                      "the argument.", UserWarning, stacklevel=6)  # at model.generate's caller
        return False
    return True
