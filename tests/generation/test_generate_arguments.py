"""transformers 5's other generate arguments, against transformers' generate on the same random model.

Deterministic settings (biases, banned words, suppressed tokens, the source's repetitions, the length penalty,
renormalized scores, stop strings) must give identical ids; sampling settings must give transformers' processed
scores at the first step (the draws themselves come from different generators); ``max_time`` must stop early and
cleanly; ``encoder_outputs`` must give what encoding the sources gives.
"""
import warnings

import numpy as np
import pytest

from oracle import batch, hf_bert2bert, one_torch_thread, save_hf, torch, transformers  # noqa: F401
import seq2seq
from seq2seq.core.errors import GenerationError, InputError

EOS = 27
VOCAB = 61
LETTERS = "abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    transformers.logging.set_verbosity_error()
    hf = hf_bert2bert(spread=4.0)
    hf.generation_config.decoder_start_token_id, hf.generation_config.pad_token_id = 2, 0
    hf.generation_config.eos_token_id = EOS
    return hf, save_hf(hf, tmp_path_factory.mktemp("bert2bert"))


@pytest.fixture(scope="module")
def hf(saved):
    return saved[0]


@pytest.fixture(scope="module")
def model(saved):
    return seq2seq.EncoderDecoderModel.from_pretrained(saved[1])


@pytest.fixture(scope="module")
def inputs():
    ids, mask, _ = batch(VOCAB, batch_size=4, src_len=9)
    return ids, mask


def hf_generate(hf, ids, mask=None, **kwargs):
    extra = {} if mask is None else {"attention_mask": torch.tensor(mask)}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = hf.generate(None if ids is None else torch.tensor(ids), **extra, **kwargs)
    return out if kwargs.get("return_dict_in_generate") else out.numpy()


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def ids_of(kwargs):
    return ",".join(f"{k}={v}" for k, v in kwargs.items() if k != "tokenizer")


# ---- deterministic settings: identical ids ----------------------------------------------------------------------

DETERMINISTIC = [
    dict(sequence_bias=[[[EOS], -3.0], [[40], 2.5]]),
    dict(sequence_bias=[[[44, 44], -20.0], [[5, 44], 4.0], [[EOS], 1.0]], eos_token_id=None, max_new_tokens=12),
    dict(bad_words_ids=[[EOS]], max_new_tokens=10),  # an eos alone is never banned, as transformers
    dict(bad_words_ids=[[44], [16, 16], [EOS, 3, 4]], max_new_tokens=12),
    dict(suppress_tokens=[44, 16, 200], max_new_tokens=12),
    dict(begin_suppress_tokens=[44, EOS], max_new_tokens=8),
    dict(begin_suppress_tokens=[44], forced_bos_token_id=44, max_new_tokens=8),  # suppressed at the 2nd token
    dict(encoder_repetition_penalty=1.8, max_new_tokens=12),
    dict(encoder_repetition_penalty=0.5, repetition_penalty=1.3, max_new_tokens=12),
    dict(encoder_no_repeat_ngram_size=1, max_new_tokens=10),
    dict(encoder_no_repeat_ngram_size=2, no_repeat_ngram_size=2, eos_token_id=None, max_new_tokens=16),
    dict(exponential_decay_length_penalty=(2, 1.6), max_new_tokens=16),
    dict(exponential_decay_length_penalty=[0, 3.0], eos_token_id=[EOS, 16], max_new_tokens=16),
    dict(renormalize_logits=True, min_new_tokens=3, max_new_tokens=10),
    dict(sequence_bias=[[[16], 1.0]], bad_words_ids=[[44]], suppress_tokens=[5], begin_suppress_tokens=[40],
         encoder_repetition_penalty=1.2, exponential_decay_length_penalty=(3, 1.3), renormalize_logits=True,
         max_new_tokens=14),
]


@pytest.mark.parametrize("kwargs", DETERMINISTIC, ids=ids_of)
def test_greedy_matches_transformers(hf, model, inputs, kwargs):
    want = hf_generate(hf, *inputs, **kwargs)
    np.testing.assert_array_equal(quiet(model.generate, *inputs, **kwargs), want)


@pytest.mark.parametrize("kwargs", DETERMINISTIC[::2], ids=ids_of)
def test_beam_search_matches_transformers(hf, model, inputs, kwargs):
    kwargs = dict(kwargs, num_beams=3, num_return_sequences=2)
    want = hf_generate(hf, *inputs, return_dict_in_generate=True, output_scores=True, **kwargs)
    got = quiet(model.generate, *inputs, return_dict_in_generate=True, output_scores=True, **kwargs)
    np.testing.assert_array_equal(got.sequences, want.sequences.numpy())
    np.testing.assert_allclose(got.sequences_scores, want.sequences_scores.numpy(), rtol=1e-4, atol=1e-5)


def assert_scores_match(got, want, *, steps=None):
    assert len(got) == len(want)
    for step, (ours, ref) in list(enumerate(zip(got, want)))[:steps]:
        ref = ref.numpy()
        np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(ref), err_msg=f"step {step}")
        finite = np.isfinite(ref)
        np.testing.assert_allclose(ours[finite], ref[finite], rtol=1e-4, atol=1e-4, err_msg=f"step {step}")


def test_renormalized_scores_match_transformers(hf, model, inputs):
    kwargs = dict(renormalize_logits=True, suppress_tokens=[3], max_new_tokens=8, return_dict_in_generate=True,
                  output_scores=True)
    got, want = model.generate(*inputs, **kwargs), hf_generate(hf, *inputs, **kwargs)
    assert_scores_match(got.scores, want.scores)
    probabilities = np.exp(got.scores[0]).sum(axis=-1)
    np.testing.assert_allclose(probabilities, 1.0, rtol=1e-5)


# ---- sampling settings: transformers' filtered distribution -------------------------------------------------------

SAMPLING = [dict(min_p=0.1), dict(typical_p=0.6), dict(epsilon_cutoff=0.02), dict(eta_cutoff=0.05),
            dict(temperature=1.5, top_k=20, top_p=0.95, min_p=0.05, typical_p=0.9, epsilon_cutoff=0.001,
                 eta_cutoff=0.001, renormalize_logits=True)]


@pytest.mark.parametrize("warp", SAMPLING, ids=ids_of)
@pytest.mark.parametrize("num_beams", [1, 3], ids=["sampling", "beam-sampling"])
def test_first_step_scores_match_transformers(hf, model, inputs, warp, num_beams):
    """The first step is the same in both (nothing drawn yet): the kept tokens and their scores must agree."""
    kwargs = dict(do_sample=True, num_beams=num_beams, max_new_tokens=4, return_dict_in_generate=True,
                  output_scores=True, **warp)
    got = model.generate(*inputs, seed=0, **kwargs)
    want = hf_generate(hf, *inputs, **kwargs)
    assert_scores_match(got.scores[:1], want.scores[:1])
    assert np.isneginf(got.scores[0]).any()  # the setting filtered something


@pytest.mark.parametrize("num_beams", [1, 3])
def test_sampling_is_seeded(model, inputs, num_beams):
    kwargs = dict(do_sample=True, num_beams=num_beams, max_new_tokens=10, typical_p=0.95, temperature=2.0,
                  top_k=0, eos_token_id=None)
    first = model.generate(*inputs, seed=5, **kwargs)
    np.testing.assert_array_equal(first, model.generate(*inputs, seed=5, **kwargs))
    assert any(not np.array_equal(first, model.generate(*inputs, seed=s, **kwargs)) for s in (6, 7, 8))


def test_beam_sampling_draws_follow_the_softmax(rng):
    from seq2seq.generation.beam_search import Draw
    total = np.array([[np.log(0.5), np.log(0.3), np.log(0.15), np.log(0.05), -np.inf]], dtype=np.float32)  # [1, 5]
    draw, firsts, sets = Draw(np.random.default_rng(0)), np.zeros(5), []
    for _ in range(4000):
        picked = draw(total, 2)[0]
        firsts[picked[0]] += 1  # the Gumbel-top-k order: the first is a draw from the softmax
        sets.append(tuple(sorted(picked)))
    np.testing.assert_allclose(firsts / firsts.sum(), [0.5, 0.3, 0.15, 0.05, 0.0], atol=0.03)
    assert all(4 not in s and len(set(s)) == 2 for s in sets)
    with pytest.raises(GenerationError, match="beam sampling draws 5 candidates"):
        draw(total, 5)


def test_beam_sampling_with_too_few_tokens_raises(model, inputs):
    with pytest.raises(GenerationError, match="beam sampling"):
        model.generate(*inputs, do_sample=True, num_beams=4, top_k=1, seed=0)


# ---- max_time ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [{}, dict(num_beams=3), dict(do_sample=True, seed=1)],
                         ids=["greedy", "beams", "sampling"])
def test_max_time_stops_early_and_cleanly(model, inputs, kwargs):
    full = model.generate(*inputs, eos_token_id=None, max_new_tokens=30, **kwargs)
    short = model.generate(*inputs, eos_token_id=None, max_new_tokens=30, max_time=0.0, **kwargs)
    assert full.shape[1] == 31 and short.shape == (4, 2)  # one step, then the time is up
    if "num_beams" not in kwargs:  # beams finish at the cut instead of going on: a different ranking
        np.testing.assert_array_equal(short, full[:, :2])


def test_max_time_is_checked(model, inputs):
    with pytest.raises(GenerationError, match="max_time"):
        model.generate(*inputs, max_time=-1)
    with pytest.raises(GenerationError, match="max_time"):
        model.generate(*inputs, max_time="1s")


# ---- stop strings -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory):
    """A 61-token WordPiece vocabulary for the 61-token model: ours and transformers' tokenizer on the same file."""
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *LETTERS, *("##" + c for c in LETTERS), ".", "!", "the",
             "and"]
    assert len(words) == VOCAB
    path = tmp_path_factory.mktemp("wordpiece")
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    (path / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer", "do_lower_case": true}')
    return seq2seq.Tokenizer.from_pretrained(path), transformers.BertTokenizer.from_pretrained(str(path))


@pytest.fixture(scope="module")
def byte_level():
    """GPT-2's byte-level BPE (tests/fixtures/gpt2): the model's ids 0..60 are single printable characters."""
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "fixtures", "gpt2")
    return (seq2seq.Tokenizer.from_pretrained(path),
            transformers.GPT2Tokenizer(os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt")))


def stop_strings_from(tokenizer, row, *, at):
    """Stop strings the model really produces, across the end of token ``at`` of ``row``: 2 characters before it and
    1 after, and 1 and 1 (which overhang both tokens when they are longer)."""
    def text(stop):  # decoded after a token of context: "##x" and " x" as in the middle of a text
        return tokenizer.decode([int(t) for t in row[at - 1:stop]], skip_special_tokens=False)

    cut = len(text(at + 1))  # where token at + 1 begins
    return [text(at + 2)[cut - 2:cut + 1], text(at + 2)[cut - 1:cut + 1]]


@pytest.mark.parametrize("tokenizers", ["wordpiece", "byte_level"])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_stop_strings_match_transformers(hf, model, inputs, request, tokenizers, num_beams):
    ours_tok, hf_tok = request.getfixturevalue(tokenizers)
    plain = model.generate(*inputs, eos_token_id=None, max_new_tokens=20)
    for at in (3, 6):
        for which in (0, 1):  # across two tokens; overhanging both
            stops = [stop_strings_from(ours_tok, row, at=at)[which] for row in plain]  # one for every row
            kwargs = dict(eos_token_id=None, max_new_tokens=20, num_beams=num_beams, stop_strings=stops)
            want = hf_generate(hf, *inputs, tokenizer=hf_tok, **kwargs)
            got = model.generate(*inputs, tokenizer=ours_tok, **kwargs)
            np.testing.assert_array_equal(got, want, err_msg=f"stop strings {stops!r}")
            if num_beams == 1:
                assert got.shape[1] <= at + 2  # every row met its stop string by then


def test_stop_strings_with_eos_pad_the_stopped_rows(hf, model, inputs, wordpiece):
    ours_tok, hf_tok = wordpiece
    plain = model.generate(*inputs, max_new_tokens=20)
    stop = stop_strings_from(ours_tok, plain[0], at=2)[0]
    want = hf_generate(hf, *inputs, tokenizer=hf_tok, stop_strings=stop, max_new_tokens=20)
    np.testing.assert_array_equal(model.generate(*inputs, tokenizer=ours_tok, stop_strings=stop, max_new_tokens=20),
                                  want)


def test_stop_strings_need_a_tokenizer_and_strings(model, inputs, wordpiece):
    with pytest.raises(GenerationError, match="tokenizer"):
        model.generate(*inputs, stop_strings=["ab"])
    for bad in ([], [""], [3], 7):
        with pytest.raises(GenerationError, match="stop_strings"):
            model.generate(*inputs, stop_strings=bad, tokenizer=wordpiece[0])


# ---- encoder_outputs --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [dict(max_new_tokens=9), dict(num_beams=3, num_return_sequences=2),
                                    dict(do_sample=True, seed=4, num_return_sequences=2)],
                         ids=["greedy", "beams", "sampling"])
def test_encoder_outputs_give_what_the_sources_give(model, inputs, kwargs):
    ids, mask = inputs
    want = model.generate(ids, mask, **kwargs)
    memory = model.encode(ids, mask)
    as_attribute = type("BaseModelOutput", (), {"last_hidden_state": memory.data})()  # transformers' form
    for given in (memory, memory.data, {"last_hidden_state": memory.data}, as_attribute):
        np.testing.assert_array_equal(model.generate(encoder_outputs=given, attention_mask=mask, **kwargs), want)
    if "num_beams" not in kwargs:
        stream = np.stack(list(model.generate_stream(encoder_outputs=memory, attention_mask=mask, **kwargs)), axis=1)
        np.testing.assert_array_equal(stream, want[:, 1:])


def test_transformers_encoder_outputs_match_transformers(hf, model, inputs):
    ids, mask = inputs
    with torch.no_grad():
        encoded = hf.get_encoder()(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    want = hf_generate(hf, None, mask, encoder_outputs=encoded, max_new_tokens=9)
    got = model.generate(encoder_outputs=encoded.last_hidden_state.numpy(), attention_mask=mask, max_new_tokens=9)
    np.testing.assert_array_equal(got, want)


def test_encoder_outputs_with_source_settings(model, inputs):
    ids, mask = inputs
    memory = model.encode(ids, mask)
    kwargs = dict(encoder_repetition_penalty=1.5, encoder_no_repeat_ngram_size=2, max_new_tokens=9)
    want = model.generate(ids, mask, **kwargs)
    np.testing.assert_array_equal(model.generate(ids, mask, encoder_outputs=memory, **kwargs), want)
    with pytest.warns(UserWarning) as caught:  # no ids to read: ignored, as transformers
        alone = model.generate(encoder_outputs=memory, attention_mask=mask, **kwargs)
    assert all(any(name in str(w.message) for w in caught) for name in kwargs if name.startswith("encoder"))
    assert all(w.filename == __file__ for w in caught)  # pointing at the caller
    np.testing.assert_array_equal(alone, quiet(model.generate, ids, mask, max_new_tokens=9,
                                               encoder_no_repeat_ngram_size=0, encoder_repetition_penalty=1.0))


def test_bad_encoder_outputs_raise(model, inputs):
    ids, mask = inputs
    memory = model.encode(ids, mask).data
    for bad, message in [(memory[0], "shape"), (memory[..., :5], "shape"), ("memory", "encoder_outputs"),
                         (memory.astype(np.int64), "dtype"), ([[1.0]], "shape")]:
        with pytest.raises(GenerationError, match=message):
            model.generate(encoder_outputs=bad, attention_mask=mask)
    with pytest.raises(InputError, match="attention_mask"):
        model.generate(encoder_outputs=memory, attention_mask=mask[:, :4])
    with pytest.raises(GenerationError, match="batch size"):
        model.generate(ids[:2], encoder_outputs=memory, encoder_repetition_penalty=1.2)
