"""Text <-> token ids, the way Hugging Face's fast tokenizers do it.

``Tokenizer`` is a thin wrapper over the Rust ``tokenizers`` library (the engine behind transformers' "fast"
tokenizers). All the real work (normalising, splitting, WordPiece/BPE, decoding) happens there; this file only adds
what transformers adds on top: reading special tokens and limits from ``tokenizer_config.json``, padding and
truncation per call, rectangular NumPy batches, and the optional ``clean_up_tokenization`` pass after decoding.

Three on-disk formats load: ``tokenizer.json`` (preferred), a BERT ``vocab.txt`` and a GPT-2 ``vocab.json`` +
``merges.txt``. ``save_pretrained`` always writes ``tokenizer.json``, so a saved folder reloads here and in
``transformers.AutoTokenizer`` with identical encodings.
"""
import json
import os

import numpy as np
from tokenizers import AddedToken
from tokenizers import Tokenizer as _RustTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from ..core.backend import to_numpy
from ..core.errors import CheckpointError, CheckpointNotFoundError, InputError
from . import hub

SPECIAL_NAMES = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")
# transformers' class defaults, used when the config does not name a token (BertTokenizer / GPT2Tokenizer).
BERT_DEFAULTS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
GPT2_DEFAULTS = {"unk": "<|endoftext|>", "bos": "<|endoftext|>", "eos": "<|endoftext|>"}
# transformers treats a model_max_length above this (its 1e30 "unlimited" sentinel) as no limit.
_UNLIMITED = int(1e20)
_LOOKED_FOR = "tokenizer.json, vocab.txt (BERT WordPiece), or vocab.json + merges.txt (GPT-2 byte-level BPE)"
# What from_pretrained fetches of a Hub repo (hub.py): the first vocabulary form the repo has, and the configs.
TOKENIZER_FILES = (
    hub.Wanted((("tokenizer.json",), ("vocab.txt",), ("vocab.json", "merges.txt"))),
    hub.Wanted((("tokenizer_config.json",),), optional=True),
    hub.Wanted((("special_tokens_map.json",),), optional=True),
)


def _read_json(path):
    """A JSON file's content, or {} when the file does not exist."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from err


def _as_added_token(value):
    """A special token from a config (a string, or a serialised AddedToken dict) as an AddedToken."""
    if isinstance(value, dict):
        flags = {k: value[k] for k in ("single_word", "lstrip", "rstrip", "normalized") if k in value}
        return AddedToken(value["content"], special=True, **flags)
    return AddedToken(str(value), special=True, normalized=False)


def _set_bert_pipeline(backend, config):
    """BERT's normaliser, pre-tokenizer and decoder, from the config with BertTokenizer's defaults."""
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=config.get("tokenize_chinese_chars", True),
        strip_accents=config.get("strip_accents"),  # None: follow lowercase, as the original BERT does
        lowercase=config.get("do_lower_case", True),
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")


def _set_gpt2_pipeline(backend, config):
    """GPT-2's byte-level pre-tokenizer and decoder (no normaliser), from the config with GPT2Tokenizer's defaults."""
    backend.normalizer = None
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=config.get("add_prefix_space", False))
    backend.decoder = decoders.ByteLevel()


# transformers 5 rebuilds these classes' pipelines from tokenizer_config.json even when a tokenizer.json exists
# (only the vocabulary, added tokens and post-processor come from the file), so do_lower_case=False in the
# config wins over a lower-casing tokenizer.json. We do the same for the two families we know.
CLASS_PIPELINES = {
    "BertTokenizer": _set_bert_pipeline,
    "BertTokenizerFast": _set_bert_pipeline,
    "GPT2Tokenizer": _set_gpt2_pipeline,
    "GPT2TokenizerFast": _set_gpt2_pipeline,
}


def _bert_backend(vocab_file, config):
    """Build BERT's WordPiece tokenizer from vocab.txt (one token a line, the id is the line number)."""
    unk = config.get("unk_token", BERT_DEFAULTS["unk"])
    unk = unk["content"] if isinstance(unk, dict) else unk
    with open(vocab_file, encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    backend = _RustTokenizer(models.WordPiece(vocab, unk_token=unk))
    _set_bert_pipeline(backend, config)
    return backend


def _gpt2_backend(vocab_file, merges_file, config):
    """Build GPT-2's byte-level BPE tokenizer from vocab.json + merges.txt."""
    vocab, merges = models.BPE.read_file(vocab_file, merges_file)
    backend = _RustTokenizer(models.BPE(vocab, merges, continuing_subword_prefix="", end_of_word_suffix="",
                                        fuse_unk=False))
    _set_gpt2_pipeline(backend, config)
    return backend


class Tokenizer:
    """Encode text to padded NumPy id batches and decode ids back to text, matching transformers' fast tokenizers."""

    def __init__(self, backend, *, special_tokens, extra_special_tokens=(), model_max_length=None,
                 clean_up_tokenization_spaces=False):
        """Wrap a ``tokenizers.Tokenizer``; ``special_tokens`` maps "pad", "unk", ... to a token (str or dict)."""
        self._backend = backend
        # Padding and truncation are chosen per call; a tokenizer.json may ship its own (MiniLM's pads to 128).
        backend.no_padding()
        backend.no_truncation()
        named = {name: tok for name, tok in special_tokens.items() if tok is not None}
        # As transformers' _post_init: special tokens become special added tokens, so they are matched whole
        # in raw text and dropped by skip_special_tokens. Tokens already in the vocabulary keep their id.
        backend.add_special_tokens([_as_added_token(tok) for tok in [*named.values(), *extra_special_tokens]])
        self._special = {name: tok["content"] if isinstance(tok, dict) else str(tok) for name, tok in named.items()}
        limit = model_max_length
        self._model_max_length = int(limit) if limit is not None and limit <= _UNLIMITED else None
        self._clean_up = bool(clean_up_tokenization_spaces)

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_pretrained(cls, path, *, revision=None, cache_dir=None):
        """Load from a directory holding tokenizer.json, vocab.txt, or vocab.json + merges.txt, or from a Hub id
        (``"org/name"``, at ``revision``, through huggingface_hub's cache or ``cache_dir``; see hub.py)."""
        path = hub.resolve(path, files=TOKENIZER_FILES, revision=revision, cache_dir=cache_dir)
        if not os.path.isdir(path):
            raise CheckpointNotFoundError(f"tokenizer directory {path!r} does not exist; looked for {_LOOKED_FOR}")
        config = _read_json(os.path.join(path, "tokenizer_config.json"))
        file = lambda name: os.path.join(path, name)  # noqa: E731
        tokenizer_class = str(config.get("tokenizer_class") or "")
        try:
            if os.path.isfile(source := file("tokenizer.json")):
                backend = _RustTokenizer.from_file(source)
                if tokenizer_class in CLASS_PIPELINES:
                    CLASS_PIPELINES[tokenizer_class](backend, config)
                defaults = (BERT_DEFAULTS if "Bert" in tokenizer_class
                            else GPT2_DEFAULTS if "GPT2" in tokenizer_class else {})
            elif os.path.isfile(source := file("vocab.txt")):
                backend, defaults = _bert_backend(source, config), BERT_DEFAULTS
            elif os.path.isfile(source := file("vocab.json")) and os.path.isfile(file("merges.txt")):
                backend, defaults = _gpt2_backend(source, file("merges.txt"), config), GPT2_DEFAULTS
            else:
                raise CheckpointNotFoundError(f"no tokenizer files in {path!r}; looked for {_LOOKED_FOR}")
        except CheckpointError:
            raise
        except Exception as err:  # the Rust side raises plain Exceptions for malformed files
            raise CheckpointError(f"cannot load tokenizer from {source}: {err}") from err

        # Legacy special_tokens_map.json overrides the config, but only when the config has no
        # added_tokens_decoder (transformers' from_pretrained does the same).
        if "added_tokens_decoder" not in config:
            config = {**config, **_read_json(file("special_tokens_map.json"))}
        special = {name: config.get(f"{name}_token", defaults.get(name)) for name in SPECIAL_NAMES}
        extra = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
        extra = extra if isinstance(extra, list) else list(extra.values())  # a dict names model-specific tokens

        tok = cls(backend, special_tokens=special, extra_special_tokens=extra,
                  model_max_length=config.get("model_max_length"),
                  clean_up_tokenization_spaces=config.get("clean_up_tokenization_spaces", False))
        if tokenizer_class in ("BertTokenizer", "BertTokenizerFast") or os.path.basename(source) == "vocab.txt":
            tok._set_template(first="cls", last="sep", first_before_b=False)  # BertTokenizer always does this
        elif "add_bos_token" in config or "add_eos_token" in config:
            # Explicit flags rewrite the post-processor (TokenizersBackend.update_post_processor).
            tok._set_template(first="bos" if config.get("add_bos_token") else None,
                              last="eos" if config.get("add_eos_token") else None, first_before_b=True)
        return tok

    def _set_template(self, *, first, last, first_before_b):
        """Make encoding wrap each text in the named special tokens ``first`` / ``last`` ("cls", "bos", ...).

        Only the pair template differs between families: BERT's is ``[CLS] A [SEP] B [SEP]``, while
        transformers' bos/eos template repeats ``first`` before B as well.
        """
        first, last = (name if name and self._special_id(name) is not None else None for name in (first, last))
        single, pair_b = ["$A:0"], ["$B:1"]
        if first:
            single.insert(0, f"{self._special[first]}:0")
            if first_before_b:
                pair_b.insert(0, f"{self._special[first]}:1")
        if last:
            single.append(f"{self._special[last]}:0")
            pair_b.append(f"{self._special[last]}:1")
        ids = {self._special[name]: self._special_id(name) for name in (first, last) if name}
        self._backend.post_processor = processors.TemplateProcessing(
            single=" ".join(single), pair=" ".join(single + pair_b), special_tokens=list(ids.items()))

    def save_pretrained(self, path):
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json into ``path``."""
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        self._backend.save(os.path.join(path, "tokenizer.json"))  # padding/truncation are off between calls
        token_map = {f"{name}_token": tok for name, tok in self._special.items()}
        config = {
            # The generic class makes transformers use tokenizer.json as is, rather than rebuilding the pipeline
            # from per-class defaults (which BertTokenizer does in transformers 5).
            "tokenizer_class": "PreTrainedTokenizerFast",
            **token_map,
            "clean_up_tokenization_spaces": self._clean_up,
        }
        if self._model_max_length is not None:
            config["model_max_length"] = self._model_max_length
        for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", token_map)):
            with open(os.path.join(path, name), "w", encoding="utf-8") as f:
                json.dump(content, f, indent=2, ensure_ascii=False)

    # ------------------------------------------------------------------ vocabulary

    @property
    def backend_tokenizer(self):
        """The ``tokenizers.Tokenizer`` underneath, under transformers' name (generate's stop_strings read it)."""
        return self._backend

    @property
    def vocab_size(self):
        """Number of ids, added tokens included (``len(hf_tokenizer)``)."""
        return self._backend.get_vocab_size(with_added_tokens=True)

    def __len__(self):
        return self.vocab_size

    @property
    def model_max_length(self):
        """The longest input the model takes, or None when the config sets no limit; settable, as transformers'
        (truncation without ``max_length`` uses it, and ``save_pretrained`` writes it)."""
        return self._model_max_length

    @model_max_length.setter
    def model_max_length(self, limit):
        if limit is not None and (not isinstance(limit, (int, np.integer)) or isinstance(limit, bool) or limit < 1):
            raise InputError(f"model_max_length must be a positive int or None, got {limit!r}")
        self._model_max_length = None if limit is None or limit > _UNLIMITED else int(limit)

    def _special_id(self, name):
        token = self._special.get(name)
        return None if token is None else self._backend.token_to_id(token)

    pad_token_id = property(lambda self: self._special_id("pad"), doc="Id of the padding token, or None.")
    unk_token_id = property(lambda self: self._special_id("unk"), doc="Id of the unknown token, or None.")
    cls_token_id = property(lambda self: self._special_id("cls"), doc="Id of the classifier token, or None.")
    sep_token_id = property(lambda self: self._special_id("sep"), doc="Id of the separator token, or None.")
    mask_token_id = property(lambda self: self._special_id("mask"), doc="Id of the mask token, or None.")
    bos_token_id = property(lambda self: self._special_id("bos"), doc="Id of the begin-of-sequence token, or None.")
    eos_token_id = property(lambda self: self._special_id("eos"), doc="Id of the end-of-sequence token, or None.")

    def convert_tokens_to_ids(self, tokens):
        """Token string(s) to id(s); a token outside the vocabulary maps to the unknown id (None without one)."""
        if isinstance(tokens, str):
            found = self._backend.token_to_id(tokens)
            return self.unk_token_id if found is None else found
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids):
        """Id(s) to token string(s)."""
        if isinstance(ids, (int, np.integer)):
            return self._backend.id_to_token(self._checked_ids([ids])[0])
        return [self._backend.id_to_token(i) for i in self._checked_ids(ids)]

    # ------------------------------------------------------------------ encoding

    def __call__(self, texts, *, padding=True, truncation=True, max_length=None, add_special_tokens=True):
        """Encode a string or a list of strings to ``{"input_ids", "attention_mask"}``, both int64 [B, T]."""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)) or not texts or not all(isinstance(t, str) for t in texts):
            raise InputError(f"texts must be a str or a non-empty list of str, got {type(texts).__name__}")
        if padding not in (True, False, "longest", "max_length", "do_not_pad"):
            raise InputError(f"padding must be True, False, 'longest' or 'max_length', got {padding!r}")
        if not isinstance(truncation, bool):
            raise InputError(f"truncation must be True or False, got {truncation!r}")
        if max_length is not None and (not isinstance(max_length, (int, np.integer)) or max_length < 1):
            raise InputError(f"max_length must be a positive int or None, got {max_length!r}")

        # As transformers: without max_length, truncation and "max_length" padding fall back to model_max_length.
        limit = max_length if max_length is not None else self._model_max_length
        if truncation and limit is not None:
            specials = self._backend.num_special_tokens_to_add(False) if add_special_tokens else 0
            if limit < specials:
                # The Rust side (and so transformers) would silently skip truncation here; say so instead.
                raise InputError(f"max_length={limit} leaves no room for the {specials} special tokens of each row")
            self._backend.enable_truncation(int(limit))
        try:
            encodings = self._backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        except Exception as err:  # the Rust side raises plain Exceptions
            raise InputError(f"cannot encode the texts: {err}") from err
        finally:
            self._backend.no_truncation()
        rows = [e.ids for e in encodings]

        longest = max(len(r) for r in rows)
        if padding in (True, "longest"):
            width = longest
        elif padding == "max_length" and limit is not None:
            if longest > limit:  # only possible with truncation=False: the long rows would stay ragged
                raise InputError(f"padding='max_length' with max_length={limit} but a row has {longest} tokens; "
                                 "pass truncation=True")
            width = limit
        else:  # no padding, or "max_length" with no limit known (transformers then does not pad either)
            if any(len(r) != longest for r in rows):
                raise InputError(f"rows have different lengths ({min(map(len, rows))} to {longest} tokens) and "
                                 "arrays must be rectangular; pass padding=True")
            width = longest
        if self.pad_token_id is None and any(len(r) != width for r in rows):
            raise InputError("asked to pad but the tokenizer has no pad token (set pad_token in tokenizer_config.json)")

        input_ids = np.full((len(rows), width), self.pad_token_id or 0, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):  # right padding, as transformers' default padding_side
            input_ids[i, : len(row)] = row
            attention_mask[i, : len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    # ------------------------------------------------------------------ decoding

    def _checked_ids(self, ids):
        """Ids as a list of Python ints, refusing any outside [0, vocab_size)."""
        ids = np.asarray(ids) if isinstance(ids, (list, tuple, np.ndarray)) else to_numpy(ids)
        if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
            raise InputError(f"expected a 1-D sequence of integer ids, got shape {ids.shape} dtype {ids.dtype}")
        ids = ids.tolist()
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise InputError(f"token id {bad[0]} is outside the vocabulary (vocab_size={self.vocab_size})")
        return ids

    def decode(self, ids, *, skip_special_tokens=True):
        """Ids (list, NumPy or CuPy 1-D array) to text, as transformers' ``decode``."""
        if isinstance(ids, (int, np.integer)):
            ids = [ids]
        text = self._backend.decode(self._checked_ids(ids), skip_special_tokens=skip_special_tokens)
        # transformers skips this for BPE: it would delete real spaces before punctuation.
        if self._clean_up and type(self._backend.model).__name__ != "BPE":
            text = _clean_up_tokenization(text)
        return text

    def batch_decode(self, batch, *, skip_special_tokens=True):
        """A batch of id rows (list of lists, NumPy or CuPy 2-D array) to a list of texts."""
        if not isinstance(batch, (list, tuple)):
            batch = to_numpy(batch) if not isinstance(batch, np.ndarray) else batch
            if batch.ndim != 2:
                raise InputError(f"batch_decode expects a 2-D array of ids, got shape {batch.shape}")
        return [self.decode(row, skip_special_tokens=skip_special_tokens) for row in batch]


def _clean_up_tokenization(text):
    """Remove spaces that WordPiece decoding leaves before punctuation and English contractions."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text
