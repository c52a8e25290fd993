"""The kernels at either end of a decode step: embeddings.cu (the embedding layer of BERT, GPT-2 and BART) and
next_token.cu (greedy argmax; log-softmax and top-k candidates for beam search).

On the CPU: the references (seq2seq/fast/cuda/reference.py) against the models' own embeddings (their first
hidden state) and against generation/'s choices (sampling.choose_tokens, beam_search.top_candidates), and the
float32 kernels through the CPU emulation against the references. With a GPU (marker ``gpu``, through the
``launcher`` fixture): the same launches in float32, float16 and bfloat16.
"""
import math

import numpy as np
import pytest

import seq2seq
from cuda_testing import TOL, back, storage
from seq2seq.core.errors import InputError
from seq2seq.fast.cuda import plans, reference
from seq2seq.generation import beam_search, sampling

VOCAB, WIDTH = 40, 24


def tiny_model(decoder, rng):
    """A bert2<decoder> model with random embeddings and embedding LayerNorms (not the init's ones and zeros)."""
    bert = seq2seq.BertConfig(vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=30, max_position_embeddings=32)
    dec = {"bert": bert,
           "gpt2": seq2seq.GPT2Config(vocab_size=VOCAB, n_embd=WIDTH, n_layer=1, n_head=2, n_positions=32),
           "bart": seq2seq.BartConfig(vocab_size=VOCAB, d_model=WIDTH, decoder_layers=1, decoder_attention_heads=2,
                                      decoder_ffn_dim=30, max_position_embeddings=32, scale_embedding=True)}[decoder]
    config = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(bert, dec, decoder_start_token_id=2,
                                                                       pad_token_id=0)
    model = seq2seq.EncoderDecoderModel(config, seed=1)
    for _, p in model.named_parameters():
        if p.data.ndim == 1:  # LayerNorm weights and biases (and other vectors): away from 1 and 0
            p.data[...] = rng.standard_normal(p.data.shape).astype(np.float32)
    return model


def embedding_layers(model, decoder):
    """(the reference's keyword arguments for the encoder's embeddings, and for the decoder's)."""
    enc = model.encoder.embeddings
    bert = dict(type_table=enc.token_type.weight.data, gamma=enc.norm.weight.data, beta=enc.norm.bias.data,
                eps=enc.norm.eps)
    d = model.decoder
    if decoder == "bert":
        e = d.embeddings
        dec = dict(word=e.word.weight.data, position_table=e.position.weight.data, type_table=e.token_type.weight.data,
                   gamma=e.norm.weight.data, beta=e.norm.bias.data, eps=e.norm.eps)
    elif decoder == "gpt2":
        dec = dict(word=d.wte.weight.data, position_table=d.wpe.weight.data)
    else:
        dec = dict(word=d.embed_tokens.weight.data, position_table=d.embed_positions.weight.data, position_offset=2,
                   word_scale=math.sqrt(WIDTH), gamma=d.norm_embedding.weight.data, beta=d.norm_embedding.bias.data,
                   eps=d.norm_embedding.eps)
    return dict(word=enc.word.weight.data, position_table=enc.position.weight.data, **bert), dec


# ---- references against the models and generation/ (CPU) -----------------------------------------------------

@pytest.mark.parametrize("decoder", ["bert", "gpt2", "bart"])
def test_embed_reference_is_each_models_embedding_layer(decoder, rng):
    model = tiny_model(decoder, rng)
    ids, dec_ids = rng.integers(3, VOCAB, (2, 7)), rng.integers(3, VOCAB, (2, 5))
    with seq2seq.no_grad():
        out = model(ids, decoder_input_ids=dec_ids, output_hidden_states=True)
    enc_layer, dec_layer = embedding_layers(model, decoder)
    _, enc_y = reference.embed(ids, **enc_layer)
    _, dec_y = reference.embed(dec_ids, **dec_layer)
    np.testing.assert_allclose(enc_y, out.encoder_hidden_states[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dec_y, out.decoder_hidden_states[0], rtol=1e-5, atol=1e-5)


def test_embed_reference_positions_are_the_rows_own(rng):
    word, table = rng.standard_normal((10, 4)).astype(np.float32), rng.standard_normal((12, 4)).astype(np.float32)
    ids = np.array([[1, 2, 3], [4, 5, 6]])
    v, y = reference.embed(ids, word, table, positions=np.array([[3, 4, 5], [0, 1, 2]]), position_offset=2)
    np.testing.assert_array_equal(v, word[ids] + table[[[5, 6, 7], [2, 3, 4]]])
    np.testing.assert_array_equal(y, v)  # no LayerNorm without gamma


def test_argmax_reference_is_greedy_decodings_choice(rng):
    scores = np.round(rng.standard_normal((6, 50)).astype(np.float32))  # many exact ties
    scores[1, :] = -np.inf
    scores[2, 30] = np.nan
    want = sampling.choose_tokens(scores, do_sample=False, rng=None)
    np.testing.assert_array_equal(reference.argmax(scores), want)


@pytest.mark.parametrize("step", ["first", "later"])
def test_beam_topk_and_merge_references_are_beam_searchs_candidates(step, rng):
    batch, beams, vocab, eos = 3, 4, 30, [5]
    logits = np.round(rng.standard_normal((batch * beams, vocab)).astype(np.float32) * 2) / 2  # ties
    logits[1] = logits[0]  # two beams alike: ties across beams, decided by the flat index
    running = beam_search.Hypotheses(ids=np.full((batch, beams, 10), 2, np.int64),
                                     scores=np.zeros((batch, beams), np.float32))
    running.scores[:, 1:] = beam_search.NEG if step == "first" else 0.0
    log_probs = beam_search.log_softmax(logits)
    cands = beam_search.top_candidates(log_probs, running, 1, eos, max_length=10)
    k = beam_search.candidates_per_beam(eos) * beams
    lp, top_values, top_ids = reference.beam_topk(logits, k, beam_scores=running.scores.reshape(-1))
    values, flat = reference.beam_merge(top_values, top_ids, n_beams=beams, vocab=vocab)
    np.testing.assert_allclose(lp, log_probs, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(values, cands.scores)
    np.testing.assert_array_equal(flat // vocab, cands.beam)
    np.testing.assert_array_equal(flat % vocab, cands.ids[:, :, 1])


def test_sample_reference_is_sample_tokens_with_its_uniforms(rng):
    scores = rng.standard_normal((50, 30)).astype(np.float32) * 3
    scores[:, ::4] = -np.inf  # filtered tokens: never drawn
    want = sampling.sample_tokens(scores, np.random.default_rng(7))
    got = reference.sample(scores, np.random.default_rng(7).random(50))
    np.testing.assert_array_equal(got, want)
    assert not np.isin(got % 4, 0).any()


def test_sample_reference_marks_rows_it_cannot_draw_from():
    scores = np.zeros((4, 5), np.float32)
    scores[0, 2], scores[1, 1], scores[2] = np.nan, np.inf, -np.inf
    np.testing.assert_array_equal(reference.sample(scores, np.full(4, 0.5)), [-1, -1, -1, 2])


# ---- the kernels against the references: emulated float32 on the CPU, each storage type on a GPU -----------------

EMBEDDINGS = {  # how each model calls the kernel (besides the tables)
    "bert": dict(type_layer=True, layer_norm=True),
    "bert-token-types": dict(type_layer=True, layer_norm=True, token_types=True),
    "gpt2-with-ln_1": dict(layer_norm=True, with_sum=True),
    "gpt2": dict(),
    "bart-decode-step": dict(layer_norm=True, word_scale=math.sqrt(96), position_offset=2, positions=True),
}


@pytest.mark.parametrize("case", sorted(EMBEDDINGS))
def test_embed_kernel(launcher, case, rng):
    xp, dtype, how = launcher.xp, launcher.dtype, EMBEDDINGS[case]
    width = 96
    ids = rng.integers(0, 50, (3, 4))
    shapes = ((50, width), (20, width), (2, width), (width,), (width,))
    (word, word_f), (pos, pos_f), (types, types_f), (gamma, gamma_f), (beta, beta_f) = (
        storage(rng.standard_normal(shape), dtype) for shape in shapes)
    positions = rng.integers(0, 10, (3, 4)) if how.get("positions") else None
    token_types = rng.integers(0, 2, (3, 4)) if how.get("token_types") else None
    given = dict(positions=positions, token_types=token_types, position_offset=how.get("position_offset", 0),
                 word_scale=how.get("word_scale", 1.0), eps=1e-5)
    tables = {"type_table": types if how.get("type_layer") else None,
              "gamma": gamma if how.get("layer_norm") else None, "beta": beta if how.get("layer_norm") else None}
    tables_f = {"type_table": types_f, "gamma": gamma_f, "beta": beta_f}
    tables_f = {key: None if tables[key] is None else a for key, a in tables_f.items()}  # the same ones, as float32
    on_device = {key: None if a is None else xp.asarray(a) for key, a in tables.items()}
    launch = plans.embed(xp.asarray(ids), xp.asarray(word), xp.asarray(pos), **given, **on_device,
                         with_sum=how.get("with_sum", False), dtype=dtype)
    got = launcher.run(launch)
    want_sum, want_y = reference.embed(ids, word_f, pos_f, **tables_f, **given)
    if how.get("with_sum"):
        np.testing.assert_allclose(back(got[0], dtype), want_sum, rtol=TOL[dtype], atol=TOL[dtype])
        got = got[1]
    np.testing.assert_allclose(back(got, dtype), want_y, rtol=TOL[dtype], atol=4 * TOL[dtype])


def test_argmax_kernel(launcher, rng):
    xp, dtype = launcher.xp, launcher.dtype
    scores = np.round(rng.standard_normal((5, 1000)) * 2)  # exact ties, kept exact in every storage type
    scores[1, :] = -np.inf
    scores[2, [7, 700]] = 50.0
    scores[3, [600, 40]] = np.nan  # the first NaN, as torch.argmax and numpy.argmax
    stored, values = storage(scores, dtype)
    got = launcher.run(plans.argmax(xp.asarray(stored), dtype=dtype))
    np.testing.assert_array_equal(back(got, "float32").astype(np.int64), reference.argmax(values))


@pytest.mark.parametrize("k, normalise, with_beams",
                         [(8, True, True), (1, True, False), (24, False, True), (0, True, False)])
def test_beam_topk_kernel(launcher, k, normalise, with_beams, rng):
    xp, dtype = launcher.xp, launcher.dtype
    stored, values = storage(np.round(rng.standard_normal((3, 1000)) * 4) / 4, dtype)  # ties
    beam_scores = np.array([0.0, -1.0, -1e9], np.float32) if with_beams else None
    launch = plans.beam_topk(xp.asarray(stored), k, normalise=normalise, with_log_probs=True, dtype=dtype,
                             beam_scores=None if beam_scores is None else xp.asarray(beam_scores))
    lp, top_values, top_ids = (back(a, "float32") for a in launcher.run(launch))
    want_lp, want_values, want_ids = reference.beam_topk(values, k, beam_scores=beam_scores, normalise=normalise)
    np.testing.assert_allclose(lp, want_lp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(top_values, want_values, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(top_ids.astype(np.int64), want_ids)


def test_beam_merge_kernel(launcher, rng):
    xp = launcher.xp
    batch, beams, k, vocab = 2, 3, 6, 100
    top_values = -np.sort(np.round(rng.random((batch * beams, k)) * 4), axis=-1).astype(np.float32)  # best first
    top_ids = np.sort(rng.permutation(vocab)[:k])[None].repeat(batch * beams, 0).astype(np.int64)
    top_values[1] = top_values[0]  # whole beams alike: the flat index decides
    values, flat = launcher.run(plans.beam_merge(xp.asarray(top_values), xp.asarray(top_ids), n_beams=beams,
                                                 vocab=vocab))
    want_values, want_flat = reference.beam_merge(top_values, top_ids, n_beams=beams, vocab=vocab)
    np.testing.assert_array_equal(back(values, "float32"), want_values)
    np.testing.assert_array_equal(back(flat, "float32").astype(np.int64), want_flat)


@pytest.mark.parametrize("vocab", [1000, 7])
def test_sample_kernel(launcher, vocab, rng):
    xp, dtype = launcher.xp, launcher.dtype
    scores = rng.standard_normal((8, vocab)) * 2
    scores[:, 1::3] = -np.inf  # filtered out
    scores[5] = -np.inf  # nothing to draw from
    stored, values = storage(scores, dtype)
    uniforms = rng.random(8)
    uniforms[:2] = [0.0, 1.0 - 2.0 ** -53]  # the first token that can be drawn, and the last
    got = launcher.run(plans.sample(xp.asarray(stored), xp.asarray(uniforms), dtype=dtype))
    want = reference.sample(values, uniforms)
    assert want[0] == 0 and want[1] == max(j for j in range(vocab) if j % 3 != 1) and want[5] == -1
    np.testing.assert_array_equal(back(got, "float32").astype(np.int64), want)


# ---- the plans' checks (CPU) ------------------------------------------------------------------------------------

def test_token_plans_refuse_what_the_kernels_cannot_do():
    scores = np.zeros((4, 10), np.float32)
    with pytest.raises(InputError, match="k = 11"):
        plans.beam_topk(scores, 11)
    with pytest.raises(InputError, match="beam_scores must be float32"):
        plans.beam_topk(scores, 2, beam_scores=np.zeros(4))
    with pytest.raises(InputError, match="candidates expected"):
        plans.beam_merge(scores, scores.astype(np.int64), n_beams=3, vocab=10)
    with pytest.raises(InputError, match="gamma and beta together"):
        plans.embed(np.zeros((1, 2), np.int64), scores, scores, gamma=scores[0])
    with pytest.raises(InputError, match="no kernel for dtype"):
        plans.argmax(scores.astype(np.float64))
