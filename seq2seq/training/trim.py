"""Vocabulary trimming: cut an encoder-decoder model and its WordPiece tokenizer down to the token ids a corpus uses.

Why: a warm-started bert2bert carries BERT's whole 30,522-token vocabulary, most of which a given task never sees.
For one built from all-MiniLM-L6-v2 (hidden size 384) with tied encoder and decoder, the word-embedding table is
11.7M of the model's 26.3M parameters, and the LM head (the same table, transposed) is the largest matrix product
of every decode step. A Debian corpus uses about 17.9k distinct ids; keeping only those leaves about 21.5M
parameters, and the LM head and softmax shrink by 41%.

    new_model, new_tokenizer, kept_ids = trim_vocabulary(model, tokenizer, texts, min_count=1)

Which ids are kept: every id that occurs at least ``min_count`` times when ``texts`` are tokenized, plus every
special or added token of the tokenizer ([PAD] [UNK] [CLS] [SEP] [MASK] ...), the ids its post-processor inserts,
the special ids any config names (``decoder_start_token_id``, ``pad/bos/eos_token_id`` of the model config, both
sub-configs and the generation config), and ``keep_ids``.

How ids are remapped: the kept ids stay in their original order, so the new id of a token is its rank among the
kept ids: ``new_id = searchsorted(kept_ids, old_id)`` and ``old_id = kept_ids[new_id]``. [PAD] = 0 stays 0;
the others move down (MiniLM: [UNK] 100 -> 1, [CLS] 101 -> 2, [SEP] 102 -> 3 when no [unusedN] token is used).
The same map is applied everywhere an id is stored: the rows of every parameter the encoder and the decoder
declare as indexed by token id (their ``vocab_parameters()``: word embeddings, an LM-head bias), the special ids
of every config and of the generation config, and the tokenizer's vocabulary, added tokens and post-processor
template.

What holds afterwards:
- On ids the trimmed vocabulary covers, the trimmed model computes the same logits as the full one restricted to
  the kept columns (same order): nothing but the vocabulary-sized tensors changed, each sliced by ``kept_ids``.
  Generation can differ only where the full model would have picked a dropped token.
- The trimmed tokenizer gives every text whose words it already split into kept pieces exactly the old ids mapped
  through ``old -> new``. In particular, with ``min_count=1`` every text of the corpus tokenizes identically, unless
  a word of it came out as [UNK] (see below). WordPiece splits each word greedily, longest piece first, so when all
  of a word's pieces are kept it finds the same pieces again.
- Tokens that were dropped no longer exist: a word that needed one is split into other, shorter kept pieces
  where possible (``"bookworm"`` was ``"book", "##worm"``; without ``"##worm"`` it becomes ``"book", "##w", ...``),
  and becomes [UNK] otherwise. And as WordPiece never backtracks, a word that used to come out as [UNK] can,
  rarely, now split into kept pieces.
- The result loads in this package and in transformers (``EncoderDecoderModel`` / ``AutoTokenizer``) alike;
  save a model with tied encoder and decoder with ``save_pretrained(path, include_tied_copies=True)`` for
  transformers 5, which writes the decoder's copy of the shared tensors too.

Any encoder-decoder model whose encoder and decoder share one WordPiece vocabulary can be trimmed: a bert2bert,
or a GPT-2 or BART decoder built over the BERT vocabulary. A GPT-2 or BART checkpoint's own byte-level BPE
vocabulary is refused with a ConfigError (its merges would need trimming too), and so is a pair whose encoder and
decoder have vocabularies of different sizes.
"""
import json
import os
import tempfile

import numpy as np

from ..core.errors import CheckpointError, ConfigError, InputError
from ..generation.config import GenerationConfig
from ..models.config import EncoderDecoderConfig
from ..models.model import EncoderDecoderModel
from ..models.tokenizer import Tokenizer
from ..nn.weights import ParamStore
from .data import read_records

# Config and generation-config fields that hold a token id (or a list of them).
ID_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "sep_token_id",
             "forced_bos_token_id", "forced_eos_token_id")
# Fields that hold ids in shapes this module does not rewrite: trimming refuses a config that sets one.
UNMAPPED_FIELDS = ("bad_words_ids", "force_words_ids", "suppress_tokens", "begin_suppress_tokens", "sequence_bias",
                   "forced_decoder_ids")
_NAMED_SPECIALS = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")


def trim_vocabulary(model, tokenizer, texts, *, min_count=1, keep_ids=()):
    """Keep the ids ``texts`` use (at least ``min_count`` times) plus special ids and ``keep_ids``.

    Returns ``(new_model, new_tokenizer, kept_ids)``: ``kept_ids`` is the sorted int64 array of old ids, and the
    new id of ``kept_ids[i]`` is ``i``. The inputs are left unchanged.
    """
    check_trimmable(model, tokenizer)
    if type(min_count) is not int or min_count < 1:
        raise InputError(f"min_count must be a positive integer, got {min_count!r}")
    vocab = tokenizer.vocab_size
    extra = [int(i) for i in keep_ids]
    bad = [i for i in extra if not 0 <= i < vocab]
    if bad:
        raise InputError(f"keep_ids holds id {bad[0]}, outside the tokenizer's vocabulary [0, {vocab})")
    counts = count_token_ids(tokenizer, texts)
    keep = set(np.flatnonzero(counts >= min_count).tolist())
    keep |= special_token_ids(tokenizer) | config_token_ids(model, limit=vocab) | set(extra)
    kept_ids = np.array(sorted(keep), dtype=np.int64)
    return trim_model(model, kept_ids), trim_tokenizer(tokenizer, kept_ids), kept_ids


def count_token_ids(tokenizer, texts, *, batch_size=1024):
    """How often each id occurs when ``texts`` are tokenized (special tokens included): int64 ``[vocab]``."""
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise InputError(f"texts must be a list of str, got {type(texts).__name__}")
    if not texts:
        raise InputError("the corpus holds no texts: nothing to count token ids from")
    counts = np.zeros(tokenizer.vocab_size, dtype=np.int64)
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=False)
        ids = batch["input_ids"][batch["attention_mask"] == 1]  # [B, T] -> [tokens], padding left out
        counts += np.bincount(ids, minlength=len(counts))
    return counts


def check_trimmable(model, tokenizer=None):
    """Raise ConfigError unless the encoder and decoder of ``model`` share one vocabulary (which ``tokenizer``, a
    WordPiece tokenizer, covers, when given)."""
    enc, dec = model.config.encoder, model.config.decoder
    if enc.vocab_size != dec.vocab_size:
        raise ConfigError(f"encoder and decoder vocabularies differ ({enc.model_type} {enc.vocab_size} ids, "
                          f"{dec.model_type} {dec.vocab_size} ids); trimming needs one vocabulary shared by both "
                          "(a GPT-2 or BART checkpoint brings a byte-level BPE vocabulary of its own)")
    if tokenizer is None:
        return
    if tokenizer.vocab_size > enc.vocab_size:
        raise ConfigError(f"the tokenizer has {tokenizer.vocab_size} ids but the model only {enc.vocab_size}: "
                          "they do not belong together")
    kind = _tokenizer_files(tokenizer, None)["model"].get("type")
    if kind != "WordPiece":
        raise ConfigError(f"vocabulary trimming handles WordPiece tokenizers only, got {kind} (a BPE vocabulary's "
                          "merges would need trimming too)")


def vocab_parameters(model):
    """``{key: Tensor}``: the parameters whose rows are indexed by token id, as the encoder and the decoder
    declare them; a table the two share (``tie_encoder_decoder``) appears once, under the encoder's key."""
    return {p.name: p for part in (model.encoder, model.decoder) for p in part.vocab_parameters()}


def special_token_ids(tokenizer):
    """Ids of the tokenizer's named special tokens, added tokens and post-processor tokens."""
    ids = {getattr(tokenizer, f"{name}_token_id") for name in _NAMED_SPECIALS}
    spec = _tokenizer_files(tokenizer, None)
    ids |= {token["id"] for token in spec["added_tokens"]}
    _map_post_processor(spec.get("post_processor"), lambda i: ids.add(i) or i)
    return {int(i) for i in ids if i is not None}


def config_token_ids(model, *, limit):
    """Every token id the model's configs and generation config name; each must lie in ``[0, limit)``."""
    ids = set()
    for where, d in _id_dicts(model.config.to_dict(), model.generation_config.to_dict()):
        for name in ID_FIELDS:
            for i in _as_list(d.get(name)):
                if not (isinstance(i, (int, np.integer)) and 0 <= i < limit):
                    raise ConfigError(f"{where}.{name}={i!r} is not an id of the tokenizer's vocabulary [0, {limit})")
                ids.add(int(i))
        unmapped = [name for name in UNMAPPED_FIELDS if d.get(name)]
        if unmapped:
            raise ConfigError(f"{where}.{unmapped[0]} holds token ids that trimming cannot rewrite; "
                              "unset it, trim, then set it again with the new ids")
    return ids


def trim_model(model, kept_ids):
    """A new model whose vocabulary is ``kept_ids`` (sorted old ids), built through the ordinary loading path:
    a new config, and a ParamStore over the model's tensors with the vocabulary-sized ones sliced."""
    check_trimmable(model)
    kept_ids = _check_kept(kept_ids, model.config.encoder.vocab_size)
    new_id = _id_map(kept_ids)
    config, generation = model.config.to_dict(), model.generation_config.to_dict()
    for where, d in _id_dicts(config, generation):
        for name in ID_FIELDS:
            if d.get(name) is not None:
                d[name] = _remap(d[name], new_id, f"{where}.{name}")
    config["encoder"]["vocab_size"] = config["decoder"]["vocab_size"] = len(kept_ids)
    if config.get("vocab_size") is not None:
        config["vocab_size"] = len(kept_ids)

    tensors = model.state_dict()  # tied tensors once, under the encoder: the new model re-ties them
    for key in vocab_parameters(model):
        tensors[key] = tensors[key][kept_ids]  # [V, ...] -> [V_kept, ...], rows in kept order
    store = ParamStore(tensors, xp=model.xp, dtype=model.store.dtype, source="the trimmed model")
    try:
        trimmed = EncoderDecoderModel._from_store(EncoderDecoderConfig.from_dict(config), store)
    except CheckpointError as err:  # a tensor sized by the vocabulary that no vocab_parameters() declares
        raise ConfigError(f"cannot trim this model: {err}") from None
    info = trimmed.loading_info
    if info["missing_keys"] or info["unexpected_keys"]:  # a tensor this module does not know how to carry over
        raise ConfigError(f"cannot trim this model: tensors missing after trimming {info['missing_keys']}, "
                          f"left over {info['unexpected_keys']}")
    trimmed.generation_config = GenerationConfig.from_dict(generation)
    return trimmed.train() if model.training else trimmed


def trim_tokenizer(tokenizer, kept_ids):
    """A new WordPiece tokenizer whose vocabulary is the tokens of ``kept_ids`` (sorted old ids), renumbered
    0, 1, ...; normaliser, pre-tokenizer, decoder and special tokens are kept, their ids remapped."""
    kept_ids = _check_kept(kept_ids, tokenizer.vocab_size)
    new_id = _id_map(kept_ids)
    with tempfile.TemporaryDirectory() as tmp:
        spec = _tokenizer_files(tokenizer, tmp)
        model = spec["model"]
        if model.get("type") != "WordPiece":
            raise ConfigError(f"vocabulary trimming handles WordPiece tokenizers only, got {model.get('type')}")
        token_of = {i: token for token, i in model["vocab"].items()}
        token_of.update({added["id"]: added["content"] for added in spec["added_tokens"]})
        required = special_token_ids(tokenizer) - set(new_id)
        if required:
            raise InputError(f"kept_ids must keep every special token; missing ids {sorted(required)}")
        kept_tokens = [token_of[i] for i in kept_ids.tolist()]
        # Added tokens outside the WordPiece vocabulary get the ids after it, in their order, when loaded.
        model["vocab"] = {token: new for new, (token, old) in enumerate(zip(kept_tokens, kept_ids.tolist()))
                          if model["vocab"].get(token) == old}
        for added in spec["added_tokens"]:
            added["id"] = new_id[added["id"]]
        _map_post_processor(spec.get("post_processor"), lambda i: new_id[i])
        with open(os.path.join(tmp, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(spec, f, ensure_ascii=False)
        trimmed = Tokenizer.from_pretrained(tmp)
    if trimmed.vocab_size != len(kept_ids) or trimmed.convert_ids_to_tokens(list(range(len(kept_ids)))) != kept_tokens:
        raise ConfigError("the trimmed tokenizer does not number its tokens as expected (added tokens interleaved "
                          "with the WordPiece vocabulary?); cannot trim this tokenizer")
    return trimmed


def count_vocab_parameters(model):
    """Parameters in vocabulary-sized tensors (word embeddings, LM-head bias), each shared tensor counted once."""
    return int(sum(p.size for p in vocab_parameters(model).values()))


def read_corpus(path, fields=("source", "target")):
    """The texts of a corpus file: from JSONL (``data.read_records``, which names the line of a malformed record or
    a missing field), the string ``fields`` of every line; from any other file, one text per non-empty line."""
    if str(path).endswith(".jsonl"):
        return [record[field] for record in read_records(path, fields, hint="--fields") for field in fields]
    try:
        with open(path, encoding="utf-8") as f:
            texts = [line.rstrip("\n") for line in f if line.strip()]
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from err
    if not texts:
        raise InputError(f"{path} holds no texts")
    return texts


# ---- helpers -----------------------------------------------------------------------------------------------------

def _tokenizer_files(tokenizer, directory):
    """Save ``tokenizer`` into ``directory`` (a temporary one when None) and return its tokenizer.json."""
    if directory is None:
        with tempfile.TemporaryDirectory() as tmp:
            return _tokenizer_files(tokenizer, tmp)
    tokenizer.save_pretrained(directory)
    with open(os.path.join(directory, "tokenizer.json"), encoding="utf-8") as f:
        return json.load(f)


def _map_post_processor(node, fn):
    """Replace every token id a post-processor inserts by ``fn(id)``, in place (recursing into a Sequence)."""
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind == "TemplateProcessing":
        for special in node["special_tokens"].values():
            special["ids"] = [fn(i) for i in special["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for name in ("sep", "cls"):
            node[name][1] = fn(node[name][1])  # [token, id]
    elif kind == "Sequence":
        for processor in node["processors"]:
            _map_post_processor(processor, fn)


def _id_dicts(config, generation):
    """(name, dict) for every dict holding special ids: the config, its two sub-configs, the generation config."""
    return [("config", config), ("config.encoder", config["encoder"]), ("config.decoder", config["decoder"]),
            ("generation_config", generation)]


def _as_list(value):
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def _remap(value, new_id, where):
    mapped = [new_id.get(int(i)) for i in _as_list(value)]
    if None in mapped:
        raise InputError(f"{where}={value!r} names a token that kept_ids drops")
    return mapped if isinstance(value, (list, tuple)) else mapped[0]


def _id_map(kept_ids):
    return {old: new for new, old in enumerate(kept_ids.tolist())}


def _check_kept(kept_ids, vocab_size):
    kept = np.asarray(kept_ids)
    if kept.ndim != 1 or kept.size == 0 or not np.issubdtype(kept.dtype, np.integer):
        raise InputError(f"kept_ids must be a non-empty 1-D array of ints, got shape {kept.shape} dtype {kept.dtype}")
    if kept[0] < 0 or kept[-1] >= vocab_size or np.any(np.diff(kept) <= 0):
        raise InputError(f"kept_ids must be strictly increasing ids in [0, {vocab_size})")
    return kept.astype(np.int64)
