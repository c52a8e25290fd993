"""``generate`` against transformers' (greedy parity), and the properties sampling and streaming must have.

The reference is a random transformers bert2bert whose weights are scaled up (``spread``) so that the best token
of every step wins by a clear margin: equal ids then test the algorithm, not float noise. Its eos (27) is a token
the model likes, so rows of the batch end at different steps and the pad logic is exercised.
"""
import copy
import warnings

import numpy as np
import pytest

from oracle import batch, hf_bert2bert, one_torch_thread, save_hf, torch, transformers  # noqa: F401
import seq2seq
from seq2seq.generation import generate as gen
from seq2seq.core.backend import to_numpy
from seq2seq.generation.config import GenerationConfig
from seq2seq.core.errors import GenerationError, InputError
from seq2seq.generation import logits_process as lp
from seq2seq.generation import sampling
from seq2seq.generation import warpers
from seq2seq.generation.processors import build_logits_processors

EOS = 27


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    transformers.logging.set_verbosity_error()
    hf = hf_bert2bert(spread=4.0)
    hf.generation_config.decoder_start_token_id, hf.generation_config.pad_token_id = 2, 0
    hf.generation_config.eos_token_id = EOS
    path = save_hf(hf, tmp_path_factory.mktemp("bert2bert"))
    return hf, path


@pytest.fixture(scope="module")
def hf(saved):
    return saved[0]


@pytest.fixture(scope="module")
def model(saved):
    return seq2seq.EncoderDecoderModel.from_pretrained(saved[1])


@pytest.fixture(scope="module")
def inputs():
    ids, mask, _ = batch(61, batch_size=4, src_len=9)  # rows 1..3 right-padded by 2, 4, 6 tokens
    return ids, mask


def hf_generate(hf, ids, mask=None, **kwargs):
    extra = {} if mask is None else {"attention_mask": torch.tensor(mask)}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = hf.generate(torch.tensor(ids), **extra, **kwargs)
    return out if kwargs.get("return_dict_in_generate") else out.numpy()


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ---- greedy parity ----------------------------------------------------------------------------------------------

GREEDY = [
    {},  # every row ends with eos within 10 steps, at different steps
    dict(eos_token_id=None),  # no length set anywhere: 20 new tokens
    dict(max_length=20, eos_token_id=None),  # set explicitly: 20 in all, start token included
    dict(max_length=8),
    dict(max_new_tokens=6),
    dict(max_length=30, max_new_tokens=9),  # max_new_tokens wins
    dict(min_length=14, max_new_tokens=16),
    dict(min_new_tokens=12, max_new_tokens=14),
    dict(min_length=4, min_new_tokens=9),
    dict(no_repeat_ngram_size=1, eos_token_id=None, max_new_tokens=30),
    dict(no_repeat_ngram_size=2, eos_token_id=None, max_new_tokens=30),
    dict(no_repeat_ngram_size=3, repetition_penalty=0.5, eos_token_id=None, max_new_tokens=30),
    dict(repetition_penalty=1.5),
    dict(repetition_penalty=0.7, max_new_tokens=12),
    dict(forced_eos_token_id=EOS, max_new_tokens=7),
    dict(forced_eos_token_id=[EOS, 16], max_length=9, eos_token_id=[EOS, 16]),
    dict(forced_bos_token_id=44),
    dict(eos_token_id=None, max_new_tokens=10),  # no eos: every row runs to the end, nothing padded
    dict(eos_token_id=[EOS, 16]),
    dict(pad_token_id=5),
    dict(pad_token_id=None),  # finished rows are filled with eos
    dict(repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=3, max_new_tokens=15),
    dict(do_sample=False, temperature=0.3, top_k=2, top_p=0.5),  # warpers are ignored without sampling
]


def ids_of(kwargs):
    return ",".join(f"{k}={v}" for k, v in kwargs.items()) or "defaults"


@pytest.mark.parametrize("kwargs", GREEDY, ids=ids_of)
def test_greedy_matches_transformers(hf, model, inputs, kwargs):
    ids, mask = inputs
    want = hf_generate(hf, ids, mask, **kwargs)
    got = quiet(model.generate, ids, mask, **kwargs)
    assert isinstance(got, np.ndarray) and got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_a_source_without_a_real_token_matches_transformers(hf, model, inputs, num_beams):
    """A source whose attention mask is all zeros (every key masked: attention averages all of them) decodes as
    transformers decodes it; the packed encoder keeps such a source whole (tests/nn/test_packing.py)."""
    ids, mask = inputs
    mask = mask.copy()
    mask[2] = 0
    kwargs = dict(num_beams=num_beams, max_new_tokens=6)
    np.testing.assert_array_equal(quiet(model.generate, ids, mask, **kwargs), hf_generate(hf, ids, mask, **kwargs))


def test_the_batch_exercises_eos_and_padding(hf, inputs):
    """The fixture must keep rows ending at different steps, or the pad tests above would test nothing."""
    out = hf_generate(hf, *inputs)
    ended = [(row == EOS).any() for row in out]
    lengths = {int((row != 0).sum()) for row in out}
    assert any(ended) and len(lengths) > 1, out


@pytest.mark.parametrize("mask", [True, False], ids=["mask", "no-mask"])
@pytest.mark.parametrize("rows", [1, 2])
def test_single_rows_and_lists_match_transformers(hf, model, inputs, rows, mask):
    ids, full_mask = inputs[0][-rows:], inputs[1][-rows:]
    m = full_mask if mask else None
    want = hf_generate(hf, ids, m, max_new_tokens=9)
    got = model.generate(ids.tolist(), None if m is None else m.tolist(), max_new_tokens=9)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kwargs", [dict(max_new_tokens=8), dict(repetition_penalty=1.4, forced_eos_token_id=EOS,
                                                                 no_repeat_ngram_size=2, max_length=11)],
                         ids=ids_of)
def test_output_scores_match_transformers(hf, model, inputs, kwargs):
    ids, mask = inputs
    want = hf_generate(hf, ids, mask, return_dict_in_generate=True, output_scores=True, **kwargs)
    got = model.generate(ids, mask, return_dict_in_generate=True, output_scores=True, **kwargs)
    assert isinstance(got, gen.GenerateOutput) and got.sequences_scores is None
    np.testing.assert_array_equal(got.sequences, want.sequences.numpy())
    assert isinstance(got.scores, tuple) and len(got.scores) == len(want.scores) == got.sequences.shape[1] - 1
    for step, (ours, ref) in enumerate(zip(got.scores, want.scores)):
        ref = ref.numpy()
        assert ours.shape == ref.shape and ours.dtype == np.float32
        np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(ref), err_msg=f"step {step}")
        finite = np.isfinite(ref)
        scale = np.abs(ref[finite]).max()
        assert np.abs(ours[finite] - ref[finite]).max() <= 1e-4 * scale, f"step {step}"


def test_return_dict_without_scores(model, inputs):
    out = model.generate(*inputs, max_new_tokens=4, return_dict_in_generate=True)
    assert out.scores is None and out.sequences.shape == (4, 5)


# ---- configuration ----------------------------------------------------------------------------------------------

def test_generation_config_json_gives_defaults_and_kwargs_override(hf, inputs, tmp_path):
    ids, mask = inputs
    original = copy.deepcopy(hf.generation_config)
    hf.generation_config.max_new_tokens, hf.generation_config.no_repeat_ngram_size = 7, 2
    try:
        path = save_hf(hf, tmp_path / "with-defaults")
        ours = seq2seq.EncoderDecoderModel.from_pretrained(path)
        assert ours.generation_config.max_new_tokens == 7 and ours.generation_config.no_repeat_ngram_size == 2
        np.testing.assert_array_equal(ours.generate(ids, mask), hf_generate(hf, ids, mask))
        overridden = ours.generate(ids, mask, max_new_tokens=3, no_repeat_ngram_size=0)
        np.testing.assert_array_equal(overridden, hf_generate(hf, ids, mask, max_new_tokens=3, no_repeat_ngram_size=0))
        assert overridden.shape == (4, 4)
    finally:
        hf.generation_config = original


def test_unset_fields_take_the_global_defaults(model):
    config = GenerationConfig(top_k=None, temperature=None, do_sample=True)  # as a generation_config.json of nulls
    prepared = gen.prepare_config(model, config)
    assert (prepared.top_k, prepared.temperature) == (50, 1.0)
    assert gen.prepare_config(model, config, top_k=None).top_k is None  # an argument of None turns it off


def test_given_generation_config_inherits_unset_fields(model, inputs):
    config = GenerationConfig(max_new_tokens=5)  # no special ids: they come from model.generation_config
    out = model.generate(*inputs, generation_config=config)
    assert out.shape == (4, 6) and (out[:, 0] == 2).all()
    np.testing.assert_array_equal(out, model.generate(*inputs, max_new_tokens=5))
    assert model.generation_config.max_new_tokens is None  # nothing leaks into the model's own config
    saved = copy.deepcopy(model.generation_config)
    try:
        model.generation_config.no_repeat_ngram_size, model.generation_config.top_k = 2, 7
        prepared = gen.prepare_config(model, GenerationConfig(top_k=3, max_new_tokens=4))
        assert (prepared.no_repeat_ngram_size, prepared.top_k, prepared.max_length) == (2, 3, 5)
    finally:
        model.generation_config = saved


def test_prepare_config_resolves_lengths_and_ids(model):
    config = gen.prepare_config(model, max_new_tokens=5, min_new_tokens=2, eos_token_id=[7, 8], pad_token_id=None)
    assert (config.max_length, config.min_length, config.pad_token_id, config.decoder_start_token_id) == (6, 3, 7, 2)
    assert gen.prepare_config(model).max_length == 21 and gen.prepare_config(model, max_length=12).max_length == 12


def test_decoder_start_falls_back_to_model_config_then_bos(model):
    config = copy.deepcopy(model.generation_config)
    config.decoder_start_token_id = None
    fake = type("M", (), {"generation_config": config, "config": copy.deepcopy(model.config)})()
    fake.config.decoder_start_token_id = 9
    assert gen.prepare_config(fake).decoder_start_token_id == 9
    fake.config.decoder_start_token_id = None
    assert gen.prepare_config(fake, bos_token_id=4).decoder_start_token_id == 4
    with pytest.raises(GenerationError, match="decoder_start_token_id"):
        gen.prepare_config(fake)


ERRORS = [
    (dict(foo=1, max_lenght=3), "foo"),
    (dict(num_return_sequences=2), "num_return_sequences"),
    (dict(num_beams=2, num_return_sequences=3), "num_beams"),
    (dict(num_beams=0), "num_beams"),
    (dict(do_sample=True, temperature=0.0), "temperature"),
    (dict(do_sample=True, temperature=-1.0), "temperature"),
    (dict(do_sample=True, top_p=0.0), "top_p"),
    (dict(do_sample=True, top_p=1.5), "top_p"),
    (dict(do_sample=True, top_k=-1), "top_k"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_new_tokens=-3), "max_new_tokens"),
    (dict(max_length=1), "max_length"),
    (dict(max_length=0), "max_length"),
    (dict(min_length=-1), "min_length"),
    (dict(min_new_tokens=-2), "min_new_tokens"),
    (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size"),
    (dict(eos_token_id=1000), "eos_token_id"),
    (dict(eos_token_id=[]), "eos_token_id"),
    (dict(pad_token_id=-1), "pad_token_id"),
    (dict(decoder_start_token_id=61), "decoder_start_token_id"),
    (dict(forced_eos_token_id=99), "forced_eos_token_id"),
    (dict(forced_eos_token_id=[4, -1]), "forced_eos_token_id"),
    (dict(forced_bos_token_id=-1), "forced_bos_token_id"),
    (dict(do_sample=True, top_k=2.5), "top_k"),
    (dict(repetition_penalty="high"), "repetition_penalty"),
    (dict(early_stopping="sometimes"), "early_stopping"),
    (dict(do_sample="yes"), "do_sample"),
    (dict(do_sample=True, seed="lucky"), "seed"),
    (dict(eos_token_id="</s>"), "eos_token_id"),
    (dict(generation_config={"max_length": 5}), "GenerationConfig"),
    (dict(generation_config=GenerationConfig(penalty_alpha=0.6)), "penalty_alpha"),
    (dict(bad_words_ids=[[3, 61]]), "bad_words_ids"),
]


@pytest.mark.parametrize("kwargs,names", ERRORS, ids=[e[1] + str(i) for i, e in enumerate(ERRORS)])
def test_impossible_arguments_raise(model, inputs, kwargs, names):
    with pytest.raises(GenerationError, match=names):
        model.generate(*inputs, **kwargs)
    with pytest.raises(GenerationError, match=names):
        model.generate_stream(*inputs, **kwargs)  # checked at the call, not at the first next()


def test_sampling_settings_are_only_checked_when_sampling(model, inputs):
    out = model.generate(*inputs, max_new_tokens=3, temperature=0.0, top_p=2.0, top_k=-4)  # ignored, as transformers
    np.testing.assert_array_equal(out, model.generate(*inputs, max_new_tokens=3))


def test_each_argument_is_checked_once(model, inputs, monkeypatch):
    """validate() checks generate's own settings, the processors' constructors their own: neither repeats the other."""
    checked = []

    def recording(name, function):
        def record(*args, **kwargs):
            checked.append(name)
            return function(*args, **kwargs)
        return record

    monkeypatch.setattr(gen, "validate", recording("validate", gen.validate))
    for cls in (warpers.Temperature, warpers.TopK, warpers.TopP, lp.RepetitionPenalty, lp.NoRepeatNGram):
        monkeypatch.setattr(cls, "__init__", recording(cls.__name__, cls.__init__))
    model.generate(*inputs, do_sample=True, seed=1, temperature=0.7, top_k=5, top_p=0.9, repetition_penalty=1.1,
                   no_repeat_ngram_size=3, max_new_tokens=4)
    assert sorted(checked) == sorted(["validate", "Temperature", "TopK", "TopP", "RepetitionPenalty",
                                      "NoRepeatNGram"])
    config = gen.prepare_config(model, do_sample=True, temperature=0.0, top_p=7.0)  # not validate's rules...
    with pytest.raises(GenerationError, match="temperature"):  # ...but the processor's, when it is made
        build_logits_processors(config)


def test_bad_inputs_raise(model):
    with pytest.raises(InputError, match="2-D"):
        model.generate([3, 4, 5])
    with pytest.raises(InputError, match="^input_ids holds id 61"):
        model.generate([[3, 61]])
    with pytest.raises(InputError, match=r"attention_mask has shape \(1, 3\)"):
        model.generate_stream([[3, 4]], attention_mask=[[1, 1, 1]])
    with pytest.raises(GenerationError, match="stream"):
        model.generate_stream([[3, 4, 5]], num_beams=2)


# ---- the cache, streaming and backends ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [dict(max_new_tokens=12), dict(no_repeat_ngram_size=2, repetition_penalty=1.2),
                                    dict(do_sample=True, seed=3, num_return_sequences=2, temperature=1.5)],
                         ids=["greedy", "penalties", "sampling"])
def test_cached_equals_uncached(model, inputs, kwargs):
    cached = model.generate(*inputs, **kwargs)
    uncached = model.generate(*inputs, use_cache=False, **kwargs)
    np.testing.assert_array_equal(cached, uncached)


@pytest.mark.parametrize("kwargs", [{}, dict(max_new_tokens=5, eos_token_id=None),
                                    dict(do_sample=True, seed=11, top_k=0, num_return_sequences=3)],
                         ids=["greedy", "no-eos", "sampling"])
def test_stream_equals_generate(model, inputs, kwargs):
    steps = list(model.generate_stream(*inputs, **kwargs))
    assert all(s.shape == (inputs[0].shape[0] * kwargs.get("num_return_sequences", 1),) for s in steps)
    np.testing.assert_array_equal(np.stack(steps, axis=1), model.generate(*inputs, **kwargs)[:, 1:])


def test_backends_give_the_same_ids(xp, saved, model, inputs):
    backend = "numpy" if xp is np else "cupy"
    other = seq2seq.EncoderDecoderModel.from_pretrained(saved[1], backend=backend)
    for kwargs in (dict(max_new_tokens=10), dict(do_sample=True, seed=5, top_p=0.9, num_return_sequences=2)):
        got = other.generate(*inputs, **kwargs)
        assert seq2seq.core.backend.backend_of(got) == backend
        np.testing.assert_array_equal(to_numpy(got), model.generate(*inputs, **kwargs))


def test_beam_search_is_dispatched(hf, model, inputs):
    kwargs = dict(num_beams=3, num_return_sequences=2, max_new_tokens=9, return_dict_in_generate=True,
                  output_scores=True)
    out = model.generate(*inputs, **kwargs)
    want = hf_generate(hf, *inputs, **kwargs)
    np.testing.assert_array_equal(out.sequences, want.sequences.numpy())
    np.testing.assert_allclose(out.sequences_scores, want.sequences_scores.numpy(), rtol=1e-4)
    assert len(out.scores) == len(want.scores)
    np.testing.assert_array_equal(model.generate(*inputs, num_beams=3, max_new_tokens=9),
                                  hf_generate(hf, *inputs, num_beams=3, max_new_tokens=9))


# ---- sampling ---------------------------------------------------------------------------------------------------

def test_top_k_1_sampling_is_greedy(model, inputs):
    greedy = model.generate(*inputs, max_new_tokens=10)
    sampled = model.generate(*inputs, max_new_tokens=10, do_sample=True, top_k=1, num_return_sequences=2)
    np.testing.assert_array_equal(sampled, np.repeat(greedy, 2, axis=0))  # interleaved: row0, row0, row1, ...


@pytest.mark.parametrize("kwargs", [dict(seed=3, temperature=1.5), dict(seed=8, top_k=0, use_cache=False)],
                         ids=["cached", "uncached"])
def test_several_sequences_equal_sampling_repeated_sources(model, inputs, kwargs):
    """num_return_sequences=2 keeps each source's encoder side once, for its 2 rows; sources repeated by hand are
    2 rows with one each (every row a source of its own). The same draws (one generator, rows in the same order)
    and the same scores: the same ids."""
    ids, mask = inputs
    common = dict(do_sample=True, max_new_tokens=12, return_dict_in_generate=True, output_scores=True, **kwargs)
    shared = model.generate(ids, mask, num_return_sequences=2, **common)
    repeated = model.generate(np.repeat(ids, 2, axis=0), np.repeat(mask, 2, axis=0), **common)
    np.testing.assert_array_equal(shared.sequences, repeated.sequences)
    for ours, ref in zip(shared.scores, repeated.scores):
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_seeds_repeat_and_differ(model, inputs):
    kwargs = dict(do_sample=True, top_k=0, temperature=2.0, max_new_tokens=12)
    first = model.generate(*inputs, seed=1, **kwargs)
    np.testing.assert_array_equal(first, model.generate(*inputs, seed=1, **kwargs))
    assert not np.array_equal(first, model.generate(*inputs, seed=2, **kwargs))
    assert not np.array_equal(model.generate(*inputs, **kwargs), model.generate(*inputs, **kwargs))  # fresh entropy


def chi_square_p(counts, probs):
    """p-value of Pearson's chi-square test of ``counts`` against ``probs`` (cells with probability > 0)."""
    expected = probs * counts.sum()
    stat = float(((counts - expected) ** 2 / expected).sum())
    dof = len(counts) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64),
                                         torch.tensor(stat / 2, dtype=torch.float64)))


def softmax(scores):
    e = np.exp(scores.astype(np.float64) - scores.max())
    return e / e.sum()


WARPS = [dict(temperature=0.7, top_k=6), dict(top_p=0.8), dict(temperature=1.8, top_k=0, top_p=0.95),
         dict(temperature=0.4, top_k=0), dict(temperature=2.5, top_k=0)]


@pytest.mark.parametrize("warp", WARPS, ids=ids_of)
def test_draws_follow_the_warped_distribution(warp):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, (1, 16)).astype(np.float32)
    processors = build_logits_processors(GenerationConfig(do_sample=True, **warp))
    scores = processors(np.array([[2]]), logits)[0]
    probs = softmax(scores)
    draws = sampling.sample_tokens(np.repeat(scores[None], 20000, axis=0), np.random.default_rng(1))
    counts = np.bincount(draws, minlength=16)
    assert counts[probs == 0].sum() == 0, "drew a filtered token"
    assert chi_square_p(counts[probs > 0], probs[probs > 0]) > 1e-3
    if "temperature" in warp:  # sharper below 1, flatter above: compare with the untempered distribution
        base = softmax(logits[0])
        kept = probs > 0
        top = np.argmax(logits[0])
        sharper = probs[top] > base[top] / base[kept].sum()
        assert sharper == (warp["temperature"] < 1)


def test_first_tokens_of_generate_follow_its_scores(model, inputs):
    """End to end: the first token over thousands of rows fits softmax of the returned first-step scores."""
    out = model.generate(inputs[0][:1], inputs[1][:1], do_sample=True, seed=7, top_k=8, temperature=3.0,
                         num_return_sequences=3000, max_new_tokens=1, return_dict_in_generate=True,
                         output_scores=True)
    probs = softmax(out.scores[0][0])
    assert np.allclose(out.scores[0], out.scores[0][0])  # every copy of the source scored the same
    counts = np.bincount(out.sequences[:, 1], minlength=probs.size)
    assert counts[probs == 0].sum() == 0 and (probs > 0).sum() == 8
    assert chi_square_p(counts[probs > 0], probs[probs > 0]) > 1e-3


def test_sampling_never_draws_a_zero_probability_token():
    scores = np.full((5000, 9), -np.inf, dtype=np.float32)
    scores[:, 0], scores[:, 8] = 0.0, -40.0  # the first and last ids, one of them almost never drawn
    draws = sampling.sample_tokens(scores, np.random.default_rng(0))
    assert set(np.unique(draws)) <= {0, 8}
    with pytest.raises(GenerationError, match="probability 0"):
        sampling.sample_tokens(np.full((1, 4), -np.inf, dtype=np.float32), np.random.default_rng(0))


@pytest.mark.parametrize("configured", [None, 20, 9], ids=["unset", "exactly-20", "9"])
def test_configured_max_length_counts_like_transformers(hf, inputs, tmp_path, configured):
    """An unset max_length means 20 new tokens; a configured one (even exactly 20) counts the whole sequence."""
    ids, mask = inputs
    original = copy.deepcopy(hf.generation_config)
    hf.generation_config.eos_token_id = None  # every row runs to the limit
    hf.generation_config.max_length = configured
    try:
        ours = seq2seq.EncoderDecoderModel.from_pretrained(save_hf(hf, tmp_path))
        out = ours.generate(ids, mask)
        np.testing.assert_array_equal(out, hf_generate(hf, ids, mask))
        assert out.shape[1] == (21 if configured is None else configured)
    finally:
        hf.generation_config = original
