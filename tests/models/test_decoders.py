"""GPT-2 and BART decoders (bert2gpt2, bert2bart), and encoders and decoders of different widths, against
transformers: logits, loss, generated ids, one SGD step, checkpoints both ways, warm-starting."""
import warnings

import numpy as np
import pytest

import seq2seq
from oracle import assert_close, batch, bert_config, hf_forward, save_hf, torch, transformers

pytestmark = pytest.mark.oracle

VOCAB = 61


def gpt2_config(**overrides):
    fields = dict(vocab_size=VOCAB, n_embd=36, n_layer=2, n_head=3, n_positions=40, bos_token_id=1,
                  eos_token_id=1)
    fields.update(overrides)
    return transformers.GPT2Config(**fields)


def bart_config(**overrides):
    fields = dict(vocab_size=VOCAB, d_model=36, decoder_layers=2, decoder_attention_heads=3, decoder_ffn_dim=50,
                  encoder_layers=1, encoder_attention_heads=3, encoder_ffn_dim=20, max_position_embeddings=40)
    fields.update(overrides)
    return transformers.BartConfig(**fields)


# name -> (encoder hidden size, decoder config factory)
CASES = {
    "bert2gpt2": (36, gpt2_config),
    "bert2gpt2-wider-encoder": (48, gpt2_config),
    "bert2gpt2-relu-inner": (36, lambda: gpt2_config(activation_function="relu", n_inner=20,
                                                     scale_attn_by_inverse_layer_idx=True)),
    "bert2bart": (36, bart_config),
    "bert2bart-scaled-narrower-encoder": (24, lambda: bart_config(scale_embedding=True)),
}


def hf_model(name, *, spread=3.0, seed=0):
    hidden, decoder = CASES[name]
    torch.manual_seed(seed)
    encoder = bert_config(hidden_size=hidden, num_attention_heads=4 if hidden % 3 else 3)
    config = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder())
    config.decoder_start_token_id, config.pad_token_id = 2, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.EncoderDecoderModel(config).eval()
    with torch.no_grad():  # spread the logits so that generation is not decided by rounding
        for p in model.parameters():
            p.mul_(spread)
    return model


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request, tmp_path_factory):
    hf = hf_model(request.param)
    ours = seq2seq.EncoderDecoderModel.from_pretrained(save_hf(hf, tmp_path_factory.mktemp(request.param)))
    return request.param, hf, ours


def test_forward_matches(pair):
    name, hf, ours = pair
    assert ours.loading_info == {"missing_keys": [], "unexpected_keys": []}
    assert (ours.enc_to_dec_proj is not None) == ("wider" in name or "narrower" in name)
    ids, mask, labels = batch(VOCAB)
    ref = hf_forward(hf, ids, mask, labels, use_cache=False)  # use_cache=False: transformers' BART cache bug
    out = ours(ids, attention_mask=mask, labels=labels)
    assert_close(out.logits, ref.logits.numpy(), what="logits")
    assert_close(out.encoder_last_hidden_state, ref.encoder_last_hidden_state.numpy(), what="encoder states")
    assert abs(float(out.loss) - ref.loss.item()) <= 1e-4 * abs(ref.loss.item())


def test_one_sgd_step_matches_torch(pair):
    name, hf, ours = pair
    ids, mask, labels = batch(VOCAB, seed=3)
    lr = 0.1
    hf.zero_grad()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(labels),
           use_cache=False).loss.backward()
    after = {n: (p - lr * p.grad).detach().numpy() for n, p in hf.named_parameters() if p.grad is not None}
    for p in ours.parameters():
        p.grad = None
    ours(ids, attention_mask=mask, labels=labels).loss.backward()
    for n, p in ours.named_parameters():
        updated = p.data - lr * p.grad
        np.testing.assert_allclose(updated, after[n], rtol=1e-3, atol=1e-6, err_msg=n)


@pytest.mark.parametrize("settings", [{}, {"num_beams": 3},
                                      {"num_beams": 4, "length_penalty": 2.0, "num_return_sequences": 2}],
                         ids=["greedy", "beam3", "beam4-lp2-n2"])
def test_generate_matches(pair, settings):
    name, hf, ours = pair
    ids, mask, _ = batch(VOCAB, seed=5)
    eos = 7
    hf.generation_config.decoder_start_token_id, hf.generation_config.pad_token_id = 2, 0
    hf.generation_config.eos_token_id = eos
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=12,
                          do_sample=False, use_cache="bart" not in name, **settings).numpy()  # BART: cache bug
    out = ours.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=eos, decoder_start_token_id=2,
                        pad_token_id=0, **settings)
    np.testing.assert_array_equal(seq2seq.to_numpy(out), ref)


def test_sampling_several_sequences_equals_repeated_sources(pair):
    """num_return_sequences=2 (each source's cross keys/values once, its 2 rows attending together) gives the ids
    and scores of the sources repeated by hand (a copy per row), draw for draw: no oracle for sampling's draws."""
    name, hf, ours = pair
    ids, mask, _ = batch(VOCAB, seed=5)
    common = dict(do_sample=True, seed=4, max_new_tokens=12, eos_token_id=7, decoder_start_token_id=2,
                  pad_token_id=0, return_dict_in_generate=True, output_scores=True)
    shared = ours.generate(ids, attention_mask=mask, num_return_sequences=2, **common)
    repeated = ours.generate(np.repeat(ids, 2, axis=0), attention_mask=np.repeat(mask, 2, axis=0), **common)
    np.testing.assert_array_equal(shared.sequences, repeated.sequences)
    for got, want in zip(shared.scores, repeated.scores):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_round_trip_through_our_checkpoint(pair, tmp_path):
    name, hf, ours = pair
    ours.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back, info = transformers.EncoderDecoderModel.from_pretrained(str(tmp_path), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ids, mask, labels = batch(VOCAB, seed=7)
    ref = hf_forward(back.eval(), ids, mask, labels, use_cache=False)
    assert_close(ours(ids, attention_mask=mask, labels=labels).logits, ref.logits.numpy(), what="logits")
    again = seq2seq.EncoderDecoderModel.from_pretrained(tmp_path)
    assert again.loading_info == {"missing_keys": [], "unexpected_keys": []}


@pytest.mark.parametrize("kind", ["GPT2LMHeadModel", "GPT2Model", "BartForCausalLM", "BartForConditionalGeneration"])
def test_warm_start_from_decoder_checkpoints(kind, tmp_path):
    torch.manual_seed(0)
    bert = transformers.BertModel(bert_config()).eval()
    config = gpt2_config() if kind.startswith("GPT2") else bart_config()
    decoder = getattr(transformers, kind)(config).eval()
    enc_dir, dec_dir = save_hf(bert, tmp_path / "enc"), save_hf(decoder, tmp_path / "dec")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ours = seq2seq.EncoderDecoderModel.from_encoder_decoder_pretrained(enc_dir, dec_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(enc_dir, dec_dir)
    hf_state = {k: v.numpy() for k, v in hf.state_dict().items()}
    fresh = set(ours.loading_info["missing_keys"])
    if kind.startswith("GPT2"):  # GPT-2 checkpoints have no cross-attention: it starts fresh, with a warning
        assert any("crossattention" in k for k in fresh) and any("newly initialized" in str(w.message) for w in record)
        assert all("crossattention" in k or "ln_cross_attn" in k or "pooler" in k for k in fresh), fresh
    else:  # BART's decoder always has encoder attention: nothing of the decoder is missing
        assert not [k for k in fresh if k.startswith("decoder.")], fresh
    if kind == "BartForConditionalGeneration":
        # transformers' BartForCausalLM leaves embed_tokens random here (it ignores model.shared.weight, with a
        # "checkpoint seem corrupted" warning); this engine takes the shared table, as a BART decoder should.
        shared = decoder.model.shared.weight.detach().numpy()
        np.testing.assert_array_equal(ours.decoder.embed_tokens.weight.data, shared)
        hf_state["decoder.model.decoder.embed_tokens.weight"] = shared
    for name, p in ours.named_parameters():  # everything that was loaded equals what transformers loaded
        if name not in fresh:
            np.testing.assert_array_equal(p.data, hf_state[name], err_msg=name)
    unused = ours.loading_info["unexpected_keys"]
    if kind == "BartForConditionalGeneration":
        assert "decoder.final_logits_bias" in unused and any(k.startswith("decoder.model.encoder.") for k in unused)
    else:
        assert [k for k in unused if "pooler" not in k] == []


def test_decoder_only_kinds_cannot_encode(tmp_path):
    torch.manual_seed(0)
    gpt2_dir = save_hf(transformers.GPT2Model(gpt2_config()), tmp_path / "gpt2")
    bert_dir = save_hf(transformers.BertModel(bert_config()), tmp_path / "bert")
    with pytest.raises(seq2seq.ConfigError, match="'gpt2' model cannot serve as the encoder"):
        seq2seq.EncoderDecoderModel.from_encoder_decoder_pretrained(gpt2_dir, bert_dir)


def test_unknown_architecture_cannot_decode(tmp_path):
    torch.manual_seed(0)
    bert_dir = save_hf(transformers.BertModel(bert_config()), tmp_path / "bert")
    t5_dir = save_hf(transformers.T5Model(transformers.T5Config(vocab_size=VOCAB, d_model=16, d_ff=20, num_layers=1,
                                                                num_heads=2, d_kv=8)), tmp_path / "t5")
    with pytest.raises(seq2seq.ConfigError, match="'t5'"):
        seq2seq.EncoderDecoderModel.from_encoder_decoder_pretrained(bert_dir, t5_dir)


def test_random_init_and_tie_rules():
    enc = seq2seq.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                             intermediate_size=20)
    dec = seq2seq.GPT2Config(vocab_size=40, n_embd=16, n_layer=2, n_head=2, n_positions=20)
    model = seq2seq.EncoderDecoderModel(seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec))
    params = dict(model.named_parameters())
    assert params["enc_to_dec_proj.weight"].shape == (16, 32)
    proj = params["decoder.transformer.h.0.attn.c_proj.weight"].data
    assert abs(proj.std() - 0.02 / np.sqrt(4)) < 0.003  # GPT-2's scaled init of residual projections
    assert "decoder.lm_head.weight" not in params  # tied to wte
    with pytest.raises(seq2seq.ConfigError, match="tie_encoder_decoder"):
        seq2seq.EncoderDecoderModel(seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(
            enc, dec, tie_encoder_decoder=True))


def test_gpt2_buffers_skipped_and_projection_created_on_warm_start(tmp_path):
    """Old GPT-2 checkpoints carry causal-mask buffers (attn.bias, attn.masked_bias): skipped, not reported. A wider
    encoder gets a fresh enc_to_dec_proj, as in transformers."""
    from safetensors.numpy import load_file, save_file
    torch.manual_seed(0)
    bert_dir = save_hf(transformers.BertModel(bert_config(hidden_size=48, num_attention_heads=4)), tmp_path / "bert")
    gpt2_dir = save_hf(transformers.GPT2LMHeadModel(gpt2_config()), tmp_path / "gpt2")
    tensors = load_file(str(tmp_path / "gpt2" / "model.safetensors"))
    for i in range(2):
        tensors[f"transformer.h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 40, 40), np.uint8)).astype(bool)
        tensors[f"transformer.h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    save_file(tensors, str(tmp_path / "gpt2" / "model.safetensors"), metadata={"format": "pt"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = seq2seq.EncoderDecoderModel.from_encoder_decoder_pretrained(bert_dir, gpt2_dir)
        hf = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(bert_dir, gpt2_dir)
    assert not [k for k in ours.loading_info["unexpected_keys"] if "attn" in k]
    assert {"enc_to_dec_proj.weight", "enc_to_dec_proj.bias"} <= set(ours.loading_info["missing_keys"])
    assert dict(ours.named_parameters())["enc_to_dec_proj.weight"].shape == tuple(hf.enc_to_dec_proj.weight.shape)
