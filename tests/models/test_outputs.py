"""output_attentions and output_hidden_states, on the forward pass and in generate, against transformers' eager
attention (its default SDPA attention returns no probabilities: empty tuples and a warning), for the BERT, GPT-2
and BART decoders, with padded sources and padded targets."""
import warnings

import numpy as np
import pytest

import seq2seq
from models.test_decoders import hf_model
from oracle import assert_close, batch, hf_bert2bert, one_torch_thread, save_hf, torch  # noqa: F401
from seq2seq.fast import cpu as fast_cpu
from seq2seq.nn.attention import scaled_dot_product_attention

pytestmark = pytest.mark.oracle

VOCAB = 61
NAMES = ["bert2bert", "bert2gpt2", "bert2bart"]
FIELDS = ["encoder_attentions", "decoder_attentions", "cross_attentions", "encoder_hidden_states",
          "decoder_hidden_states"]


@pytest.fixture(scope="module", params=NAMES)
def pair(request, tmp_path_factory):
    name = request.param
    hf = hf_bert2bert(spread=3.0) if name == "bert2bert" else hf_model(name)
    hf.set_attn_implementation("eager")  # SDPA gives no attention probabilities
    ours = seq2seq.EncoderDecoderModel.from_pretrained(save_hf(hf, tmp_path_factory.mktemp(name)))
    return name, hf, ours


def hf_run(hf, ids, mask, labels, **kwargs):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(labels),
                  use_cache=False, **kwargs)  # use_cache=False: transformers' BART cache bug


def assert_same_tuples(ours, ref, what, *, last_position_of_ref=False):
    """Equal tuples of arrays; with ``last_position_of_ref``, ours hold one query position (a cached step) and the
    reference the whole prefix (recomputed without a cache): its last position is compared."""
    assert isinstance(ours, tuple) and len(ours) == len(ref), f"{what}: {len(ours)} entries, expected {len(ref)}"
    for i, (a, b) in enumerate(zip(ours, ref)):
        b = b.numpy()
        if last_position_of_ref:
            b = b[..., -1:, :] if b.ndim == 4 else b[:, -1:]  # [N, nh, t, P] or [N, t, C]
        assert_close(seq2seq.to_numpy(a), b, what=f"{what}[{i}]")


@pytest.mark.parametrize("plain", [False, True], ids=["fused", "plain"])
def test_forward_outputs_match_transformers(pair, plain):
    name, hf, ours = pair
    ids, mask, labels = batch(VOCAB)  # padded sources; labels with -100 tails: a padded decoder mask
    ref = hf_run(hf, ids, mask, labels, output_attentions=True, output_hidden_states=True)
    if plain:  # the plain forms, which CuPy runs
        with fast_cpu.disabled():
            out = ours(ids, attention_mask=mask, labels=labels, output_attentions=True, output_hidden_states=True)
    else:
        out = ours(ids, attention_mask=mask, labels=labels, output_attentions=True, output_hidden_states=True)
    b, s, t = ids.shape[0], ids.shape[1], labels.shape[1]
    assert out.encoder_attentions[0].shape == (b, 3, s, s)
    assert out.cross_attentions[0].shape == (b, 3, t, s)
    assert len(out.decoder_hidden_states) == 3 and out.decoder_hidden_states[0].shape == (b, t, 36)
    for field in FIELDS:
        assert_same_tuples(getattr(out, field), getattr(ref, field), field)
    assert_close(out.logits, ref.logits.numpy(), what="logits")


def test_recording_changes_nothing(pair):
    name, hf, ours = pair
    ids, mask, labels = batch(VOCAB, seed=2)
    plain = ours(ids, attention_mask=mask, labels=labels)
    assert all(getattr(plain, field) is None for field in FIELDS)
    recorded = ours(ids, attention_mask=mask, labels=labels, output_attentions=True, output_hidden_states=True)
    np.testing.assert_array_equal(recorded.logits, plain.logits)
    assert float(recorded.loss) == float(plain.loss)
    assert ours.state.records is seq2seq.nn.record.NOTHING  # nothing left recording after the call


def test_recording_in_training_keeps_dropout_and_gradients(pair):
    """In training the recorded probabilities are those after dropout (as transformers'), the dropout masks and
    the gradients are the same with or without recording, and the records are plain arrays off the graph."""
    name, hf, ours = pair
    ids, mask, labels = batch(VOCAB, seed=3)

    def run(**flags):
        ours.state.rng = np.random.default_rng(11)
        for p in ours.parameters():
            p.grad = None
        out = ours(ids, attention_mask=mask, labels=labels, **flags)
        out.loss.backward()
        return out, {n: p.grad.copy() for n, p in ours.named_parameters()}

    ours.train()
    try:
        plain, plain_grads = run()
        recorded, grads = run(output_attentions=True, output_hidden_states=True)
    finally:
        ours.eval()
    np.testing.assert_array_equal(recorded.logits, plain.logits)
    for n, g in plain_grads.items():
        np.testing.assert_array_equal(grads[n], g, err_msg=n)
    assert all(isinstance(a, np.ndarray) for a in recorded.encoder_attentions + recorded.decoder_hidden_states)
    if name == "bert2bert":  # BERT drops attention probabilities (0.1): some are 0, rows no longer sum to 1
        probs = recorded.encoder_attentions[0]
        assert (probs == 0).any() and not np.allclose(probs.sum(-1), 1)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "dropout"])
def test_attention_records_what_multiplied_v(training):
    """Both forms record the probabilities the output was made from: out = recorded @ v."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, t, 8)).astype(np.float32) for t in (5, 7, 7))
    keep = np.ones((2, 1, 1, 7), dtype=bool)
    keep[1, ..., 4:] = False  # a padded source
    outs, records = [], []
    for plain in (False, True):
        record = []
        with fast_cpu.disabled() if plain else warnings.catch_warnings():
            out = scaled_dot_product_attention(q, k, v, keep, dropout_p=0.3 if training else 0.0,
                                               rng=np.random.default_rng(5), probabilities_to=record)
        (probs,) = record
        assert probs.shape == (2, 3, 5, 7) and (probs[1, ..., 4:] == 0).all()
        np.testing.assert_allclose(probs @ v, out.data, rtol=1e-5, atol=1e-6)
        outs.append(out.data)
        records.append(probs)
    np.testing.assert_allclose(records[0], records[1], rtol=1e-5, atol=1e-7)


def test_records_on_each_backend(pair, xp):
    """On CuPy the records are CuPy arrays (the plain forms run there) with the values NumPy records."""
    name, hf, ours = pair
    ids, mask, labels = batch(VOCAB)
    flags = dict(output_attentions=True, output_hidden_states=True)
    ref = ours(ids, attention_mask=mask, labels=labels, **flags)
    ours.to("cupy" if xp is not np else "numpy")
    try:
        out = ours(ids, attention_mask=mask, labels=labels, **flags)
    finally:
        ours.to("numpy")
    for field in FIELDS:
        assert all(seq2seq.get_array_module(a) is xp for a in getattr(out, field))
        for a, b in zip(getattr(out, field), getattr(ref, field)):
            assert_close(seq2seq.to_numpy(a), b, what=field)


def test_config_fields_set_each_stacks_default(pair):
    """As transformers 5: with the argument left out, each stack reads its own config's field; the argument wins."""
    name, hf, ours = pair
    ids, mask, labels = batch(VOCAB)
    ours.config.encoder.output_hidden_states = True
    ours.config.decoder.output_attentions = True
    try:
        out = ours(ids, attention_mask=mask, labels=labels)
        assert out.encoder_hidden_states is not None and out.encoder_attentions is None
        assert out.decoder_attentions is not None and out.cross_attentions is not None
        assert out.decoder_hidden_states is None
        off = ours(ids, attention_mask=mask, labels=labels, output_attentions=False, output_hidden_states=False)
        assert all(getattr(off, field) is None for field in FIELDS)
    finally:
        del ours.config.encoder.output_hidden_states, ours.config.decoder.output_attentions


@pytest.mark.parametrize("value", ["yes", 1, [0]])
def test_bad_flag_is_refused(pair, value):
    name, hf, ours = pair
    ids, mask, labels = batch(VOCAB)
    with pytest.raises(seq2seq.InputError, match="output_attentions"):
        ours(ids, attention_mask=mask, labels=labels, output_attentions=value)
    with pytest.raises(seq2seq.GenerationError, match="output_hidden_states"):
        ours.generate(ids, attention_mask=mask, decoder_start_token_id=2, output_hidden_states=value)


# ---- generate -----------------------------------------------------------------------------------------------------

def hf_generate(hf, ids, mask, **settings):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=6,
                           decoder_start_token_id=2, pad_token_id=0, eos_token_id=7, return_dict_in_generate=True,
                           output_attentions=True, output_hidden_states=True, **settings)


@pytest.mark.parametrize("settings", [{}, {"use_cache": False}, {"num_beams": 3}],
                         ids=["greedy", "no-cache", "beam3"])
def test_generate_outputs_match_transformers(pair, settings):
    name, hf, ours = pair
    # transformers' BART cache bug: its steps recompute the whole prefix. Our beam search always uses the cache
    # (one new position a step), so there the last position of transformers' steps is what compares.
    recomputed = "bart" in name and settings.get("use_cache", True)
    if recomputed:
        settings = {**settings, "use_cache": False}
    ids, mask, _ = batch(VOCAB, seed=5)
    ref = hf_generate(hf, ids, mask, **settings)
    out = ours.generate(ids, attention_mask=mask, max_new_tokens=6, decoder_start_token_id=2, pad_token_id=0,
                        eos_token_id=7, return_dict_in_generate=True, output_attentions=True,
                        output_hidden_states=True, **settings)
    np.testing.assert_array_equal(seq2seq.to_numpy(out.sequences), ref.sequences.numpy())
    for field in ("encoder_attentions", "encoder_hidden_states"):
        assert_same_tuples(getattr(out, field), getattr(ref, field), field)
    for field in ("decoder_attentions", "cross_attentions", "decoder_hidden_states"):
        steps, ref_steps = getattr(out, field), getattr(ref, field)
        assert len(steps) == len(ref_steps), f"{field}: {len(steps)} steps, expected {len(ref_steps)}"
        for i, (step, ref_step) in enumerate(zip(steps, ref_steps)):
            assert_same_tuples(step, ref_step, f"{field} step {i}",
                               last_position_of_ref=recomputed and "num_beams" in settings)


def test_generate_sampling_structure(pair):
    """Sampling draws differ from torch's, so only the structure is compared: the encoder's records once per
    source, each step's per returned sequence."""
    name, hf, ours = pair
    ids, mask, _ = batch(VOCAB, seed=5)
    settings = dict(do_sample=True, num_return_sequences=2, use_cache="bart" not in name)
    ref = hf_generate(hf, ids, mask, **settings)
    out = ours.generate(ids, attention_mask=mask, max_new_tokens=6, decoder_start_token_id=2, pad_token_id=0,
                        return_dict_in_generate=True, output_attentions=True, output_hidden_states=True, seed=0,
                        **settings)
    for field in FIELDS:
        ours_shapes = [np.shape(a) for a in getattr(out, field)[0]] if "decoder" in field or "cross" in field \
            else [np.shape(a) for a in getattr(out, field)]
        ref_field = getattr(ref, field)
        ref_shapes = [tuple(a.shape) for a in (ref_field[0] if "decoder" in field or "cross" in field else ref_field)]
        assert ours_shapes == ref_shapes, field


def test_generate_records_only_when_asked(pair):
    name, hf, ours = pair
    ids, mask, _ = batch(VOCAB, seed=5)
    plain = ours.generate(ids, attention_mask=mask, max_new_tokens=4, decoder_start_token_id=2,
                          return_dict_in_generate=True)
    assert all(getattr(plain, field) is None for field in FIELDS)
    only = ours.generate(ids, attention_mask=mask, max_new_tokens=4, decoder_start_token_id=2,
                         return_dict_in_generate=True, output_hidden_states=True)
    assert only.encoder_attentions is None and only.decoder_attentions is None
    assert len(only.decoder_hidden_states) == 4 and len(only.decoder_hidden_states[0]) == 3
    np.testing.assert_array_equal(only.sequences, plain.sequences)
    ids_only = ours.generate(ids, attention_mask=mask, max_new_tokens=4, decoder_start_token_id=2,
                             output_attentions=True)  # no dict: the ids alone, as transformers
    np.testing.assert_array_equal(ids_only, plain.sequences)
