"""EncoderDecoderModel against transformers: the same random checkpoints give the same logits, loss, encoder
states and gradients, and checkpoints travel both ways."""
import warnings

import numpy as np
import pytest

import seq2seq
from oracle import (assert_close, batch, bert_config, hf_bert2bert, hf_forward, in_dir, load_hf, minilm_dir,
                    save_hf, torch, transformers)

pytestmark = pytest.mark.oracle

# (encoder overrides, decoder overrides): odd widths, unequal depths, other activations, unequal vocabularies
CASES = {
    "small": ({}, {}),
    "unequal-depth": ({"num_hidden_layers": 1}, {"num_hidden_layers": 3}),
    "wide-odd": ({"hidden_size": 60, "num_attention_heads": 5, "intermediate_size": 71},
                 {"hidden_size": 60, "num_attention_heads": 5, "intermediate_size": 71}),
    "gelu_new": ({"hidden_act": "gelu_new"}, {"hidden_act": "gelu_new"}),
    "relu-own-vocab": ({"hidden_act": "relu", "vocab_size": 45}, {"hidden_act": "relu", "vocab_size": 53}),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request, tmp_path_factory):
    """(transformers model, our model loaded from its checkpoint) for each case."""
    enc, dec = CASES[request.param]
    hf = hf_bert2bert(enc, dec, spread=3.0)
    path = save_hf(hf, tmp_path_factory.mktemp(request.param))
    ours = seq2seq.EncoderDecoderModel.from_pretrained(path)
    return hf, ours


def test_forward_matches_transformers(pair):
    hf, ours = pair
    ids, mask, labels = batch(min(hf.config.encoder.vocab_size, hf.config.decoder.vocab_size))
    ref = hf_forward(hf, ids, mask, labels)
    out = ours(ids, attention_mask=mask, labels=labels)
    assert ours.loading_info == {"missing_keys": [], "unexpected_keys": []}
    assert_close(out.logits, ref.logits.numpy(), what="logits")
    assert_close(out.encoder_last_hidden_state, ref.encoder_last_hidden_state.numpy(), what="encoder states")
    assert abs(float(out.loss) - ref.loss.item()) <= 1e-4 * abs(ref.loss.item())


def test_label_smoothing_matches_the_trainers(pair):
    from transformers.trainer_pt_utils import LabelSmoother  # noqa: PLC0415 - the Trainer's label_smoothing_factor

    hf, ours = pair
    ids, mask, labels = batch(min(hf.config.encoder.vocab_size, hf.config.decoder.vocab_size), seed=3)
    ref = hf_forward(hf, ids, mask, labels)
    expected = LabelSmoother(epsilon=0.1)({"logits": ref.logits}, torch.tensor(labels)).item()
    loss = float(ours(ids, attention_mask=mask, labels=labels, label_smoothing=0.1).loss)
    assert abs(loss - expected) <= 1e-4 * abs(expected) and abs(expected - ref.loss.item()) > 1e-3


def test_explicit_decoder_inputs_and_mask(pair):
    hf, ours = pair
    ids, mask, _ = batch(hf.config.encoder.vocab_size, seed=1)
    dec_ids = np.array([[2, 5, 6, 7, 8], [2, 9, 10, 0, 0], [2, 11, 0, 0, 0]])
    dec_mask = (dec_ids != 0).astype(np.int64)
    ref = hf_forward(hf, ids, mask, decoder_input_ids=dec_ids, decoder_attention_mask=dec_mask)
    out = ours(ids, attention_mask=mask, decoder_input_ids=dec_ids, decoder_attention_mask=dec_mask)
    assert out.loss is None
    assert_close(out.logits, ref.logits.numpy(), what="logits")


def test_gradients_match_torch(pair):
    hf, ours = pair
    ids, mask, labels = batch(min(hf.config.encoder.vocab_size, hf.config.decoder.vocab_size), seed=2)
    hf.zero_grad()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(labels)).loss.backward()
    for p in ours.parameters():
        p.grad = None
    ours(ids, attention_mask=mask, labels=labels).loss.backward()
    ref = {name: p.grad.numpy() for name, p in hf.named_parameters() if p.grad is not None}
    floor = 1e-5 * max(np.abs(g).max() for g in ref.values())  # key biases have a true gradient of exactly 0
    for name, p in ours.named_parameters():
        assert p.grad is not None, name
        np.testing.assert_allclose(p.grad, ref[name], rtol=1e-3, atol=floor, err_msg=name)


def test_our_checkpoint_loads_in_transformers(tmp_path):
    config = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(
        seq2seq.BertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=40, max_position_embeddings=32),
        seq2seq.BertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=1, num_attention_heads=4,
                           intermediate_size=30, max_position_embeddings=32),
        decoder_start_token_id=2, pad_token_id=0)
    ours = seq2seq.EncoderDecoderModel(config, seed=3)
    ours.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf, info = transformers.EncoderDecoderModel.from_pretrained(str(tmp_path), output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert not info["unexpected_keys"]
    ids, mask, labels = batch(50)
    ref = hf_forward(hf.eval(), ids, mask, labels)
    out = ours(ids, attention_mask=mask, labels=labels)
    assert_close(out.logits, ref.logits.numpy(), what="logits")
    assert abs(float(out.loss) - ref.loss.item()) <= 1e-4 * abs(ref.loss.item())
    again = seq2seq.EncoderDecoderModel.from_pretrained(tmp_path)  # and back again, bit for bit
    np.testing.assert_array_equal(again(ids, attention_mask=mask, labels=labels).logits, out.logits)


def test_random_init_follows_transformers_scheme():
    config = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(
        seq2seq.BertConfig(vocab_size=300, hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                           intermediate_size=128, initializer_range=0.05),
        seq2seq.BertConfig(vocab_size=300, hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                           intermediate_size=128, initializer_range=0.05))
    params = dict(seq2seq.EncoderDecoderModel(config, seed=0).named_parameters())
    query = params["encoder.encoder.layer.0.attention.self.query.weight"].data
    assert abs(query.std() - 0.05) < 0.005 and abs(query.mean()) < 0.005
    assert not params["encoder.encoder.layer.0.attention.self.query.bias"].data.any()
    np.testing.assert_array_equal(params["decoder.bert.embeddings.LayerNorm.weight"].data, 1)
    assert not params["encoder.embeddings.word_embeddings.weight"].data[0].any()  # padding_idx row
    a = seq2seq.EncoderDecoderModel(config, seed=0).parameters()[5].data
    b = seq2seq.EncoderDecoderModel(config, seed=1).parameters()[5].data
    assert not np.array_equal(a, b)


def test_tie_encoder_decoder(tmp_path):
    enc = seq2seq.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=20, max_position_embeddings=24)
    config = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(enc, enc, tie_encoder_decoder=True,
                                                                       decoder_start_token_id=2, pad_token_id=0)
    tied = seq2seq.EncoderDecoderModel(config, seed=0)
    params = dict(tied.named_parameters())
    assert "decoder.bert.encoder.layer.0.attention.self.query.weight" not in params  # shared, owned by encoder
    assert "decoder.bert.encoder.layer.0.crossattention.self.query.weight" in params  # the decoder's own
    assert tied.decoder.embeddings.word.weight is tied.encoder.embeddings.word.weight
    untied = seq2seq.EncoderDecoderModel(seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(enc, enc), seed=0)
    assert tied.num_parameters() < untied.num_parameters()

    ids, mask, labels = batch(40, src_len=8, tgt_len=6)
    out = tied(ids, attention_mask=mask, labels=labels)
    out.loss.backward()  # one tensor, gradients from both uses
    assert tied.encoder.embeddings.word.weight.grad is not None

    compact, full = in_dir(tmp_path, "compact"), in_dir(tmp_path, "full")
    tied.save_pretrained(compact)
    tied.save_pretrained(full, include_tied_copies=True)
    reloaded = seq2seq.EncoderDecoderModel.from_pretrained(compact)
    assert reloaded.num_parameters() == tied.num_parameters()
    np.testing.assert_array_equal(reloaded(ids, attention_mask=mask, labels=labels).logits, out.logits)
    # transformers 5 ignores tie_encoder_decoder, so it needs the decoder's copies written out
    ref = hf_forward(load_hf(full), ids, mask, labels)
    assert_close(out.logits, ref.logits.numpy(), what="logits")


def test_encoder_flagged_as_decoder_is_causal_like_transformers(tmp_path):
    """transformers' from_encoder_decoder_configs(cfg, cfg) flags the shared config object as a decoder for both
    sides; transformers then runs a causal encoder (and ignores its cross-attention weights). So do we."""
    torch.manual_seed(0)
    shared = transformers.BertConfig(vocab_size=61, hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
                                     intermediate_size=50, max_position_embeddings=40)
    config = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(shared, shared)
    config.decoder_start_token_id, config.pad_token_id = 2, 0
    assert config.encoder.is_decoder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.EncoderDecoderModel(config).eval()
    ours = seq2seq.EncoderDecoderModel.from_pretrained(save_hf(hf, tmp_path))
    assert all("crossattention" in k for k in ours.loading_info["unexpected_keys"])
    ids, mask, labels = batch(61)
    ref = hf_forward(hf, ids, mask, labels)
    out = ours(ids, attention_mask=mask, labels=labels)
    assert_close(out.encoder_last_hidden_state, ref.encoder_last_hidden_state.numpy(), what="encoder states")
    assert_close(out.logits, ref.logits.numpy(), what="logits")


def test_sharded_checkpoint(tmp_path):
    hf = hf_bert2bert()
    path = save_hf(hf, tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    ours = seq2seq.EncoderDecoderModel.from_pretrained(path)
    ids, mask, labels = batch(61)
    assert_close(ours(ids, attention_mask=mask, labels=labels).logits,
                 hf_forward(hf, ids, mask, labels).logits.numpy(), what="logits")


@pytest.mark.parametrize("torch_dtype", ["bfloat16", "float16"])
def test_half_precision_checkpoint_widens(tmp_path, torch_dtype):
    hf = hf_bert2bert().to(getattr(torch, torch_dtype))
    path = save_hf(hf, tmp_path)
    ours = seq2seq.EncoderDecoderModel.from_pretrained(path, dtype="float32")
    assert ours.parameters()[0].dtype == np.float32
    ref = load_hf(path, dtype=torch.float32)  # the same rounded weights, computed in float32
    ids, mask, labels = batch(61)
    assert_close(ours(ids, attention_mask=mask, labels=labels).logits,
                 hf_forward(ref, ids, mask, labels).logits.numpy(), what="logits")


SENTENCES = [
    "The tower is 324 metres (1,063 ft) tall, about the same height as an 81-storey building.",
    "Hello world!",
    "Debian is a free operating system, developed by thousands of volunteers from all over the world.",
]


@pytest.fixture(scope="module")
def minilm():
    path = minilm_dir()
    with pytest.warns(UserWarning, match="crossattention") as record:
        model = seq2seq.EncoderDecoderModel.from_encoder_decoder_pretrained(path, path)
    return path, model, [str(w.message) for w in record]


def test_warm_start_from_real_minilm(minilm):
    path, model, messages = minilm
    assert any("pooler.dense.weight" in m for m in messages)  # the decoder's pooler is unused
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(path, path)
    hf_params = {name for name, _ in hf.named_parameters()}
    ours_params = {name for name, _ in model.named_parameters()}
    assert ours_params == hf_params - {"encoder.pooler.dense.weight", "encoder.pooler.dense.bias"}
    fresh = set(model.loading_info["missing_keys"])
    assert "decoder.bert.encoder.layer.0.crossattention.self.query.weight" in fresh
    assert "decoder.cls.predictions.transform.dense.weight" in fresh and "decoder.cls.predictions.bias" in fresh
    assert not any(".attention.self." in k for k in fresh)  # the pretrained self-attention was loaded


def test_real_encoder_states_match_bert_model(minilm):
    path, model, _ = minilm
    tok = seq2seq.Tokenizer.from_pretrained(path)
    enc = tok(SENTENCES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bert = transformers.BertModel.from_pretrained(path).eval()
    with torch.no_grad():
        ref = bert(input_ids=torch.tensor(enc["input_ids"]),
                   attention_mask=torch.tensor(enc["attention_mask"])).last_hidden_state.numpy()
    with seq2seq.no_grad():
        ours = model.encode(enc["input_ids"], attention_mask=enc["attention_mask"]).data
    keep = enc["attention_mask"].astype(bool)  # states at padded positions are never read
    assert_close(ours[keep], ref[keep], what="encoder states")


def test_checkpoint_warm_started_by_transformers_loads(minilm, tmp_path):
    path, _, _ = minilm
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(path, path).eval()
    hf.config.decoder_start_token_id, hf.config.pad_token_id = 101, 0
    save_hf(hf, tmp_path)
    ours = seq2seq.EncoderDecoderModel.from_pretrained(tmp_path)
    tok = seq2seq.Tokenizer.from_pretrained(path)
    src, tgt = tok(SENTENCES), tok(["a tall tower.", "greeting", "a free operating system made by volunteers"])
    labels = np.where(tgt["attention_mask"] == 1, tgt["input_ids"], -100)
    ref = hf_forward(hf, src["input_ids"], src["attention_mask"], labels)
    with seq2seq.no_grad():
        out = ours(src["input_ids"], attention_mask=src["attention_mask"], labels=labels)
    assert_close(out.logits, ref.logits.numpy(), what="logits")
    assert abs(float(out.loss) - ref.loss.item()) <= 1e-4 * abs(ref.loss.item())


def test_warm_start_from_prefixed_checkpoints(tmp_path):
    """Encoder from a BertForMaskedLM checkpoint (keys ``bert.*``), decoder from a BertModel (no prefix) and from
    a BertForMaskedLM (whose MLM head becomes the LM head): the same tensors load as in transformers."""
    torch.manual_seed(0)
    mlm = transformers.BertForMaskedLM(bert_config()).eval()
    base = transformers.BertModel(bert_config(), add_pooling_layer=False).eval()
    mlm_dir, base_dir = save_hf(mlm, tmp_path / "mlm"), save_hf(base, tmp_path / "base")
    for decoder_dir in (base_dir, mlm_dir):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = seq2seq.EncoderDecoderModel.from_encoder_decoder_pretrained(mlm_dir, decoder_dir)
            hf = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(mlm_dir, decoder_dir)
        hf_state = hf.state_dict()
        fresh = set(ours.loading_info["missing_keys"])
        assert all("crossattention" in k or "cls.predictions" in k or "pooler" in k for k in fresh)
        assert any("cls.predictions" in k for k in fresh) == (decoder_dir == base_dir)
        for name, p in ours.named_parameters():
            if name not in fresh:
                np.testing.assert_array_equal(p.data, hf_state[name].numpy(), err_msg=name)
