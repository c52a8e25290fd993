"""The real GPT-2 tokenizer (tests/fixtures/gpt2): known ids, and thousands of lines of English compared with
transformers.

The fixture is OpenAI's GPT-2 vocabulary rebuilt offline by tests/fixtures/make_gpt2_vocab.py (see the README
there); it is byte-identical to OpenAI's encoder.json / vocab.bpe. The corpus (about 5,000 distinct lines here) is
English text this machine already has, read at test time: the licence texts in /usr/share/common-licenses and
CPython's LICENSE.txt when present, the docstrings of a few stdlib modules, and hand-written awkward lines (spaces,
tabs, unicode, emoji, ``<|endoftext|>`` inside text). Tests that need it skip when too little is found.

transformers is the oracle only. Its ``decode`` defaults to ``skip_special_tokens=False`` and ours to True, so every
comparison passes the flag to both.
"""
import functools
import glob
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import sys
import warnings

import numpy as np
import pytest

from seq2seq import Tokenizer

try:
    import transformers
except ImportError:  # the oracle tests skip; the rest still run
    transformers = None

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
GPT2_DIR = os.path.join(FIXTURES, "gpt2")
EOT, EOT_ID = "<|endoftext|>", 50256

# sha256 of OpenAI's encoder.json and vocab.bpe, which the fixture reproduces byte for byte.
FIXTURE_SHA256 = {
    "vocab.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "merges.txt": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}

# Well-known GPT-2 ids (the same in tiktoken's "gpt2" encoding and every GPT-2 checkpoint).
KNOWN = [
    ("Hello world", [15496, 995]),
    ("Hello, world!", [15496, 11, 995, 0]),
    ("The quick brown fox jumps over the lazy dog.", [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]),
    (EOT, [EOT_ID]),
    ("Hello world" + EOT, [15496, 995, EOT_ID]),
    (" ", [220]),
    ("\n", [198]),
    ("\t", [197]),
    ("!", [0]),
]

# Awkward lines, added to the corpus.
EXTRA_LINES = [
    "Hello world",
    " Hello world",
    "  two leading spaces",
    "        eight leading spaces",
    "\tTab first",
    "\t\tTwo tabs first",
    "tabs\tin\tthe\tmiddle",
    "multiple    spaces   between  words",
    "trailing spaces   ",
    "trailing tab\t",
    " \t mixed \t whitespace \t ",
    "line\nbreaks\n\nand blank lines\n",
    "\r\nWindows line end\r\n",
    "Café naïve crème brûlée, Ångström, Zürich, São Paulo, Œuvre, ß.",
    "東京は日本の首都です。",
    "我爱自然语言处理",
    "한국어 텍스트도 있어요",
    "Привет, как дела?",
    "مرحبا بالعالم",
    "Ελληνικά γράμματα",
    "Emoji 😀🚀👍🏽 and a family 👨‍👩‍👧‍👦 and a flag 🇯🇵.",
    "Symbols ©®™ ≠ ≤ ∑ √ ∞ € £ ¥ § ¶ • … — – «quotes» “curly” ‘single’",
    "Hello world<|endoftext|>next",
    EOT,
    EOT + EOT,
    " <|endoftext|> spaced out ",
    "text<|endoftext|>",
    "<|endoftext|>text",
    "\n<|endoftext|>\n",
    "almost <|endoftext| and <|endoftext and |endoftext|> and <|ENDOFTEXT|>",
    "I'm here, you're there, it's his, we'll go, they've gone, I'd say, don't",
    "DON'T SHOUT'S WE'LL",
    "Numbers 3.14159 42 1,000,000 -7e10 2024 0x1F 1234567890123",
    "x" * 300,
    "https://example.org/a?b=c&d=e#frag and someone@example.com",
    "code: def f(x):\n    return x ** 2  # comment",
    "\u00a0non-breaking\u00a0spaces\u00a0",
    "zero\u200bwidth and soft\u00adhyphen",
    "combining e\u0301 vs precomposed é",
    "\x00\x01 control chars \x7f\x1b[0m",
    "\ufeffbyte order mark",
    "ÿ",
    "a",
    "   ",
    "",
]


def oracle(test):
    """Mark a test that compares live against transformers (``-m "not oracle"`` deselects them)."""
    return pytest.mark.oracle(pytest.mark.skipif(transformers is None, reason="needs transformers")(test))


def _text_files():
    """Plain English text files present on this machine: the common licences and CPython's LICENSE.txt."""
    candidates = sorted(glob.glob("/usr/share/common-licenses/*"))
    stdlib = os.path.dirname(os.__file__)
    candidates += [os.path.join(stdlib, "LICENSE.txt"), os.path.join(sys.base_prefix, "LICENSE.txt"),
                   f"/usr/lib/python{sys.version_info.major}.{sys.version_info.minor}/LICENSE.txt"]
    seen, files = set(), []
    for path in candidates:
        real = os.path.realpath(path)  # GPL -> GPL-3 etc.: read each file once
        if os.path.isfile(real) and real not in seen:
            seen.add(real)
            files.append(real)
    return files


DOC_MODULES = ("argparse", "collections", "json", "os", "re", "string", "textwrap", "unittest")


def _docstrings():
    """The docstrings of a few stdlib modules and their public members: English prose with code, always present."""
    docs = []
    for name in DOC_MODULES:
        module = importlib.import_module(name)
        members = [module] + [getattr(module, a, None) for a in sorted(dir(module)) if not a.startswith("_")]
        docs += [m.__doc__ for m in members if isinstance(getattr(m, "__doc__", None), str)]
    return docs


@functools.lru_cache(maxsize=None)
def corpus_lines():
    """Every distinct line (as is: leading spaces, tabs and all) of the text files and stdlib docstrings, plus
    3-line chunks with their newlines (so "\\n\\n" and indentation merges are exercised), then EXTRA_LINES."""
    texts = []
    for path in _text_files():
        with open(path, encoding="utf-8", errors="replace") as f:
            texts.append(f.read())
    lines = []
    for text in texts + _docstrings():
        text_lines = text.split("\n")
        lines += text_lines
        lines += ["\n".join(text_lines[i:i + 3]) for i in range(0, len(text_lines), 25)]
    return tuple(dict.fromkeys(lines + EXTRA_LINES))


@pytest.fixture(scope="module")
def corpus():
    lines = corpus_lines()
    if len(lines) < len(EXTRA_LINES) + 500:
        pytest.skip("too little English text found on this machine")
    return list(lines)


@pytest.fixture(scope="module")
def ours():
    return Tokenizer.from_pretrained(GPT2_DIR)


@pytest.fixture(scope="module")
def hf():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.GPT2TokenizerFast.from_pretrained(GPT2_DIR)


@pytest.fixture(scope="module")
def padded_dir(tmp_path_factory):
    """The fixture with ``pad_token`` = ``<|endoftext|>`` added to its config (GPT-2 itself has no pad token)."""
    path = tmp_path_factory.mktemp("gpt2_pad")
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(os.path.join(GPT2_DIR, name), path)
    with open(path / "tokenizer_config.json") as f:
        config = json.load(f)
    with open(path / "tokenizer_config.json", "w") as f:
        json.dump({**config, "pad_token": EOT}, f)
    return path


def ours_ids(tok, text, **kwargs):
    """One text's ids as a list (no padding needed for a single row)."""
    return tok(text, padding=False, **kwargs)["input_ids"][0].tolist()


def hf_ids(hf, texts, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hf(texts, **kwargs)["input_ids"]


# ---------------------------------------------------------------------- the fixture files

def test_fixture_is_openai_vocabulary():
    for name, digest in FIXTURE_SHA256.items():
        with open(os.path.join(GPT2_DIR, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, f"{name} differs from OpenAI's file"
    total = sum(os.path.getsize(p) for p in glob.glob(os.path.join(GPT2_DIR, "*")))
    assert total < 2 * 1024 * 1024


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_gpt2_vocab", os.path.join(FIXTURES, "make_gpt2_vocab.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_reproduces_fixture():
    """Feed the generator the ranks read back from vocab.json (as gpt2.tiktoken would give them): same files."""
    gen = _load_generator()
    to_byte = {c: b for b, c in gen.bytes_to_unicode().items()}
    with open(os.path.join(GPT2_DIR, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    ranks = {bytes(to_byte[c] for c in token): rank for token, rank in vocab.items() if token != EOT}
    vocab_text, merges_text = gen.build(ranks)
    for name, text in (("vocab.json", vocab_text), ("merges.txt", merges_text)):
        with open(os.path.join(GPT2_DIR, name), "rb") as f:
            assert text.encode("utf-8") == f.read(), name
    table = gen.bytes_to_unicode()
    assert len(set(table.values())) == 256 and table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ"
    assert table[ord("A")] == "A" and table[0xAD] == "Ń" and table[0xFF] == "ÿ"


# ---------------------------------------------------------------------- known ids (no transformers needed)

def test_properties(ours):
    assert ours.vocab_size == len(ours) == 50257
    assert ours.eos_token_id == ours.bos_token_id == ours.unk_token_id == EOT_ID
    assert ours.pad_token_id is None and ours.cls_token_id is None and ours.sep_token_id is None
    assert ours.model_max_length == 1024
    assert ours.convert_ids_to_tokens([15496, 995, 220, 198]) == ["Hello", "Ġworld", "Ġ", "Ċ"]
    assert ours.convert_tokens_to_ids(["Hello", "Ġworld", EOT, "not a token"]) == [15496, 995, EOT_ID, EOT_ID]


@pytest.mark.parametrize("text,ids", KNOWN, ids=[repr(t)[:20] for t, _ in KNOWN])
def test_known_encodings(ours, text, ids):
    out = ours(text)
    assert out["input_ids"].tolist() == [ids] and out["attention_mask"].tolist() == [[1] * len(ids)]
    assert ours.decode(ids, skip_special_tokens=False) == text


def test_batch_of_equal_lengths_needs_no_pad_token(ours):
    out = ours(["Hello world", "Hello,"], padding=False)  # two tokens each
    assert out["input_ids"].tolist() == [[15496, 995], [15496, 11]]
    out = ours(["Hello world", "Hello,"])  # padding=True, but nothing to pad
    assert out["input_ids"].tolist() == [[15496, 995], [15496, 11]]


def test_decode_skips_end_of_text(ours):
    ids = [15496, 995, EOT_ID, 464]
    assert ours.decode(ids) == "Hello worldThe"
    assert ours.decode(ids, skip_special_tokens=False) == "Hello world<|endoftext|>The"
    assert ours.batch_decode(np.array([ids]), skip_special_tokens=False) == ["Hello world<|endoftext|>The"]


def test_truncation_at_model_max_length(ours):
    ids = ours(" ".join(["word"] * 2000))["input_ids"]
    assert ids.shape == (1, 1024)
    assert ours(" ".join(["word"] * 2000), max_length=7)["input_ids"].tolist() == [[4775] + [1573] * 6]


def test_corpus_round_trips(ours, corpus):
    """Byte-level BPE is lossless: decoding an encoding gives back the exact text (minus skipped specials)."""
    for line in corpus:
        ids = ours_ids(ours, line, truncation=False)
        assert ours.decode(ids, skip_special_tokens=False) == line
        assert ours.decode(ids, skip_special_tokens=True) == line.replace(EOT, "")


# ---------------------------------------------------------------------- against transformers

@oracle
def test_properties_match_transformers(ours, hf):
    assert ours.vocab_size == len(hf) == 50257
    for name in ("pad", "unk", "cls", "sep", "mask", "bos", "eos"):
        assert getattr(ours, f"{name}_token_id") == getattr(hf, f"{name}_token_id"), name
    assert ours.model_max_length == hf.model_max_length == 1024
    ids = list(range(0, 50257, 97)) + [EOT_ID]
    assert ours.convert_ids_to_tokens(ids) == hf.convert_ids_to_tokens(ids)
    for text, expected in KNOWN:
        assert hf_ids(hf, text) == expected


@oracle
def test_corpus_encode_matches(ours, hf, corpus):
    """Every line encoded alone, then in batches of lines with equal token counts (padding=False)."""
    expected = hf_ids(hf, corpus)
    by_length = {}
    for line, ids in zip(corpus, expected):
        assert ours_ids(ours, line) == ids, repr(line)
        by_length.setdefault(len(ids), []).append((line, ids))
    for group in by_length.values():
        got = ours([line for line, _ in group], padding=False)
        assert got["input_ids"].tolist() == [ids for _, ids in group]
        assert got["attention_mask"].all()


@oracle
@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_corpus_encode_matches_with_bos_eos(padded_dir, tmp_path, corpus, add_special_tokens):
    """add_bos_token / add_eos_token rewrite the post-processor in both libraries."""
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(padded_dir / name, tmp_path)
    with open(tmp_path / "tokenizer_config.json") as f:
        config = json.load(f)
    with open(tmp_path / "tokenizer_config.json", "w") as f:
        json.dump({**config, "add_bos_token": True, "add_eos_token": True}, f)
    ours = Tokenizer.from_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.GPT2TokenizerFast.from_pretrained(tmp_path)
    lines = corpus[:: max(1, len(corpus) // 400)]
    expected = hf_ids(hf, lines, add_special_tokens=add_special_tokens)
    got = ours(lines, add_special_tokens=add_special_tokens)
    for row, mask, ids in zip(got["input_ids"].tolist(), got["attention_mask"].tolist(), expected):
        assert row[: sum(mask)] == ids
    if add_special_tokens:
        assert all(ids[0] == ids[-1] == EOT_ID for ids in expected)


def _padded_pair(padded_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Tokenizer.from_pretrained(padded_dir), transformers.GPT2TokenizerFast.from_pretrained(padded_dir)


@oracle
@pytest.mark.parametrize("padding,truncation,max_length", [
    (True, True, None),
    ("longest", True, 12),
    ("max_length", True, 12),
    (True, False, None),
])
def test_corpus_padded_batches_match(padded_dir, corpus, padding, truncation, max_length):
    ours, hf = _padded_pair(padded_dir)
    assert ours.pad_token_id == hf.pad_token_id == EOT_ID
    for start in range(0, len(corpus), 512):
        batch = corpus[start:start + 512]
        got = ours(batch, padding=padding, truncation=truncation, max_length=max_length)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = hf(batch, padding=padding, truncation=truncation, max_length=max_length, return_tensors="np")
        np.testing.assert_array_equal(got["input_ids"], want["input_ids"])
        np.testing.assert_array_equal(got["attention_mask"], want["attention_mask"])
        for skip in (True, False):
            assert ours.batch_decode(got["input_ids"], skip_special_tokens=skip) == hf.batch_decode(
                want["input_ids"].tolist(), skip_special_tokens=skip)


@oracle
def test_corpus_decode_matches(ours, hf, corpus):
    for line, ids in zip(corpus, hf_ids(hf, corpus)):
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip), repr(line)
        assert ours.decode(ids, skip_special_tokens=False) == line


@oracle
def test_every_single_token_decodes_the_same(ours, hf):
    """Each id alone, including the byte tokens that are not valid UTF-8 by themselves (decoded to U+FFFD)."""
    rows = np.arange(ours.vocab_size)[:, None]
    for skip in (True, False):
        assert ours.batch_decode(rows, skip_special_tokens=skip) == hf.batch_decode(
            rows.tolist(), skip_special_tokens=skip)
    assert ours.decode([10545], skip_special_tokens=False) == " \ufffd"  # " " + the first byte of 東, cut off


@oracle
def test_split_multibyte_characters_decode_the_same(ours, hf, corpus):
    """Decoding a prefix of a line's ids may cut a character in half; both libraries must agree on the result."""
    for line in [line for line in corpus if any(ord(c) > 127 for c in line)][:100]:
        ids = hf_ids(hf, line)
        for end in range(len(ids) + 1):
            assert ours.decode(ids[:end], skip_special_tokens=False) == hf.decode(ids[:end], skip_special_tokens=False)
