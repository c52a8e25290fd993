"""Beam search, step for step as transformers 5 does it (``GenerationMixin._beam_search``).

Each batch row keeps ``num_beams`` *running* hypotheses and up to ``num_beams`` *finished* ones. The steps, each
a function below, in the order ``beam_search`` calls them:

    encode_sources      the encoded sources, one copy per beam (sources.py)      # cache rows [B] -> [B*nb]
    start_hypotheses    running = the start token, finished = none yet
    repeat:
        score_next_tokens   log_probs = processors(running, log_softmax(decode_step(newest tokens)))  # [B*nb, V]
        top_candidates      the K best of log_probs + running scores, K = max(2, 1 + n_eos) * nb      # [B, K]
                            (beam sampling: K drawn from their softmax, then sorted)
        keep_running        running = the nb best candidates that did not stop (eos, or max_length)
        add_finished        finished = the nb best of (finished so far, stopped candidates among the top nb,
                            each / gen_len ** length_penalty)
        until no row can improve (``_row_can_improve``, ``_finished``)
        follow_beams        each kept beam takes its parent's cached history
    best_finished       the best num_return_sequences finished hypotheses of each row

Details that decide which tokens come out (all as transformers):

- the decoder start token is the prompt (``PROMPT_LEN = 1``); a hypothesis that stops at total length L has
  ``gen_len = L - 1`` generated tokens, the eos included, and ranks with ``score / gen_len ** length_penalty``;
- running scores start at 0 for beam 0 and -1e9 for the others, so the first step expands beam 0 only;
- K leaves room for every beam to pick an eos and still have nb candidates that go on; only the first nb
  candidates may finish, the rest are spares; at ``max_length`` every candidate stops, eos or not;
- a batch row closes for good when its best running beam, divided by ``gen_len ** lp`` (``early_stopping=False``)
  or by ``(max_length - 1) ** lp`` (``"never"`` with lp > 0), cannot beat its worst finished one; with
  ``early_stopping=True`` a row stops taking hypotheses as soon as it has nb;
- the output is the best ``num_return_sequences`` finished hypotheses per row, best first, cropped to the
  longest of them and filled after eos with transformers' fill value: ``pad_token_id``, or ``eos_token_id[0]``
  when the pad id is 0 or None (transformers' ``pad_token_id or eos_token_id[0]``).

The KV cache holds ``B * nb`` rows; each step feeds only the newest token of each beam and reorders the cache to
follow the beams kept (``DecoderCache.reorder_beams``). Candidates are ranked by a stable sort, so exact ties go to the
lower flat index; torch.topk does not promise any order for ties, the one place the two could part ways.
"""
import dataclasses

import numpy as np

from ..core.backend import get_array_module, to_numpy
from ..core.errors import GenerationError
from .kernel_path import decode_step_logits
from .logits_process import eos_ids
from .sources import encode_sources

NEG = np.float32(-1.0e9)  # transformers' "never pick this" score
PROMPT_LEN = 1  # the decoder start token: an encoder-decoder's decoder prompt


@dataclasses.dataclass
class BeamSearchOutput:
    """``sequences`` ``[B * num_return_sequences, L]`` ints, ``sequences_scores`` ``[B * num_return_sequences]``
    float32 (length-penalised), ``scores``: the processed log-probs ``[B * num_beams, V]`` of each step, or None."""

    sequences: object
    sequences_scores: object
    scores: tuple = None


@dataclasses.dataclass
class Hypotheses:
    """Running hypotheses of each batch row: ``ids`` ``[B, nb, max_length]`` (written up to the current length, the
    fill value after it) and ``scores`` ``[B, nb]`` float32, the summed log-probs of their tokens."""

    ids: object
    scores: object


@dataclasses.dataclass
class Finished:
    """Up to nb finished hypotheses of each batch row, best first: ``ids`` ``[B, nb, max_length]``, ``scores``
    ``[B, nb]`` (length-penalised; NEG in an empty slot), ``real`` ``[B, nb]`` (a hypothesis, not an empty slot)
    and ``lengths`` ``[B, nb]`` (start token included)."""

    ids: object
    scores: object
    real: object
    lengths: object


@dataclasses.dataclass
class Candidates:
    """The K best continuations of each batch row, best first: ``ids`` ``[B, K, max_length]``, ``scores`` ``[B, K]``
    (summed log-probs), ``beam`` ``[B, K]`` (the running beam each extends) and ``stopped`` ``[B, K]`` (it ends
    with eos, or reached max_length)."""

    ids: object
    scores: object
    beam: object
    stopped: object


def candidates_per_beam(eos):
    """K / nb: room for every beam to pick an eos and still leave nb candidates that go on (``eos``: a list or
    None)."""
    return max(2, 1 + len(eos or ()))


def log_softmax(logits):
    """float32 ``log_softmax`` over the last axis."""
    logits = logits.astype(np.float32, copy=False)
    xp = get_array_module(logits)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


def top_k(values, k):
    """Column indices of the ``k`` largest entries of each row of ``values`` ``[R, n]``, largest first, exact ties
    broken by the lower index (a stable descending sort)."""
    xp = get_array_module(values)
    n = values.shape[-1]
    if xp is np and 4 * k < n:  # select k, then sort only those: O(n) instead of O(n log n)
        part = np.sort(np.argpartition(-values, k - 1, axis=-1)[:, :k], axis=-1)
        kept = np.take_along_axis(values, part, -1)
        if ((values >= kept.min(axis=-1, keepdims=True)).sum(axis=-1) == k).all():  # no tie at the cut
            return np.take_along_axis(part, np.argsort(-kept, axis=-1, kind="stable"), -1)
    if xp is np:
        return np.argsort(-values, axis=-1, kind="stable")[:, :k]
    return xp.argsort(-values, axis=-1)[:, :k]  # CuPy's sort is always stable (thrust)


# ---- the algorithm ------------------------------------------------------------------------------------------------

def beam_search(model, input_ids, attention_mask, config, processors, *, hidden=None, stopping=None, rng=None,
                kernel=None):
    """Beam search over ``model`` (``start_decoding``/``decode_step``) for the sources ``input_ids`` ``[B, S]`` (or
    their encoding ``hidden`` ``[B, S, C]``, see sources.py).

    ``config`` is a GenerationConfig that ``generate.prepare_config`` resolved and checked (``max_length`` counts
    the decoder start token; ``num_return_sequences <= num_beams``); ``processors`` maps (running ids ``[N,
    cur_len]``, log-probs ``[N, V]``) to log-probs, or is None; ``stopping`` (stopping.py) marks candidates that
    end as if with eos, or is None. With ``config.do_sample`` the candidates are drawn with ``rng`` (beam sampling).
    ``kernel``: decode through a fused step, ``"cuda"`` or ``"cpu"`` (kernel_path.py). Returns a BeamSearchOutput.
    """
    eos = eos_ids(config.eos_token_id) or []
    fill = (config.pad_token_id or eos[0]) if eos else -1  # transformers' fill value, quirk included
    cache = encode_sources(model, input_ids, attention_mask, config, copies=config.num_beams, hidden=hidden,
                           kernel=kernel)
    batch = cache.batch_size // config.num_beams
    running, finished = start_hypotheses(model.xp, batch, config, fill=fill)
    row_open = model.xp.ones((batch, 1), dtype=bool)  # can this row still improve its finished set?
    all_scores = [] if config.output_scores else None
    draw = Draw(rng) if config.do_sample else None
    length = PROMPT_LEN  # of every hypothesis so far, start token included
    while True:
        log_probs = score_next_tokens(model, cache, running, length, processors)  # [B*nb, V]
        if all_scores is not None:
            all_scores.append(log_probs.copy())
        candidates = top_candidates(log_probs, running, length, eos, max_length=config.max_length, draw=draw,
                                    stopping=stopping)
        running, parents = keep_running(candidates, config.num_beams)
        finished = add_finished(finished, candidates, length, row_open, config)
        length += 1
        row_open = _row_can_improve(row_open, running.scores, finished, length - PROMPT_LEN, config)
        if _finished(row_open, finished.real, candidates.stopped, config.early_stopping):
            break
        follow_beams(cache, parents)
    return best_finished(finished, config.num_return_sequences, all_scores)


def start_hypotheses(xp, batch, config, *, fill):
    """Every beam is the start token alone; beam 0 scores 0 and the others NEG, so the first step expands beam 0
    only (the beams are identical until they diverge). No finished hypotheses yet."""
    nb, max_length = config.num_beams, config.max_length
    ids = xp.full((batch, nb, max_length), fill, dtype=xp.int64)
    ids[:, :, 0] = config.decoder_start_token_id
    scores = xp.zeros((batch, nb), dtype=xp.float32)
    scores[:, 1:] = NEG
    finished = Finished(ids=ids.copy(), scores=xp.full((batch, nb), NEG, dtype=xp.float32),
                        real=xp.zeros((batch, nb), dtype=bool),
                        lengths=xp.full((batch, nb), PROMPT_LEN, dtype=xp.int64))
    return Hypotheses(ids=ids, scores=scores), finished


def score_next_tokens(model, cache, running, length, processors):
    """The log-probability ``[B*nb, V]`` of each beam's next token: log-softmax of the decoder's logits for the
    newest token (the cache holds the rest), then the processors, which read each beam's ids so far."""
    batch, nb = running.scores.shape
    newest = running.ids[:, :, length - 1].reshape(-1, 1)  # [B, nb] -> [B*nb, 1]
    log_probs = log_softmax(decode_step_logits(model, newest, cache))  # [B*nb, V]
    if processors is not None:
        log_probs = processors(running.ids[:, :, :length].reshape(batch * nb, length), log_probs)
    return log_probs


def top_candidates(log_probs, running, length, eos, *, max_length, draw=None, stopping=None):
    """The K = ``candidates_per_beam(eos)`` * nb best (beam, token) continuations of each row, best first, each
    scored by its beam's score plus the token's log-prob (with ``draw``: K drawn ones, then sorted best first). A
    candidate stops when it ends with eos, when ``stopping`` says so, and at ``max_length`` whatever it is."""
    xp = get_array_module(log_probs)
    batch, nb = running.scores.shape
    vocab = log_probs.shape[-1]
    total = (log_probs.reshape(batch, nb, vocab) + running.scores[:, :, None]).reshape(batch, nb * vocab)
    k = candidates_per_beam(eos) * nb
    if draw is None:
        flat = top_k(total, k)  # [B, nb*V] -> [B, K]
    else:
        flat = draw(total, k)  # [B, K], in no order
        flat = xp.take_along_axis(flat, top_k(xp.take_along_axis(total, flat, 1), k), 1)  # best first
    beam, token = flat // vocab, flat % vocab
    ids = xp.take_along_axis(running.ids, beam[:, :, None], 1)  # [B, nb, L] -> [B, K, L], a new array
    ids[:, :, length] = token
    stopped = xp.isin(token, xp.asarray(eos, dtype=xp.int64)) if eos else xp.zeros(token.shape, dtype=bool)
    if stopping:
        stopped |= stopping(ids[:, :, :length + 1].reshape(batch * k, length + 1)).reshape(batch, k)
    if length + 1 >= max_length:
        stopped = xp.ones_like(stopped)
    return Candidates(ids=ids, scores=xp.take_along_axis(total, flat, 1), beam=beam, stopped=stopped)


class Draw:
    """Beam sampling's choice: K distinct candidates of each row drawn, without replacement, from the softmax of
    their scores (transformers' ``torch.multinomial(softmax(scores), K)``), with the NumPy generator ``rng``.

    Drawing K without replacement is taking the K largest of ``score + Gumbel noise`` (the Gumbel-top-k trick:
    the largest is a draw from the softmax, the next a draw from the rest, and so on).
    """

    def __init__(self, rng):
        self.rng = rng

    def __call__(self, total, k):
        xp = get_array_module(total)
        scores = to_numpy(total).astype(np.float64)  # [B, nb*V]
        # Why through float32 probabilities: a candidate torch gives probability 0 (a filtered token, a beam still
        # at -1e9) must never be drawn here either.
        shifted = to_numpy(total) - to_numpy(total).max(axis=-1, keepdims=True)
        possible = np.exp(shifted) > 0  # [B, nb*V]
        fewest = int(possible.sum(axis=-1).min())
        if fewest < k:
            raise GenerationError(f"beam sampling draws {k} candidates per row and step (num_beams times 2, or "
                                  f"times 1 + the number of eos ids), but only {fewest} have a probability above 0: "
                                  "keep more tokens (top_k, top_p, ...) or lower num_beams")
        keys = np.where(possible, scores + self.rng.gumbel(size=scores.shape), -np.inf)
        return xp.asarray(top_k(keys, k))


def keep_running(candidates, nb):
    """The nb best candidates that did not stop, as the next step's running hypotheses, and the beam each one
    extends ``[B, nb]`` (its parent, whose cached history it takes)."""
    xp = get_array_module(candidates.scores)
    go_on_scores = candidates.scores + candidates.stopped.astype(xp.float32) * NEG  # [B, K]
    keep = top_k(go_on_scores, nb)  # [B, K] -> [B, nb]
    running = Hypotheses(ids=xp.take_along_axis(candidates.ids, keep[:, :, None], 1),
                         scores=xp.take_along_axis(go_on_scores, keep, 1))
    return running, xp.take_along_axis(candidates.beam, keep, 1)


def add_finished(finished, candidates, length, row_open, config):
    """The nb best of the finished hypotheses so far and the stopped candidates among the first nb (the other
    candidates are spares), a new one ranked by ``score / gen_len ** length_penalty``. A row that is closed, or
    with ``early_stopping=True`` already full, takes no new ones."""
    xp = get_array_module(candidates.scores)
    batch, k = candidates.scores.shape
    nb = finished.scores.shape[1]
    just_done = candidates.stopped & (xp.arange(k) < nb)[None, :]  # [B, K]
    gen_len = length + 1 - PROMPT_LEN  # generated tokens of a candidate, its eos included
    new_scores = candidates.scores / np.float32(gen_len ** config.length_penalty)
    new_scores += (finished.real.all(axis=-1, keepdims=True) & (config.early_stopping is True)).astype(xp.float32) * NEG
    new_scores += (~row_open).astype(xp.float32) * NEG
    new_scores += (~just_done).astype(xp.float32) * NEG
    merged_scores = xp.concatenate([finished.scores, new_scores], axis=1)  # [B, nb + K]
    best = top_k(merged_scores, nb)  # [B, nb]

    def pick(old, new):  # the best nb of old and new, side by side along axis 1
        both = xp.concatenate([old, new], axis=1)
        return xp.take_along_axis(both, best if both.ndim == 2 else best[:, :, None], 1)

    return Finished(ids=pick(finished.ids, candidates.ids), scores=xp.take_along_axis(merged_scores, best, 1),
                    real=pick(finished.real, just_done),
                    lengths=pick(finished.lengths, xp.full((batch, k), length + 1, dtype=xp.int64)))


def follow_beams(cache, parents):
    """Reorder the cache so that each kept beam carries its parent's history: row ``b*nb + i`` takes row
    ``b*nb + parents[b, i]`` (only self-attention moves: a row's beams share one source)."""
    xp = get_array_module(parents)
    batch, nb = parents.shape
    cache.reorder_beams((parents + xp.arange(batch)[:, None] * nb).reshape(-1))  # [B, nb] -> [B*nb]


def best_finished(finished, n_return, all_scores):
    """The best ``n_return`` finished hypotheses of each row, best first, cropped to the longest of them."""
    batch = finished.scores.shape[0]
    out_len = int(finished.lengths[:, :n_return].max())
    sequences = finished.ids[:, :n_return, :out_len].reshape(batch * n_return, out_len)  # [B, n, L] -> [B*n, L]
    return BeamSearchOutput(sequences=sequences, sequences_scores=finished.scores[:, :n_return].reshape(-1),
                            scores=tuple(all_scores) if all_scores is not None else None)


def _row_can_improve(row_open, running_scores, finished, gen_len, config):
    """transformers' ``_check_early_stop_heuristic``: a row stays open while its best running beam, at the most
    hopeful length, beats the worst finished hypothesis of some unfilled or filled slot."""
    xp = get_array_module(running_scores)
    lp, max_gen_len = config.length_penalty, config.max_length - PROMPT_LEN
    hopeful_len = max_gen_len if (config.early_stopping == "never" and lp > 0.0) else gen_len
    best_possible = running_scores[:, :1] / np.float32(hopeful_len ** lp)
    worst_done = xp.where(finished.real, finished.scores.min(axis=1, keepdims=True), NEG)
    return row_open & (best_possible > worst_done).any(axis=-1, keepdims=True)


def _finished(row_open, real, stopped, early):
    """transformers' ``_beam_search_has_unfinished_sequences``, negated, for the whole batch."""
    improvable = bool(row_open.any())
    all_full = bool(real.all()) and early is True
    return not improvable or all_full or bool(stopped.all())
