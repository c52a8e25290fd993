"""Logits processors against transformers' own classes (the oracle), on random and awkward scores.

Each of ours runs on the array module under test (NumPy, and CuPy where a GPU is present); the reference is the
tiny torch class from ``transformers.generation.logits_process`` on the same ids and scores. Results must agree
exactly on which tokens are -inf and to float32 rounding elsewhere.
"""
import warnings

import numpy as np
import pytest

from oracle import hf_bert2bert, one_torch_thread, torch, transformers  # noqa: F401
from seq2seq.generation import logits_process as lp
from seq2seq.generation import warpers as wp
from seq2seq.generation.processors import build_logits_processors
from seq2seq.core.backend import to_numpy
from seq2seq.generation.config import GenerationConfig
from seq2seq.core.errors import GenerationError

hf_lp = pytest.importorskip("transformers.generation.logits_process")

VOCAB = 30


def case(seed, *, rows=4, cur_len=7, vocab=VOCAB, id_range=None, ties=False):
    """Decoder ids ``[rows, cur_len]`` (repeats likely with a small ``id_range``) and float32 scores ``[rows, V]``."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, id_range or vocab, (rows, cur_len))
    scores = rng.normal(0, 3, (rows, vocab)).astype(np.float32)
    if ties:  # few distinct values: many ties, also at the top-k / top-p boundary
        scores = np.round(scores / 2).astype(np.float32)
    return ids, scores


def ours(processor, ids, scores, xp):
    before = scores.copy()
    on_device = xp.asarray(scores)
    out = processor(xp.asarray(ids), on_device)
    np.testing.assert_array_equal(to_numpy(on_device), before)  # never writes into the caller's scores
    return to_numpy(out)


def reference(processor, ids, scores):
    return processor(torch.tensor(ids), torch.tensor(scores)).numpy()


def assert_same(got, want):
    assert got.dtype == np.float32, got.dtype
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want), err_msg="different tokens filtered")
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-6, atol=1e-6)


# ---- one processor at a time ------------------------------------------------------------------------------------

@pytest.mark.parametrize("min_length", [0, 5, 7, 8, 12])
@pytest.mark.parametrize("eos", [3, [3, 9], [4, 99]], ids=["eos", "eos-list", "eos-outside-vocab"])
def test_min_length(xp, min_length, eos):
    ids, scores = case(min_length)
    assert_same(ours(lp.MinLength(min_length, eos), ids, scores, xp),
                reference(hf_lp.MinLengthLogitsProcessor(min_length, eos), ids, scores))


@pytest.mark.parametrize("min_new_tokens", [0, 5, 6, 7])
@pytest.mark.parametrize("eos", [3, [3, 9]], ids=["eos", "eos-list"])
def test_min_new_tokens(xp, min_new_tokens, eos):
    ids, scores = case(min_new_tokens)  # cur_len 7: 6 new tokens after the start token
    assert_same(ours(lp.MinNewTokens(1, min_new_tokens, eos), ids, scores, xp),
                reference(hf_lp.MinNewTokensLengthLogitsProcessor(1, min_new_tokens, eos), ids, scores))


@pytest.mark.parametrize("penalty", [0.5, 1.3, 2.0])
def test_repetition_penalty(xp, penalty):
    ids, scores = case(int(penalty * 10), cur_len=12, id_range=8)  # repeated ids, scores of both signs
    assert_same(ours(lp.RepetitionPenalty(penalty), ids, scores, xp),
                reference(hf_lp.RepetitionPenaltyLogitsProcessor(penalty), ids, scores))


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("cur_len", [1, 3, 12])
def test_no_repeat_ngram(xp, n, cur_len):
    ids, scores = case(n * 100 + cur_len, cur_len=cur_len, id_range=3)  # 3 distinct ids: n-grams repeat a lot
    got = ours(lp.NoRepeatNGram(n), ids, scores, xp)
    assert_same(got, reference(hf_lp.NoRepeatNGramLogitsProcessor(n), ids, scores))
    if cur_len == 12 and n <= 2:
        assert np.isneginf(got).any()  # the case exercises banning


@pytest.mark.parametrize("cur_len", [1, 2])
def test_forced_bos(xp, cur_len):
    ids, scores = case(cur_len, cur_len=cur_len)
    assert_same(ours(lp.ForcedBOS(5), ids, scores, xp),
                reference(hf_lp.ForcedBOSTokenLogitsProcessor(5), ids, scores))


@pytest.mark.parametrize("max_length", [7, 8, 9])
@pytest.mark.parametrize("eos", [3, [3, 9]], ids=["eos", "eos-list"])
def test_forced_eos(xp, max_length, eos):
    ids, scores = case(max_length)  # cur_len 7: forced when max_length == 8
    assert_same(ours(lp.ForcedEOS(max_length, eos), ids, scores, xp),
                reference(hf_lp.ForcedEOSTokenLogitsProcessor(max_length, eos), ids, scores))


@pytest.mark.parametrize("temperature", [0.3, 1.7])
def test_temperature(xp, temperature):
    ids, scores = case(1)
    assert_same(ours(wp.Temperature(temperature), ids, scores, xp),
                reference(hf_lp.TemperatureLogitsWarper(temperature), ids, scores))


@pytest.mark.parametrize("top_k", [1, 2, 5, VOCAB, 100])
@pytest.mark.parametrize("keep", [1, 3])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_top_k(xp, top_k, keep, ties):
    ids, scores = case(top_k + keep, ties=ties)
    got = ours(wp.TopK(top_k, min_tokens_to_keep=keep), ids, scores, xp)
    assert_same(got, reference(hf_lp.TopKLogitsWarper(top_k, min_tokens_to_keep=keep), ids, scores))
    assert (np.isfinite(got).sum(axis=-1) >= min(max(top_k, keep), VOCAB)).all()  # ties may keep more, never fewer


@pytest.mark.parametrize("top_p", [0.05, 0.3, 0.8, 0.95, 1.0])
@pytest.mark.parametrize("keep", [1, 3])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_top_p(xp, top_p, keep, ties):
    ids, scores = case(int(top_p * 100) + keep, ties=ties)
    got = ours(wp.TopP(top_p, min_tokens_to_keep=keep), ids, scores, xp)
    want = reference(hf_lp.TopPLogitsWarper(top_p, min_tokens_to_keep=keep), ids, scores)
    if ties:
        # Which of several equal scores at the boundary survives is up to torch's unstable sort; ours drops the
        # lower ids first (a stable sort). The kept scores, as a multiset, must still be the same.
        for got_row, want_row in zip(got, want):
            np.testing.assert_array_equal(np.sort(got_row[np.isfinite(got_row)]),
                                          np.sort(want_row[np.isfinite(want_row)]))
    else:
        assert_same(got, want)
    if top_p == 1.0:
        assert np.isfinite(got).all()


def test_warpers_accept_already_filtered_scores(xp):
    """After a constraint banned tokens, -inf scores go through top-k/top-p as transformers passes them."""
    ids, scores = case(7)
    scores[:, ::2] = -np.inf
    for mine, theirs in [(wp.TopK(4), hf_lp.TopKLogitsWarper(4)), (wp.TopP(0.7), hf_lp.TopPLogitsWarper(0.7))]:
        assert_same(ours(mine, ids, scores, xp), reference(theirs, ids, scores))


# ---- the list and its order -------------------------------------------------------------------------------------

NAMES = {"RepetitionPenaltyLogitsProcessor": "RepetitionPenalty", "NoRepeatNGramLogitsProcessor": "NoRepeatNGram",
         "MinLengthLogitsProcessor": "MinLength", "MinNewTokensLengthLogitsProcessor": "MinNewTokens",
         "ForcedBOSTokenLogitsProcessor": "ForcedBOS", "ForcedEOSTokenLogitsProcessor": "ForcedEOS",
         "TemperatureLogitsWarper": "Temperature", "TopKLogitsWarper": "TopK", "TopPLogitsWarper": "TopP"}

SETTINGS = [
    {},
    dict(repetition_penalty=1.4, no_repeat_ngram_size=2, min_length=6, forced_eos_token_id=3),
    dict(min_new_tokens=4, forced_bos_token_id=5, eos_token_id=[3, 9]),
    dict(do_sample=True, temperature=0.7, top_k=5, top_p=0.9, repetition_penalty=0.8, min_length=9),
    dict(do_sample=True, top_k=0, top_p=1.0, temperature=1.0),
    dict(do_sample=True, num_beams=3, top_k=1, top_p=0.2, eos_token_id=[3, 9]),  # beam sampling keeps len(eos)+1
    dict(do_sample=True, num_beams=3, top_k=1, eos_token_id=None),
    dict(do_sample=False, temperature=0.5, top_k=3, top_p=0.5, min_length=3, eos_token_id=None),
]


@pytest.fixture(scope="module")
def hf_model():
    return hf_bert2bert()


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(sorted(s)) or "defaults")
def test_build_matches_transformers_order_and_output(hf_model, settings):
    fields = dict(max_length=10, eos_token_id=3, decoder_start_token_id=2, pad_token_id=0)
    fields.update(settings)
    ref_fields = dict(fields)
    if fields.get("min_new_tokens") is not None:  # what transformers' _prepare_generated_length does first
        ref_fields["min_length"] = fields["min_new_tokens"] + 1
    hf_config = transformers.GenerationConfig(**ref_fields)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_model._prepare_special_tokens(hf_config, device="cpu")
        hf_list = hf_model._get_logits_processor(hf_config, input_ids_seq_length=1, device="cpu", model_kwargs={})
    mine = build_logits_processors(GenerationConfig(**ref_fields))  # a resolved config, as prepare_config's
    assert [type(p).__name__ for p in mine] == [NAMES[type(p).__name__] for p in hf_list]
    for p, q in zip(mine, hf_list):
        if isinstance(q, (hf_lp.TopKLogitsWarper, hf_lp.TopPLogitsWarper)):
            assert p.min_tokens_to_keep == q.min_tokens_to_keep
        if isinstance(q, hf_lp.TopKLogitsWarper):
            assert p.top_k == q.top_k
    for cur_len in (1, 5, 9):
        ids, scores = case(cur_len, cur_len=cur_len, id_range=6)
        assert_same(ours(mine, ids, scores, np), reference(hf_list, ids, scores))


def test_empty_list_returns_scores_unchanged():
    ids, scores = case(0)
    assert build_logits_processors(GenerationConfig(top_k=0)) == []
    assert lp.LogitsProcessorList()(ids, scores) is scores


# A processor checks the arguments only it reads (its contract, which guards direct use; generate does not repeat
# these rules). Lengths and token ids are generate's: validate() checks them (tests/test_generate.py ERRORS).
@pytest.mark.parametrize("make, name", [
    (lambda: wp.TopK(0), "top_k"), (lambda: wp.TopK(-2), "top_k"), (lambda: wp.TopK(2.5), "top_k"),
    (lambda: wp.TopK(3, min_tokens_to_keep=0), "min_tokens_to_keep"), (lambda: wp.TopP(0.0), "top_p"),
    (lambda: wp.TopP(1.5), "top_p"), (lambda: wp.TopP(-0.1), "top_p"), (lambda: wp.TopP("0.5"), "top_p"),
    (lambda: wp.Temperature(0.0), "temperature"), (lambda: wp.Temperature(-1.0), "temperature"),
    (lambda: lp.RepetitionPenalty(0.0), "repetition_penalty"), (lambda: lp.RepetitionPenalty(True), "repetition"),
    (lambda: lp.NoRepeatNGram(0), "no_repeat_ngram_size"),
], ids=["topk0", "topk-neg", "topk-float", "keep0", "topp0", "topp-big", "topp-neg", "topp-str", "temp0",
        "temp-neg", "penalty0", "penalty-bool", "ngram0"])
def test_bad_arguments_raise(make, name):
    with pytest.raises(GenerationError, match=name):
        make()


def test_numpy_numbers_are_good_arguments():
    assert wp.Temperature(np.float32(0.5)).temperature == 0.5 and wp.TopK(np.int64(3)).top_k == 3
    assert wp.TopP(np.float64(0.9)).top_p == 0.9 and lp.RepetitionPenalty(np.float32(2.0)).penalty == 2.0


@pytest.mark.parametrize("fields, name", [(dict(top_p=1.5), "top_p"), (dict(top_k=-1), "top_k"),
                                          (dict(temperature=0.0), "temperature"),
                                          (dict(repetition_penalty=-1.0), "repetition_penalty")])
def test_build_hands_every_non_neutral_setting_to_its_processor(fields, name):
    """Not only the settings that filter: a bad one reaches the constructor that checks it (once)."""
    with pytest.raises(GenerationError, match=name):
        build_logits_processors(GenerationConfig(do_sample=True, max_length=10, **fields))


# ---- transformers 5's other processors ------------------------------------------------------------------------

from seq2seq.generation import sequence_bias as sb  # noqa: E402

SOURCES = np.array([[5, 6, 7, 5, 6, 8, 0, 0], [9, 9, 9, 4, 3, 2, 1, 1]])  # [B, S]: repeats, and ids >= VOCAB below


@pytest.mark.parametrize("bias", [
    [[[3], -2.5], [[4], 1.5], [[6, 7], 3.0], [[1, 2, 3], -1.0], [[5, 7], -np.inf], [[2, 7], 0.5]],
    {(3,): 2.0, (1, 1): -4.0, (0, 3): 1.25},
], ids=["list", "dict"])
def test_sequence_bias(xp, bias):
    ids, scores = case(3, cur_len=6, id_range=8)  # few ids: prefixes match often
    theirs = {tuple(k): float(v) for k, v in bias.items()} if isinstance(bias, dict) else \
        [[k, float(v)] for k, v in bias]
    assert_same(ours(sb.SequenceBias(bias), ids, scores, xp),
                reference(hf_lp.SequenceBiasLogitsProcessor(theirs), ids, scores))


@pytest.mark.parametrize("eos", [None, 3, [3, 4]], ids=["no-eos", "eos", "eos-list"])
def test_bad_words(xp, eos):
    bad = [[3], [4], [1, 5], [2, 2, 6], [7, 1]]
    ids, scores = case(4, cur_len=5, id_range=8)
    got = ours(sb.NoBadWords(bad, eos), ids, scores, xp)
    assert_same(got, reference(hf_lp.NoBadWordsLogitsProcessor(bad, eos), ids, scores))
    assert np.isneginf(got).any()


def test_suppress_tokens(xp):
    ids, scores = case(5)
    assert_same(ours(lp.SuppressTokens([1, 4, 99]), ids, scores, xp),
                reference(hf_lp.SuppressTokensLogitsProcessor([1, 4, 99]), ids, scores))


@pytest.mark.parametrize("cur_len", [1, 2, 3])
def test_suppress_tokens_at_begin(xp, cur_len):
    ids, scores = case(cur_len, cur_len=cur_len)
    assert_same(ours(lp.SuppressTokensAtBegin([2, 5], 2), ids, scores, xp),
                reference(hf_lp.SuppressTokensAtBeginLogitsProcessor([2, 5], 2), ids, scores))


@pytest.mark.parametrize("penalty", [0.6, 1.7])
@pytest.mark.parametrize("rows", [2, 6], ids=["one-per-source", "beams"])
def test_encoder_repetition_penalty(xp, penalty, rows):
    ids, scores = case(rows, rows=rows)
    assert_same(ours(lp.EncoderRepetitionPenalty(penalty, xp.asarray(SOURCES)), ids, scores, xp),
                reference(hf_lp.EncoderRepetitionPenaltyLogitsProcessor(penalty, torch.tensor(SOURCES)), ids, scores))


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("cur_len", [1, 2, 6])
def test_encoder_no_repeat_ngram(xp, n, cur_len):
    ids, scores = case(n + cur_len, rows=4, cur_len=cur_len, id_range=10)  # 2 rows per source
    if cur_len >= 2:
        ids[:, -2:] = [[5, 6], [5, 6], [9, 9], [4, 3]]  # suffixes that match source n-grams
    got = ours(lp.EncoderNoRepeatNGram(n, xp.asarray(SOURCES)), ids, scores, xp)
    assert_same(got, reference(hf_lp.EncoderNoRepeatNGramLogitsProcessor(n, torch.tensor(SOURCES)), ids, scores))


@pytest.mark.parametrize("cur_len", [3, 4, 5, 9])
@pytest.mark.parametrize("eos", [3, [3, 9]], ids=["eos", "eos-list"])
def test_exponential_decay_length_penalty(xp, cur_len, eos):
    ids, scores = case(cur_len, cur_len=cur_len)
    scores[0, 3] = -np.inf  # a filtered eos stays filtered
    assert_same(ours(lp.ExponentialDecayLengthPenalty((3, 1.5), eos, 1), ids, scores, xp),
                reference(hf_lp.ExponentialDecayLengthPenalty((3, 1.5), eos, 1), ids, scores))


@pytest.mark.parametrize("make, theirs", [
    (lambda k: wp.MinP(0.1, min_tokens_to_keep=k), lambda k: hf_lp.MinPLogitsWarper(0.1, min_tokens_to_keep=k)),
    (lambda k: wp.MinP(0.0, min_tokens_to_keep=k), lambda k: hf_lp.MinPLogitsWarper(0.0, min_tokens_to_keep=k)),
    (lambda k: wp.MinP(1.0, min_tokens_to_keep=k), lambda k: hf_lp.MinPLogitsWarper(1.0, min_tokens_to_keep=k)),
    (lambda k: wp.Typical(0.2, min_tokens_to_keep=k), lambda k: hf_lp.TypicalLogitsWarper(0.2, min_tokens_to_keep=k)),
    (lambda k: wp.Typical(0.9, min_tokens_to_keep=k), lambda k: hf_lp.TypicalLogitsWarper(0.9, min_tokens_to_keep=k)),
    (lambda k: wp.Epsilon(0.02, min_tokens_to_keep=k), lambda k: hf_lp.EpsilonLogitsWarper(0.02, min_tokens_to_keep=k)),
    (lambda k: wp.Epsilon(0.5, min_tokens_to_keep=k), lambda k: hf_lp.EpsilonLogitsWarper(0.5, min_tokens_to_keep=k)),
    (lambda k: wp.Eta(0.01, min_tokens_to_keep=k), lambda k: hf_lp.EtaLogitsWarper(0.01, min_tokens_to_keep=k)),
    (lambda k: wp.Eta(0.3, min_tokens_to_keep=k), lambda k: hf_lp.EtaLogitsWarper(0.3, min_tokens_to_keep=k)),
    (lambda k: wp.LogitNormalization(), lambda k: hf_lp.LogitNormalization()),
], ids=["min_p", "min_p-0", "min_p-1", "typical-0.2", "typical-0.9", "epsilon", "epsilon-big", "eta", "eta-big",
        "normalize"])
@pytest.mark.parametrize("keep", [1, 3])
@pytest.mark.parametrize("filtered", [False, True], ids=["raw", "filtered"])
def test_new_warpers(xp, make, theirs, keep, filtered):
    ids, scores = case(keep + 10 * filtered)
    if filtered:
        scores[:, ::3] = -np.inf  # after a constraint
    assert_same(ours(make(keep), ids, scores, xp), reference(theirs(keep), ids, scores))


SOURCE_SETTINGS = [
    dict(sequence_bias=[[[3], -1.0], [[4, 5], 2.0]], encoder_repetition_penalty=1.3, repetition_penalty=1.2,
         no_repeat_ngram_size=2, encoder_no_repeat_ngram_size=2, bad_words_ids=[[3], [1, 2]], min_length=4,
         forced_bos_token_id=5, exponential_decay_length_penalty=(2, 1.2), suppress_tokens=[7],
         begin_suppress_tokens=[8], renormalize_logits=True),
    dict(do_sample=True, temperature=0.8, top_k=9, top_p=0.9, min_p=0.05, typical_p=0.8, epsilon_cutoff=0.01,
         eta_cutoff=0.02, renormalize_logits=True, begin_suppress_tokens=[1]),
    dict(do_sample=True, num_beams=2, min_p=0.2, typical_p=0.5, epsilon_cutoff=0.1, eta_cutoff=0.1,
         eos_token_id=[3, 9]),
]
NEW_NAMES = {"SequenceBiasLogitsProcessor": "SequenceBias", "NoBadWordsLogitsProcessor": "NoBadWords",
             "EncoderRepetitionPenaltyLogitsProcessor": "EncoderRepetitionPenalty",
             "EncoderNoRepeatNGramLogitsProcessor": "EncoderNoRepeatNGram",
             "ExponentialDecayLengthPenalty": "ExponentialDecayLengthPenalty",
             "SuppressTokensLogitsProcessor": "SuppressTokens",
             "SuppressTokensAtBeginLogitsProcessor": "SuppressTokensAtBegin", "MinPLogitsWarper": "MinP",
             "TypicalLogitsWarper": "Typical", "EpsilonLogitsWarper": "Epsilon", "EtaLogitsWarper": "Eta",
             "LogitNormalization": "LogitNormalization", **NAMES}


@pytest.mark.parametrize("settings", SOURCE_SETTINGS, ids=["constraints", "warpers", "beam-warpers"])
def test_build_matches_transformers_with_every_processor(hf_model, settings):
    fields = {**dict(max_length=10, eos_token_id=3, decoder_start_token_id=2, pad_token_id=0), **settings}
    hf_config = transformers.GenerationConfig(**fields)
    sources = SOURCES[:, :6]  # the ids transformers checks for -100 must lie inside its encoder's vocabulary
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_model._prepare_special_tokens(hf_config, device="cpu")
        hf_list = hf_model._get_logits_processor(hf_config, input_ids_seq_length=1, device="cpu", model_kwargs={},
                                                 encoder_input_ids=torch.tensor(sources))
    mine = build_logits_processors(GenerationConfig(**fields), encoder_input_ids=sources, vocab_size=VOCAB)
    assert [type(p).__name__ for p in mine] == [NEW_NAMES[type(p).__name__] for p in hf_list]
    rows = 2 * fields.get("num_beams", 1)
    for cur_len in (1, 2, 5, 9):
        ids, scores = case(cur_len, rows=rows, cur_len=cur_len, id_range=6)
        assert_same(ours(mine, ids, scores, np), reference(hf_list, ids, scores))


def test_encoder_settings_without_sources_warn_and_are_ignored():
    with pytest.warns(UserWarning, match="encoder_no_repeat_ngram_size"):
        mine = build_logits_processors(GenerationConfig(encoder_no_repeat_ngram_size=2, max_length=5))
    assert mine == []


@pytest.mark.parametrize("make, name", [
    (lambda: sb.SequenceBias([]), "sequence_bias"), (lambda: sb.SequenceBias([[[3], "x"]]), "sequence_bias"),
    (lambda: sb.SequenceBias([[[], 1.0]]), "sequence_bias"), (lambda: sb.SequenceBias([[[3, -1], 1.0]]), "sequence"),
    (lambda: sb.SequenceBias([[[3, 40], 1.0]], vocab_size=VOCAB), "outside"),
    (lambda: sb.NoBadWords([]), "bad_words_ids"), (lambda: sb.NoBadWords([3, 4]), "bad_words_ids"),
    (lambda: sb.NoBadWords([[3, 99]], vocab_size=VOCAB), "99"),
    (lambda: lp.SuppressTokens(3), "suppress_tokens"), (lambda: lp.SuppressTokensAtBegin([1.5], 1), "begin_suppress"),
    (lambda: lp.EncoderRepetitionPenalty(0.0, SOURCES), "encoder_repetition_penalty"),
    (lambda: lp.EncoderNoRepeatNGram(0, SOURCES), "encoder_no_repeat_ngram_size"),
    (lambda: lp.ExponentialDecayLengthPenalty(1.5, 3, 1), "exponential_decay_length_penalty"),
    (lambda: lp.ExponentialDecayLengthPenalty((2, 1.5), None, 1), "eos_token_id"),
    (lambda: wp.MinP(1.5), "min_p"), (lambda: wp.Typical(1.0), "typical_p"), (lambda: wp.Typical(0.0), "typical_p"),
    (lambda: wp.Epsilon(1.0), "epsilon_cutoff"), (lambda: wp.Eta(-0.1), "eta_cutoff"),
    (lambda: wp.MinP(0.1, min_tokens_to_keep=0), "min_tokens_to_keep"),
])
def test_new_bad_arguments_raise(make, name):
    with pytest.raises(GenerationError, match=name):
        make()


def test_renormalize_logits_must_be_a_boolean():
    with pytest.raises(GenerationError, match="renormalize_logits"):
        build_logits_processors(GenerationConfig(renormalize_logits="yes", max_length=5))
