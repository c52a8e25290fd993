"""Generation: greedy decoding and multinomial sampling over the KV cache (beam search is in beam_search.py).

    cache = model.start_decoding(input_ids, attention_mask)    # encode each source once
    sequences = [[start]] * N
    repeat:
        logits = model.decode_step(newest tokens, cache)        # [N, V]: one position of work per step
        scores = processors(sequences, logits)                  # penalties, constraints, then warpers
        tokens = argmax(scores) or a draw from softmax(scores)  # [N]
        rows that already ended get pad_token_id instead
    until every row has produced eos, or sequences reach max_length

It is built from small named parts (STYLE lesson 11): ``prepare_config`` turns arguments into one resolved
``GenerationConfig`` or raises ``GenerationError``; ``plan`` adds the score rules (``build_logits_processors``,
processors.py), the stopping criteria beyond eos (stopping.py) and a given encoding (``encoder_outputs``,
sources.py); ``encode_sources`` runs the encoder once; ``make_step`` is the step function, cached or not;
``choose_tokens`` is argmax or an inverse-CDF draw with an explicit ``numpy.random.Generator``; ``decode`` is the
loop, yielding each step's tokens, which both ``generate`` (collect them) and ``generate_stream`` (hand them out as
they come) consume. ``generate`` decodes through a fused decoder step where it can (kernel_path.py): CUDA kernels
replayed from graphs on a GPU, the fused CPU forms without the autograd on the CPU (``cuda_graph=False``: the
eager step): the same loops, the logits from another step function.

One boundary: every argument is resolved and checked once per call, before the first step, and nothing deeper
checks it again. ``validate`` checks what generate itself reads (lengths, beams, seed, token ids against the
vocabulary); each processor's constructor checks the arguments only it reads (see logits_process.py);
``model.start_decoding`` converts and checks ``input_ids`` and ``attention_mask`` (core/inputs.py).

The semantics are those of transformers 5.24 for an encoder-decoder model, whose decoder "prompt" is the single
start token (length 1):
- ``max_new_tokens`` wins over ``max_length``: ``max_length = max_new_tokens + 1``. When neither the arguments
  nor the config set a length, 20 new tokens are generated (``max_length`` 21); a set ``max_length`` counts the
  start token. ``min_new_tokens`` likewise becomes ``min_length = min_new_tokens + 1``.
- A row that produced eos, or that a stopping criterion (``stop_strings``, ``max_time``) ends, is finished: every
  later token of it is ``pad_token_id`` (eos itself when no pad is set). Without an eos id nothing is padded: a
  finished row goes on producing tokens until every row is finished or max_length (transformers' quirk).
- ``do_sample`` with ``num_beams > 1`` is beam sampling (beam_search.py): candidates drawn, not the best taken.
- With sampling and ``num_return_sequences = k`` each source row is repeated k times, interleaved
  (row0, row0, row1, row1, ...), as transformers' ``_expand_inputs_for_generation`` does.
"""
import copy
import dataclasses
import time
import warnings

import numpy as np

from ..core.errors import GenerationError
from ..core.inputs import is_int, is_number
from ..nn.cache import DecoderCache
from ..nn.record import NOT_RECORDING, Records, Recording, as_tuple
from . import kernel_path
from .beam_search import beam_search, candidates_per_beam
from .config import GENERATION_DEFAULTS, GenerationConfig
from .logits_process import LogitsProcessorList, eos_ids
from .processors import build_logits_processors
from .sampling import choose_tokens
from .sources import encode_sources, encoder_hidden_states, encoder_input_ids
from .stopping import StoppingCriteria, build_stopping_criteria

GENERATE_ARGS = frozenset(GenerationConfig.defaults) | {"seed"}  # generate(**kwargs), besides tokenizer= and
# encoder_outputs=, which are inputs rather than settings (as in transformers)
DEFAULT_MAX_LENGTH = GENERATION_DEFAULTS["max_length"]  # 20 new tokens when no length is set
# Fields the code branches on, and what None there means (the default):
NONE_MEANS = {"max_length": DEFAULT_MAX_LENGTH, "do_sample": False, "num_beams": 1, "num_return_sequences": 1,
              "min_length": 0, "use_cache": True, "length_penalty": 1.0, "early_stopping": False,
              "output_scores": False, "output_attentions": False, "output_hidden_states": False,
              "return_dict_in_generate": False}
# transformers features this engine does not implement, with the value that leaves them off: a config that turns
# one on is refused rather than silently decoded differently.
# (Group beam search, contrastive search, DoLa and constrained beam search are Hub "custom_generate" methods in
# transformers 5; classifier-free guidance needs a second, unconditional decoder pass; top_h and
# remove_invalid_values are simply not built. None of them is an argument generate takes.)
UNSUPPORTED = {"num_beam_groups": 1, "diversity_penalty": 0.0, "penalty_alpha": None, "top_h": None,
               "force_words_ids": None, "constraints": None, "guidance_scale": 1.0, "remove_invalid_values": False,
               "dola_layers": None}


@dataclasses.dataclass
class GenerateOutput:
    """What ``generate(..., return_dict_in_generate=True)`` returns.

    ``sequences`` ``[N, out_len]``; ``scores`` (with ``output_scores=True``) a tuple with one ``[N, V]`` array per
    step of the *processed* scores the tokens were chosen from; ``sequences_scores`` ``[N]`` for beam search.

    With ``output_attentions`` / ``output_hidden_states``, as transformers' GenerateEncoderDecoderOutput: the
    encoder's, once, for the B sources (not repeated per returned sequence or beam): ``encoder_attentions`` (one
    ``[B, nh, S, S]`` per layer), ``encoder_hidden_states`` (num_layers + 1 ``[B, S, C]``); the decoder's, a tuple
    over the steps, each a tuple over the layers: ``decoder_attentions`` ``[N, nh, t, P]``, ``cross_attentions``
    ``[N, nh, t, S]``, ``decoder_hidden_states`` (num_layers + 1 ``[N, t, C]``), where t is 1 with the KV cache
    (the whole prefix without it) and P the positions decoded so far; N counts beams in beam search.
    """

    sequences: object
    scores: tuple = None
    sequences_scores: object = None
    encoder_attentions: tuple = None
    encoder_hidden_states: tuple = None
    decoder_attentions: tuple = None
    cross_attentions: tuple = None
    decoder_hidden_states: tuple = None


# ---- arguments -> one resolved config -------------------------------------------------------------------------

def prepare_config(model, generation_config=None, **kwargs):
    """``model.generation_config`` (or ``generation_config``), overridden by ``kwargs``, resolved and validated.

    In the result ``max_length`` and ``min_length`` count the whole decoder sequence (start token included),
    ``decoder_start_token_id`` and ``pad_token_id`` are set, and ``seed`` is the sampling seed (or None). The
    processors' own arguments are checked when ``build_logits_processors`` makes them from this config.
    """
    unknown = sorted(set(kwargs) - GENERATE_ARGS)
    if unknown:
        raise GenerationError(f"generate() got unknown argument(s) {unknown}; "
                              f"generation arguments are {sorted(GENERATE_ARGS)}")
    if generation_config is not None and not isinstance(generation_config, GenerationConfig):
        raise GenerationError(f"generation_config must be a seq2seq.GenerationConfig, "
                              f"got {type(generation_config).__name__}")
    config = copy.deepcopy(model.generation_config)
    if generation_config is not None:  # as transformers: what a given config leaves unset comes from the model's
        for name, value in generation_config.to_diff_dict().items():
            setattr(config, name, copy.deepcopy(value))
    length_is_default = kwargs.get("max_length") is None and config.max_length is None
    for name, value in GENERATION_DEFAULTS.items():  # transformers' global defaults fill what is unset...
        if getattr(config, name, None) is None:
            setattr(config, name, value)
    for name, value in kwargs.items():  # ...then the arguments win, even None (top_k=None: no top-k filter)
        setattr(config, name, value)
    config.seed = kwargs.get("seed", getattr(config, "seed", None))
    for name, value in NONE_MEANS.items():
        if getattr(config, name, None) is None:
            setattr(config, name, value)

    _refuse_unsupported(config)
    _resolve_special_ids(model, config)
    validate(config, vocab_size=model.config.decoder.vocab_size)
    _resolve_lengths(config, length_is_default=length_is_default)
    return config


def _refuse_unsupported(config):
    on = [name for name, off in UNSUPPORTED.items() if getattr(config, name, None) not in (None, off)]
    if on:
        raise GenerationError(f"the generation config turns on {on}, which this engine does not implement")


def _resolve_special_ids(model, config):
    """decoder_start: the config's, else model.config's, else bos (as transformers); pad defaults to eos."""
    for source in (config.decoder_start_token_id, getattr(model.config, "decoder_start_token_id", None),
                   config.bos_token_id):
        if source is not None:
            config.decoder_start_token_id = source
            break
    else:
        raise GenerationError("`decoder_start_token_id` or `bos_token_id` has to be defined for encoder-decoder "
                              "generation: set model.generation_config.decoder_start_token_id (for BERT "
                              "vocabularies the [CLS] id) or pass decoder_start_token_id=...")
    eos = eos_ids(config.eos_token_id)
    if eos == []:
        raise GenerationError("eos_token_id is an empty list: give one id, a list of ids, or None")
    if config.pad_token_id is None and eos is not None:
        config.pad_token_id = eos[0]  # finished rows are then filled with eos, as transformers does


def _resolve_lengths(config, *, length_is_default):
    # Why 21 when nothing is set: transformers 5 then generates 20 *new* tokens, not 20 in all.
    if config.max_new_tokens is not None:
        config.max_length = config.max_new_tokens + 1  # + the decoder start token
    elif length_is_default:
        config.max_length = DEFAULT_MAX_LENGTH + 1
    if config.min_new_tokens is not None:
        config.min_length = config.min_new_tokens + 1
    if config.max_length <= 1:
        raise GenerationError(f"Input length of decoder_input_ids is 1 (the start token), but `max_length` is set "
                              f"to {config.max_length}: increase max_length or, better, set max_new_tokens")
    if config.min_length > config.max_length:
        warnings.warn(f"Unfeasible length constraints: `min_length` ({config.min_length}) is larger than the "
                      f"maximum possible length ({config.max_length}); generation stops at max_length.",
                      UserWarning, stacklevel=4)


def validate(config, *, vocab_size):
    """Raise GenerationError naming the first impossible setting among those generate itself reads (before lengths
    are resolved); the logits processors check their own arguments (see logits_process.py)."""
    def need(ok, message):
        if not ok:
            raise GenerationError(message)

    need(config.do_sample in (True, False), f"`do_sample` must be True or False, got {config.do_sample!r}")
    for name in ("output_attentions", "output_hidden_states"):
        value = getattr(config, name)
        need(isinstance(value, (bool, np.bool_)), f"`{name}` must be True or False, got {value!r}")
    for name in ("num_beams", "num_return_sequences") + (("max_length",) if config.max_new_tokens is None else ()):
        value = getattr(config, name)
        need(is_int(value) and value >= 1, f"`{name}` must be a positive integer, got {value!r}")
    need(config.max_new_tokens is None or (is_int(config.max_new_tokens) and config.max_new_tokens > 0),
         f"`max_new_tokens` must be greater than 0, but is {config.max_new_tokens!r}")
    for name in ("min_length", "min_new_tokens"):
        value = getattr(config, name)
        need(value is None or (is_int(value) and value >= 0),
             f"`{name}` must be a non-negative integer, got {value!r}")
    nrs, beams = config.num_return_sequences, config.num_beams
    if beams == 1:
        need(nrs == 1 or config.do_sample, "Greedy decoding (do_sample=False, num_beams=1) returns one sequence "
             f"per input; got num_return_sequences={nrs}. Set do_sample=True or num_beams >= {nrs}.")
    else:
        need(nrs <= beams, f"`num_return_sequences` ({nrs}) has to be smaller or equal to `num_beams` ({beams}).")
    need(config.seed is None or (is_int(config.seed) and config.seed >= 0),
         f"`seed` must be a non-negative integer or None, got {config.seed!r}")
    need(config.length_penalty is None or is_number(config.length_penalty),
         f"`length_penalty` must be a number, got {config.length_penalty!r}")
    need(config.early_stopping in (True, False, "never"),
         f"`early_stopping` must be a boolean or 'never', but is {config.early_stopping!r}")
    ids = {"decoder_start_token_id": [config.decoder_start_token_id], "pad_token_id": [config.pad_token_id],
           "eos_token_id": eos_ids(config.eos_token_id),
           "forced_bos_token_id": [config.forced_bos_token_id],
           "forced_eos_token_id": eos_ids(config.forced_eos_token_id)}
    for name, values in ids.items():
        for value in values or ():
            need(value is None or (is_int(value) and 0 <= value < vocab_size),
                 f"`{name}` {value!r} is not a token id of the decoder's vocabulary [0, {vocab_size})")
    if beams > 1:
        per_beam = candidates_per_beam(eos_ids(config.eos_token_id))
        need(per_beam <= vocab_size, f"beam search keeps {per_beam} candidates per beam and step (2, or 1 + the "
             f"number of eos ids), but the vocabulary has only {vocab_size} tokens")


# ---- the parts of the loop --------------------------------------------------------------------------------------

def make_step(model, cache, *, use_cache=True):
    """The step function ``sequences [N, t] -> logits [N, V]`` for the token after each sequence.

    With the cache only the newest token of each row is fed (the cache holds the rest). Without it the decoder
    recomputes the whole prefix every step, over the encoder output computed once (transformers' use_cache=False).
    """
    if use_cache:  # the model's decode_step, or a fused step (kernel_path.py) when the cache is one
        def step(sequences):
            return kernel_path.decode_step_logits(model, sequences[:, -1:], cache)  # [N, 1] -> [N, V]
    else:
        def step(sequences):
            fresh = DecoderCache(len(cache.layers), cache.memory, cache.memory_keep, capacity=sequences.shape[1],
                                 copies=cache.copies)  # the encoder side once per source, as in ``cache``
            return model.decode_step(sequences, fresh)  # [N, t] -> [N, V]
    return step


def decode(model, cache, config, processors, *, rng, stopping=None):
    """The greedy/sampling loop over the encoded sources ``cache`` (``encode_sources``): yield ``(tokens [N],
    scores [N, V])`` each step, until all rows end (eos, or ``stopping``) or max_length."""
    xp = model.xp
    step = make_step(model, cache, use_cache=config.use_cache)
    n = cache.batch_size
    fill = config.pad_token_id if config.pad_token_id is not None else 0
    sequences = xp.full((n, config.max_length), fill, dtype=xp.int64)  # written up to `length`
    sequences[:, 0] = config.decoder_start_token_id
    eos = eos_ids(config.eos_token_id)
    eos = None if eos is None else xp.asarray(eos)
    unfinished = xp.ones(n, dtype=bool)
    for length in range(1, config.max_length):
        logits = step(sequences[:, :length]).astype(xp.float32, copy=False)  # [N, V]
        scores = processors(sequences[:, :length], logits)
        tokens = choose_tokens(scores, do_sample=config.do_sample, rng=rng)
        if eos is not None:
            tokens = xp.where(unfinished, tokens, config.pad_token_id)  # finished rows only pad
            unfinished &= ~(tokens[:, None] == eos[None, :]).any(axis=1)  # [N, n_eos] -> [N]
        sequences[:, length] = tokens
        if stopping:
            unfinished &= ~stopping(sequences[:, :length + 1])
        yield tokens, scores
        if not unfinished.any():
            return


# ---- the entry points -----------------------------------------------------------------------------------------

@dataclasses.dataclass
class Plan:
    """What a generate call resolves and checks before the first step: the ``config``, its logits ``processors``
    and ``stopping`` criteria, and ``hidden``, the given encoding ``[B, S, C]`` (``encoder_outputs``) or None."""

    config: GenerationConfig
    processors: LogitsProcessorList
    stopping: StoppingCriteria
    hidden: object = None


def plan(model, input_ids, generation_config, *, tokenizer=None, encoder_outputs=None, **kwargs):
    """Resolve and check every argument of a generate call (see ``Plan``)."""
    start = time.time()  # max_time counts from here
    config = prepare_config(model, generation_config, **kwargs)
    hidden = encoder_hidden_states(model, encoder_outputs)
    reads_sources = (config.encoder_repetition_penalty not in (None, 1.0)
                     or config.encoder_no_repeat_ngram_size not in (None, 0))
    sources = encoder_input_ids(model, input_ids, hidden, needed=reads_sources)
    processors = build_logits_processors(config, encoder_input_ids=sources,
                                         vocab_size=model.config.decoder.vocab_size)
    return Plan(config, processors, build_stopping_criteria(config, tokenizer=tokenizer, start=start), hidden)


def generate(model, input_ids=None, attention_mask=None, generation_config=None, *, tokenizer=None,
             encoder_outputs=None, cuda_graph=None, **kwargs):
    """Generate ``[batch * num_return_sequences, out_len]`` token ids (see the module docstring), starting with
    ``decoder_start_token_id``; with ``return_dict_in_generate=True`` a ``GenerateOutput``.

    ``tokenizer`` is needed for ``stop_strings``; ``encoder_outputs`` replaces encoding ``input_ids`` (sources.py);
    ``cuda_graph``: None (a fused decoder step where one applies: CUDA kernels on a GPU, the CPU step on NumPy),
    False (the eager step), True (the kernel step; on a model the kernels cannot run for it raises): kernel_path.py.
    """
    run = plan(model, input_ids, generation_config, tokenizer=tokenizer, encoder_outputs=encoder_outputs, **kwargs)
    config = run.config
    kernel = kernel_path.choose(model, config, cuda_graph)
    rng = np.random.default_rng(config.seed)
    keep_scores = config.return_dict_in_generate and config.output_scores
    recording = _recording(config)
    with model.record(recording):  # every run of the encoder and of the decoder reports to it
        if config.num_beams > 1:
            result = beam_search(model, input_ids, attention_mask, config, run.processors, hidden=run.hidden,
                                 stopping=run.stopping, rng=rng, kernel=kernel)
            sequences, scores, sequences_scores = result.sequences, result.scores, result.sequences_scores
        else:
            cache = encode_sources(model, input_ids, attention_mask, config, copies=config.num_return_sequences,
                                   hidden=run.hidden, kernel=kernel)
            tokens, scores = [], []
            for step_tokens, step_scores in decode(model, cache, config, run.processors, rng=rng,
                                                   stopping=run.stopping):
                tokens.append(step_tokens)
                if keep_scores:
                    scores.append(step_scores)
            xp = model.xp
            start = xp.full((cache.batch_size, 1), config.decoder_start_token_id, dtype=xp.int64)
            sequences = xp.concatenate([start] + [t[:, None] for t in tokens], axis=1)
            scores, sequences_scores = tuple(scores), None
    if not config.return_dict_in_generate:
        return sequences
    encoder, decoder, layers = recording.encoder, recording.decoder, len(model.decoder.layers)
    return GenerateOutput(sequences=sequences, scores=scores if keep_scores else None,
                          sequences_scores=sequences_scores, encoder_attentions=as_tuple(encoder.attentions),
                          encoder_hidden_states=as_tuple(encoder.hidden_states),
                          decoder_attentions=_per_step(decoder.attentions, layers),
                          cross_attentions=_per_step(decoder.cross_attentions, layers),
                          decoder_hidden_states=_per_step(decoder.hidden_states, layers + 1))


def _recording(config):
    """What generate records: the encoder's run and every decoder step, when the caller asked for a dict with
    attentions or hidden states."""
    if not config.return_dict_in_generate or not (config.output_attentions or config.output_hidden_states):
        return NOT_RECORDING
    flags = dict(attentions=config.output_attentions, hidden_states=config.output_hidden_states)
    return Recording(encoder=Records(**flags), decoder=Records(**flags))


def _per_step(records, size):
    """The decoder's records, ``size`` of them per step (one per layer, or per layer + 1 for hidden states), as a
    tuple over the steps of tuples (None stays None)."""
    if records is None:
        return None
    return tuple(tuple(records[i:i + size]) for i in range(0, len(records), size))


def generate_stream(model, input_ids=None, attention_mask=None, generation_config=None, *, tokenizer=None,
                    encoder_outputs=None, **kwargs):
    """Like ``generate`` (greedy or sampling), but an iterator of each step's tokens ``[N]`` as soon as they are
    chosen (``pad_token_id`` for finished rows). Arguments are checked now, not at the first ``next``."""
    run = plan(model, input_ids, generation_config, tokenizer=tokenizer, encoder_outputs=encoder_outputs, **kwargs)
    config = run.config
    if config.num_beams > 1:
        raise GenerationError("generate_stream works for greedy decoding and sampling only: beam search knows its "
                              "best sequences only at the end; use generate(num_beams=...)")
    cpu = kernel_path.cpu_serves(model, config) and "cpu"  # the CPU step; never a held kernel step (kernel_path)
    cache = encode_sources(model, input_ids, attention_mask, config, copies=config.num_return_sequences,
                           hidden=run.hidden, kernel=cpu)  # now, so that bad inputs raise here
    steps = decode(model, cache, config, run.processors, rng=np.random.default_rng(config.seed),
                   stopping=run.stopping)
    return (tokens for tokens, _ in steps)
