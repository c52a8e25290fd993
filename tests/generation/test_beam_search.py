"""Beam search: token-for-token what transformers' ``generate(num_beams=k, do_sample=False)`` returns.

The oracle is a random bert2bert with spread-out weights (so no two candidates tie) and an eos id the model
really emits, so hypotheses finish at different steps and rows finish at different times.
"""
import itertools
import warnings

import numpy as np
import pytest

from oracle import batch, hf_bert2bert, save_hf, torch

import seq2seq
from seq2seq.generation.beam_search import BeamSearchOutput, beam_search, log_softmax, top_k
from seq2seq.generation.config import GENERATION_DEFAULTS, GenerationConfig
from seq2seq.core.errors import GenerationError
from seq2seq.generation.processors import build_logits_processors

EOS = 37  # emitted by the oracle below after 4 to 12 tokens, depending on the row and beam
VOCAB = 61


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    hf = hf_bert2bert(spread=4.0)
    return hf, save_hf(hf, tmp_path_factory.mktemp("beam") / "model")


@pytest.fixture(scope="module")
def pair(saved):
    hf, path = saved
    return hf, seq2seq.EncoderDecoderModel.from_pretrained(path)


@pytest.fixture(scope="module")
def source():
    ids, mask, _ = batch(VOCAB, batch_size=3, src_len=9)  # rows 1 and 2 padded
    return ids, mask


def hf_beam(hf, ids, mask, *, eos=EOS, pad=0, **kwargs):
    gc = hf.generation_config
    gc.decoder_start_token_id, gc.pad_token_id, gc.eos_token_id = 2, pad, eos
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False,
                           return_dict_in_generate=True, output_scores=True, **kwargs)


def gen_config(*, eos=EOS, pad=0, max_new_tokens=None, **fields):
    if max_new_tokens is not None:
        fields["max_length"] = 1 + max_new_tokens  # resolved as generate does: the start token counts
    fields.setdefault("output_scores", True)
    resolved = {**GENERATION_DEFAULTS, **fields}  # beam_search takes a resolved config: nothing left unset
    return GenerationConfig(**{**resolved, "decoder_start_token_id": 2, "pad_token_id": pad, "eos_token_id": eos})


def assert_same(ours, ref):
    assert isinstance(ours, BeamSearchOutput)
    ref_seqs, ref_scores = ref.sequences.numpy(), ref.sequences_scores.numpy()
    assert ours.sequences.shape == ref_seqs.shape, f"{ours.sequences}\n!=\n{ref_seqs}"
    np.testing.assert_array_equal(ours.sequences, ref_seqs)
    assert ours.sequences.dtype == np.int64 and ours.sequences_scores.dtype == np.float32
    np.testing.assert_allclose(ours.sequences_scores, ref_scores, rtol=1e-4)


# ---- parity with transformers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("early_stopping", [True, False, "never"], ids=["es-true", "es-false", "es-never"])
@pytest.mark.parametrize("length_penalty", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("num_beams", [2, 3, 4, 5])
def test_matches_transformers(pair, source, num_beams, length_penalty, early_stopping):
    hf, ours = pair
    ids, mask = source
    # all num_beams finished hypotheses are returned, so their order and scores are checked too
    kw = dict(num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping,
              num_return_sequences=num_beams, max_length=16)
    assert_same(beam_search(ours, ids, mask, gen_config(**kw), None), hf_beam(hf, ids, mask, **kw))


@pytest.mark.parametrize("num_return_sequences", [1, 2, 3, 4])
def test_num_return_sequences(pair, source, num_return_sequences):
    hf, ours = pair
    ids, mask = source
    kw = dict(num_beams=4, num_return_sequences=num_return_sequences, max_length=14)
    assert_same(beam_search(ours, ids, mask, gen_config(**kw), None), hf_beam(hf, ids, mask, **kw))


@pytest.mark.parametrize("eos", [None, 16, 27, [37, 54], [16, 38, 27]], ids=str)
@pytest.mark.parametrize("pad", [0, 5], ids=["pad0", "pad5"])
def test_eos_and_pad_ids(pair, source, eos, pad):
    """Several eos ids widen the candidate set; the fill after eos is transformers' ``pad or eos[0]``."""
    hf, ours = pair
    ids, mask = source
    kw = dict(num_beams=3, num_return_sequences=3, max_length=13)
    assert_same(beam_search(ours, ids, mask, gen_config(eos=eos, pad=pad, **kw), None),
                hf_beam(hf, ids, mask, eos=eos, pad=pad, **kw))


@pytest.mark.parametrize("max_new_tokens", [1, 3, 9, 25])
def test_max_new_tokens(pair, source, max_new_tokens):
    hf, ours = pair
    ids, mask = source
    ref = hf_beam(hf, ids, mask, num_beams=3, num_return_sequences=2, max_new_tokens=max_new_tokens)
    ours_out = beam_search(ours, ids, mask, gen_config(num_beams=3, num_return_sequences=2,
                                                       max_new_tokens=max_new_tokens), None)
    assert_same(ours_out, ref)


def test_stops_before_max_length_when_every_row_is_done(pair, source):
    hf, ours = pair
    ids, mask = source
    kw = dict(num_beams=2, max_length=35, early_stopping=True)
    out = beam_search(ours, ids, mask, gen_config(**kw), None)
    assert out.sequences.shape[1] < 35
    assert_same(out, hf_beam(hf, ids, mask, **kw))


def test_one_row_finishes_early_another_runs_to_max_length(pair, source):
    hf, ours = pair
    ids, mask = source
    kw = dict(num_beams=3, max_length=15, early_stopping=True)
    out = beam_search(ours, ids, mask, gen_config(eos=14, **kw), None)
    assert_same(out, hf_beam(hf, ids, mask, eos=14, **kw))
    row0, row1 = out.sequences[0].tolist(), out.sequences[1].tolist()
    assert row0.index(14) == 5 and set(row0[5:]) == {14}  # done after 5 tokens, then filled (pad 0 -> eos)
    assert 14 not in row1 and len(row1) == 15  # never found eos: ran to max_length


def test_single_source_without_mask(pair, source):
    hf, ours = pair
    ids = source[0][:1]
    kw = dict(num_beams=4, num_return_sequences=2, max_length=12)
    ref = hf_beam(hf, ids, np.ones_like(ids), **kw)
    assert_same(beam_search(ours, ids.tolist(), None, gen_config(**kw), None), ref)


def test_step_scores_match_transformers(pair, source):
    hf, ours = pair
    ids, mask = source
    kw = dict(num_beams=3, max_length=10, early_stopping="never")
    ref = hf_beam(hf, ids, mask, **kw)
    out = beam_search(ours, ids, mask, gen_config(**kw), None)
    assert len(out.scores) == len(ref.scores)
    for ours_step, ref_step in zip(out.scores, ref.scores):
        assert ours_step.shape == (3 * 3, VOCAB) and ours_step.dtype == np.float32
        np.testing.assert_allclose(ours_step, ref_step.numpy(), rtol=1e-4, atol=1e-4)
    assert beam_search(ours, ids, mask, gen_config(**{**kw, "output_scores": False}), None).scores is None


# ---- logits processors ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", [
    dict(no_repeat_ngram_size=2), dict(no_repeat_ngram_size=3, early_stopping="never"),
    dict(repetition_penalty=1.5), dict(repetition_penalty=0.7, length_penalty=2.0),
    dict(min_new_tokens=9, early_stopping=True), dict(min_length=8),
    dict(no_repeat_ngram_size=2, repetition_penalty=1.3, min_new_tokens=5),
], ids=lambda case: "-".join(f"{k}={v}" for k, v in case.items()))
def test_processors_match_transformers(pair, source, case):
    hf, ours = pair
    ids, mask = source
    kw = dict(num_beams=3, num_return_sequences=3, max_length=16, **case)
    ref = hf_beam(hf, ids, mask, **kw)
    config = gen_config(**kw)
    assert_same(beam_search(ours, ids, mask, config, build_logits_processors(config)), ref)


# ---- the cache path ---------------------------------------------------------------------------------------------

class _History:
    """A stand-in cache: the sources and every token decoded so far, reordered as beam search asks."""

    def __init__(self, ids, mask):
        self.ids, self.mask, self.tokens = ids, mask, None

    @property
    def batch_size(self):
        return len(self.ids)

    def reorder(self, index):
        self.ids = self.ids[index]
        self.mask = None if self.mask is None else self.mask[index]
        self.tokens = None if self.tokens is None else self.tokens[index]
        return self

    reorder_beams = reorder  # no cache to save work on: the whole history follows the beams


class Recompute:
    """``decode_step`` without a KV cache: the full decoder over the whole prefix at every step."""

    def __init__(self, model):
        self.model, self.xp = model, model.xp

    def start_decoding(self, input_ids, attention_mask=None, *, capacity=64):
        return _History(np.asarray(input_ids), None if attention_mask is None else np.asarray(attention_mask))

    def decode_step(self, ids, cache):
        cache.tokens = ids if cache.tokens is None else np.concatenate([cache.tokens, ids], axis=1)
        with seq2seq.no_grad():
            return self.model(cache.ids, cache.mask, decoder_input_ids=cache.tokens).logits[:, -1]


class Spy:
    """The real model, recording the shape of every decode step and cache reorder."""

    def __init__(self, model):
        self.model, self.xp, self.steps, self.reorders = model, model.xp, [], []

    def start_decoding(self, input_ids, attention_mask=None, *, capacity=64):
        cache = self.model.start_decoding(input_ids, attention_mask, capacity=capacity)
        reorder, reorder_beams = cache.reorder, cache.reorder_beams
        cache.reorder = lambda index: self.reorders.append(("all", len(index))) or reorder(index)
        cache.reorder_beams = lambda index: self.reorders.append(("beams", len(index))) or reorder_beams(index)
        return cache

    def decode_step(self, ids, cache):
        self.steps.append((tuple(ids.shape), cache.length))
        return self.model.decode_step(ids, cache)


@pytest.mark.parametrize("num_beams, early_stopping, length_penalty", [(2, False, 1.0), (4, "never", 2.0),
                                                                       (3, True, 0.5)])
def test_cache_reorder_equals_recomputing(pair, source, num_beams, early_stopping, length_penalty):
    _, ours = pair
    ids, mask = source
    config = gen_config(num_beams=num_beams, num_return_sequences=num_beams, max_length=15,
                        early_stopping=early_stopping, length_penalty=length_penalty)
    cached = beam_search(ours, ids, mask, config, None)
    full = beam_search(Recompute(ours), ids, mask, config, None)
    np.testing.assert_array_equal(cached.sequences, full.sequences)
    np.testing.assert_allclose(cached.sequences_scores, full.sequences_scores, rtol=1e-5)


def test_each_step_feeds_one_token_per_beam(pair, source):
    _, ours = pair
    ids, mask = source
    spy = Spy(ours)
    out = beam_search(spy, ids, mask, gen_config(num_beams=4, max_length=12, eos=None), None)
    assert out.sequences.shape == (3, 12)
    assert spy.steps == [((12, 1), t) for t in range(11)]  # one new token per beam; the prefix is cached
    # expand to beams, then follow the kept beams (self-attention history only) after all steps but the last
    assert spy.reorders == [("all", 12)] + [("beams", 12)] * 10


class CacheShapes(Spy):
    """The real model, recording after every decode step what its cache holds per source and per row."""

    def decode_step(self, ids, cache):
        logits = self.model.decode_step(ids, cache)
        layers = cache.layers
        self.steps.append(dict(copies=cache.copies, rows=cache.batch_size, memory=cache.memory.shape,
                               keep=cache.memory_keep.shape,
                               cross={(x.cross_k.shape, x.cross_v.shape) for x in layers},
                               self_rows={x.self_k.shape[0] for x in layers},
                               cross_k=[x.cross_k for x in layers]))
        return logits


def test_cross_keys_values_once_per_source(pair, source):
    """Beam search (3 beams, 2 sources, the second padded): the encoder side and every layer's cross keys/values
    stay ``[B, ...]`` at every step, computed at the first; only the self-attention history is per beam."""
    hf, ours = pair
    ids, mask = source[0][:2], source[1][:2]
    assert mask[1].sum() < mask.shape[1]
    spy = CacheShapes(ours)
    kw = dict(num_beams=3, num_return_sequences=3, max_length=12)
    assert_same(beam_search(spy, ids, mask, gen_config(**kw), None), hf_beam(hf, ids, mask, **kw))
    nh = ours.config.decoder.num_attention_heads
    hs = ours.config.decoder.hidden_size // nh
    s = ids.shape[1]
    assert len(spy.steps) > 3
    for step in spy.steps:
        assert (step["copies"], step["rows"], step["memory"], step["keep"]) == (3, 6, (2, s, nh * hs), (2, 1, 1, s))
        assert step["cross"] == {((2, nh, s, hs), (2, nh, s, hs))} and step["self_rows"] == {6}
        # the same arrays: computed once, at the first step
        assert all(a is b for a, b in zip(step["cross_k"], spy.steps[0]["cross_k"]))


@pytest.mark.parametrize("eos, early_stopping", [(EOS, True), (14, "never"), ([16, 38], False)], ids=str)
def test_backends(saved, source, xp, eos, early_stopping):
    """The same tokens on either array module, returned as arrays of the model's backend."""
    hf, path = saved
    model = seq2seq.EncoderDecoderModel.from_pretrained(path, backend="numpy" if xp is np else "cupy")
    ids, mask = source
    kw = dict(num_beams=4, num_return_sequences=2, max_length=15, early_stopping=early_stopping)
    out = beam_search(model, xp.asarray(ids), xp.asarray(mask), gen_config(eos=eos, **kw), None)
    assert isinstance(out.sequences, xp.ndarray) and isinstance(out.sequences_scores, xp.ndarray)
    assert all(isinstance(step, xp.ndarray) for step in out.scores)
    out = BeamSearchOutput(seq2seq.to_numpy(out.sequences), seq2seq.to_numpy(out.sequences_scores))
    assert_same(out, hf_beam(hf, ids, mask, eos=eos, **kw))


# ---- helpers and errors -----------------------------------------------------------------------------------------

def test_log_softmax_matches_torch(rng):
    logits = (rng.standard_normal((4, 50)) * 20).astype(np.float32)
    ref = torch.log_softmax(torch.tensor(logits), dim=-1).numpy()
    np.testing.assert_allclose(log_softmax(logits), ref, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("n, k", [(100, 7), (100, 60), (5, 5)])
def test_top_k_is_a_stable_descending_sort(rng, n, k):
    values = rng.integers(0, 6, (3, n)).astype(np.float32)  # many ties
    values[0, :3] = -np.inf
    expected = np.argsort(-values, axis=-1, kind="stable")[:, :k]
    np.testing.assert_array_equal(top_k(values, k), expected)
    spread = rng.standard_normal((3, n)).astype(np.float32)
    np.testing.assert_array_equal(top_k(spread, k), torch.topk(torch.tensor(spread), k).indices.numpy())


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
    (dict(num_beams=2, max_length=1), "max_length"),
    (dict(num_beams=2, eos_token_id=list(range(VOCAB))), "candidates"),  # 1 + n_eos candidates per beam > vocabulary
])
def test_impossible_settings_raise(pair, source, kwargs, message):
    """Checked once, by generate's prepare_config; beam_search trusts the resolved config it is given."""
    _, ours = pair
    with pytest.raises(GenerationError, match=message):
        ours.generate(source[0], source[1], decoder_start_token_id=2, **kwargs)


# ---- through model.generate -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    dict(num_beams=3, max_length=14),
    dict(num_beams=4, num_return_sequences=2, max_new_tokens=10, length_penalty=2.0, early_stopping="never"),
    dict(num_beams=2, no_repeat_ngram_size=2, repetition_penalty=1.2, min_new_tokens=4, max_length=16),
], ids=["plain", "new-tokens", "processors"])
def test_generate_uses_beam_search(pair, source, kwargs):
    hf, ours = pair
    ids, mask = source
    ref = hf_beam(hf, ids, mask, **kwargs)
    ours.generation_config = GenerationConfig(decoder_start_token_id=2, pad_token_id=0, eos_token_id=EOS)
    seqs = ours.generate(ids, attention_mask=mask, **kwargs)
    np.testing.assert_array_equal(seqs, ref.sequences.numpy())
    out = ours.generate(ids, attention_mask=mask, return_dict_in_generate=True, output_scores=True, **kwargs)
    np.testing.assert_array_equal(out.sequences, ref.sequences.numpy())
    np.testing.assert_allclose(out.sequences_scores, ref.sequences_scores.numpy(), rtol=1e-4)


def test_all_settings_agree_on_a_second_model(tmp_path):
    """A deeper decoder with other sizes: a few combined settings, batch of 4 with ragged sources."""
    hf = hf_bert2bert(decoder_overrides=dict(num_hidden_layers=3, num_attention_heads=4, intermediate_size=40),
                      seed=3, spread=3.0)
    ours = seq2seq.EncoderDecoderModel.from_pretrained(save_hf(hf, tmp_path / "m"))
    ids, mask, _ = batch(VOCAB, batch_size=4, src_len=11, seed=5)
    ref_greedy = hf_beam(hf, ids, mask, eos=None, num_beams=2, max_length=12)
    common = [int(t) for t in np.bincount(ref_greedy.sequences.numpy()[:, 1:].ravel()).argsort()[-2:]]
    for eos, nb in itertools.product(common, [2, 5]):
        kw = dict(num_beams=nb, num_return_sequences=nb - 1, max_length=18, length_penalty=1.5)
        assert_same(beam_search(ours, ids, mask, gen_config(eos=eos, **kw), None),
                    hf_beam(hf, ids, mask, eos=eos, **kw))
