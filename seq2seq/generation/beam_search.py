"""Beam search, step for step as transformers 5 does it (``GenerationMixin._beam_search``).

Each batch row keeps ``num_beams`` *running* hypotheses and up to ``num_beams`` *finished* ones. One step:

    log_probs = processors(running, log_softmax(decode_step(newest tokens)))    # [B*nb, V], float32
    total     = log_probs + running_scores                                       # [B, nb*V]
    top       = the K best of total, K = max(2, 1 + n_eos) * nb                   # candidates, best first
    running   = the nb best candidates that did not stop (eos, or max_length)
    finished  = the nb best of (finished so far, stopped candidates among the top nb, each / gen_len ** lp)

Details that decide which tokens come out (all as transformers):

- the decoder start token is the prompt (``prompt_len = 1``); a hypothesis that stops at total length L has
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
follow the beams kept (``DecoderCache.reorder``). Candidates are ranked by a stable sort, so exact ties go to the
lower flat index; torch.topk does not promise any order for ties, the one place the two could part ways.
"""
import dataclasses

import numpy as np

from ..core.backend import get_array_module
from ..core.errors import GenerationError
from ..core.inputs import as_int_array
from .logits_process import eos_ids

NEG = np.float32(-1.0e9)  # transformers' "never pick this" score


@dataclasses.dataclass
class BeamSearchOutput:
    """``sequences`` ``[B * num_return_sequences, L]`` ints, ``sequences_scores`` ``[B * num_return_sequences]``
    float32 (length-penalised), ``scores``: the processed log-probs ``[B * num_beams, V]`` of each step, or None."""

    sequences: object
    sequences_scores: object
    scores: tuple = None


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


def beam_search(model, input_ids, attention_mask, config, processors):
    """Beam search over ``model`` (``start_decoding``/``decode_step``) for the sources ``input_ids`` ``[B, S]``.

    ``config`` is a resolved GenerationConfig (``max_length`` counts the decoder start token); ``processors`` maps
    (running ids ``[N, cur_len]``, log-probs ``[N, V]``) to log-probs, or is None. Returns a BeamSearchOutput.
    """
    xp = model.xp
    ids = as_int_array(input_ids, xp, name="input_ids")
    batch, nb, max_length = ids.shape[0], config.num_beams, config.max_length
    eos = eos_ids(config.eos_token_id) or []
    n_return, lp, early = config.num_return_sequences, config.length_penalty, config.early_stopping
    prompt_len = 1  # the decoder start token
    if not 1 <= n_return <= nb:
        raise GenerationError(f"num_return_sequences ({n_return}) must be between 1 and num_beams ({nb})")
    if max_length <= prompt_len:
        raise GenerationError(f"max_length ({max_length}) leaves no room to generate after the decoder start token")
    n_keep = max(2, 1 + len(eos)) * nb  # candidates kept per row and step
    fill = (config.pad_token_id or eos[0]) if eos else -1  # transformers' fill value, quirk included
    eos_array = xp.asarray(eos, dtype=xp.int64)

    # running and finished hypotheses: [B, nb, max_length] ids, [B, nb] scores
    running = xp.full((batch, nb, max_length), fill, dtype=xp.int64)
    running[:, :, 0] = config.decoder_start_token_id
    running_scores = xp.zeros((batch, nb), dtype=xp.float32)
    running_scores[:, 1:] = NEG
    done_seqs = running.copy()
    done_scores = xp.full((batch, nb), NEG, dtype=xp.float32)
    done_flags = xp.zeros((batch, nb), dtype=bool)
    done_lens = xp.full((batch, nb), prompt_len, dtype=xp.int64)  # length of each finished hypothesis
    row_open = xp.ones((batch, 1), dtype=bool)  # can this row still improve its finished set?
    first_nb = xp.arange(n_keep) < nb
    row_offset = xp.arange(batch)[:, None] * nb

    cache = model.start_decoding(ids, attention_mask, capacity=max_length)
    cache.reorder(xp.repeat(xp.arange(batch), nb))  # one copy of each source per beam
    tokens = running[:, :, 0].reshape(-1, 1)
    all_scores = [] if config.output_scores else None
    cur_len = prompt_len
    while True:
        log_probs = log_softmax(model.decode_step(tokens, cache))  # [B*nb, V]
        if processors is not None:
            log_probs = processors(running[:, :, :cur_len].reshape(batch * nb, cur_len), log_probs)
        if all_scores is not None:
            all_scores.append(log_probs.copy())
        vocab = log_probs.shape[-1]
        if n_keep > nb * vocab:
            raise GenerationError(f"beam search keeps {n_keep} candidates a step, but there are only {nb * vocab}")
        total = (log_probs.reshape(batch, nb, vocab) + running_scores[:, :, None]).reshape(batch, nb * vocab)

        # the K best continuations, best first: [B, K]
        flat = top_k(total, n_keep)
        cand_scores = xp.take_along_axis(total, flat, 1)
        cand_beam, cand_token = flat // vocab, flat % vocab
        cand_seqs = xp.take_along_axis(running, cand_beam[:, :, None], 1)  # [B, K, max_length]
        cand_seqs[:, :, cur_len] = cand_token
        stopped = xp.isin(cand_token, eos_array) if eos else xp.zeros(cand_token.shape, dtype=bool)
        if cur_len + 1 >= max_length:
            stopped = xp.ones_like(stopped)

        # the nb best that go on
        go_on_scores = cand_scores + stopped.astype(xp.float32) * NEG
        keep = top_k(go_on_scores, nb)
        running = xp.take_along_axis(cand_seqs, keep[:, :, None], 1)
        running_scores = xp.take_along_axis(go_on_scores, keep, 1)
        source_beam = xp.take_along_axis(cand_beam, keep, 1)

        # the nb best finished, old and new (only stopped candidates among the first nb may join)
        just_done = stopped & first_nb[None, :]
        new_scores = cand_scores / np.float32((cur_len + 1 - prompt_len) ** lp)
        new_scores += (done_flags.all(axis=-1, keepdims=True) & (early is True)).astype(xp.float32) * NEG
        new_scores += (~row_open).astype(xp.float32) * NEG
        new_scores += (~just_done).astype(xp.float32) * NEG
        merged_scores = xp.concatenate([done_scores, new_scores], axis=1)
        best = top_k(merged_scores, nb)
        done_scores = xp.take_along_axis(merged_scores, best, 1)
        done_seqs = xp.take_along_axis(xp.concatenate([done_seqs, cand_seqs], axis=1), best[:, :, None], 1)
        done_flags = xp.take_along_axis(xp.concatenate([done_flags, just_done], axis=1), best, 1)
        new_lens = xp.full((batch, n_keep), cur_len + 1, dtype=xp.int64)
        done_lens = xp.take_along_axis(xp.concatenate([done_lens, new_lens], axis=1), best, 1)

        cur_len += 1
        row_open = _row_can_improve(row_open, running_scores, done_scores, done_flags, cur_len - prompt_len,
                                    max_length - prompt_len, early, lp)
        if _finished(row_open, done_flags, stopped, early):
            break
        cache.reorder_beams((source_beam + row_offset).reshape(-1))  # each kept beam takes its parent's history
        tokens = running[:, :, cur_len - 1].reshape(-1, 1)

    out_len = int(done_lens[:, :n_return].max())
    sequences = done_seqs[:, :n_return, :out_len].reshape(batch * n_return, out_len)
    return BeamSearchOutput(sequences=sequences, sequences_scores=done_scores[:, :n_return].reshape(-1),
                            scores=tuple(all_scores) if all_scores is not None else None)


def _row_can_improve(row_open, running_scores, done_scores, done_flags, gen_len, max_gen_len, early, lp):
    """transformers' ``_check_early_stop_heuristic``: a row stays open while its best running beam, at the most
    hopeful length, beats the worst finished hypothesis of some unfilled or filled slot."""
    xp = get_array_module(running_scores)
    hopeful_len = max_gen_len if (early == "never" and lp > 0.0) else gen_len
    best_possible = running_scores[:, :1] / np.float32(hopeful_len ** lp)
    worst_done = xp.where(done_flags, done_scores.min(axis=1, keepdims=True), NEG)
    return row_open & (best_possible > worst_done).any(axis=-1, keepdims=True)


def _finished(row_open, done_flags, stopped, early):
    """transformers' ``_beam_search_has_unfinished_sequences``, negated, for the whole batch."""
    improvable = bool(row_open.any())
    all_full = bool(done_flags.all()) and early is True
    return not improvable or all_full or bool(stopped.all())
