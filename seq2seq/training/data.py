"""Training data: JSONL pairs -> token ids -> padded batches of similar length, in a seeded, resumable order.

    pairs   = read_jsonl("train.jsonl", source_field="source", target_field="target")
    data    = Seq2SeqDataset.from_pairs(pairs, tokenizer, max_source_len=128, max_target_len=32)
    batches = BatchIterator(data, batch_size=128, seed=0)     # endless: epoch 0, 1, 2, ...
    batch   = next(batches)                                   # input_ids, attention_mask, labels  [B, S] / [B, T]
    batches.position                                          # {"epoch": 0, "batch": 1}: where to resume

Labels are what the decoder must predict: the target's token ids without the leading ``[CLS]`` (the model
prepends ``decoder_start_token_id`` itself when it shifts labels right) and ending in ``[SEP]``, which teaches the
model when to stop. Padded label positions hold ``IGNORE_INDEX`` (-100), which the loss ignores.

Why length buckets: a batch is padded to its longest source, so mixing a 10-token and a 128-token source wastes
most of the work on padding. Each epoch is shuffled, cut into pools of ~100 batches, each pool sorted by source
length and cut into batches, and then the batch order is shuffled again: batches hold similar lengths, yet which
examples meet and in which order still changes every epoch (the "bucket by length" trick of fairseq and of
transformers' ``group_by_length``). Sources of equal length are sorted by target length, as fairseq sorts: the
decoder is padded to the batch's longest target too, and with sources truncated to a common maximum many sources
tie (Debian descriptions cut to 64 tokens: half of them; with batches of 64 the padded decoder positions of an
epoch drop from 1.22 M to 0.91 M for 0.62 M real ones, a tenth of the training arithmetic). The order of an epoch
is a pure function of ``(seed, epoch)``, so the position ``(epoch, batch)`` is all a checkpoint needs to continue
exactly where a run stopped.
"""
import dataclasses
import json
import math

import numpy as np

from ..core.errors import InputError
from ..core.inputs import IGNORE_INDEX  # the label value the loss skips; training code imports it from here
ENCODE_CHUNK = 1024  # texts tokenised per call (bounds the padded array the tokenizer returns)


# ---- reading ------------------------------------------------------------------------------------------------------

def read_jsonl(path, *, source_field="source", target_field="target"):
    """``[(source, target), ...]`` from a JSON Lines file, one object per line; blank lines are skipped.

    Raises InputError naming the file and line of a line that is not a JSON object or lacks a string field.
    """
    records = read_records(path, (source_field, target_field), hint="--source-field / --target-field")
    return [(record[source_field], record[target_field]) for record in records]


def read_records(path, fields, *, hint, present=()):
    """The JSON objects of a JSON Lines file, one a line (blank lines skipped), each checked to hold a string under
    every name in ``fields`` and some value under every name in ``present``; InputError names the file and line of
    one that does not (``hint``: the flags that choose the fields)."""
    records = []
    try:
        f = open(path, encoding="utf-8")
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from err
    with f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as err:
                raise InputError(f"{path}, line {number}: not valid JSON ({err})") from err
            if not isinstance(record, dict):
                raise InputError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
            for field in (*fields, *present):
                if field not in record:
                    raise InputError(f"{path}, line {number}: no field {field!r} (fields: {sorted(record)}); "
                                     f"choose the fields with {hint}")
                if field in fields and not isinstance(record[field], str):
                    raise InputError(f"{path}, line {number}: field {field!r} is a "
                                     f"{type(record[field]).__name__}, expected a string")
            records.append(record)
    if not records:
        raise InputError(f"{path} holds no examples")
    return records


# ---- tokenising ---------------------------------------------------------------------------------------------------

def _encode(tokenizer, texts, max_length):
    """Each text's token ids (special tokens included), truncated to ``max_length``, as a list of int64 arrays."""
    rows = []
    for start in range(0, len(texts), ENCODE_CHUNK):
        enc = tokenizer(list(texts[start:start + ENCODE_CHUNK]), padding=True, truncation=True,
                        max_length=max_length)
        lengths = enc["attention_mask"].sum(axis=1)
        rows.extend(ids[:n].copy() for ids, n in zip(enc["input_ids"], lengths))
    return rows


def target_labels(tokenizer, targets, *, max_target_len):
    """Labels for each target text: its ids without the leading ``[CLS]``, at most ``max_target_len`` long,
    still ending in ``[SEP]`` when truncated (``[CLS] a b c [SEP]`` -> ``a b c [SEP]``)."""
    start_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    end_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    labels = []
    for ids in _encode(tokenizer, targets, max_target_len + 1):  # +1: room for the [CLS] dropped below
        if len(ids) and start_id is not None and ids[0] == start_id:
            ids = ids[1:]
        if len(ids) > max_target_len:
            keep_end = end_id is not None and ids[-1] == end_id
            ids = np.concatenate([ids[:max_target_len - 1], ids[-1:]]) if keep_end else ids[:max_target_len]
        labels.append(ids)
    return labels


@dataclasses.dataclass
class Batch:
    """One padded batch: ``input_ids``/``attention_mask`` ``[B, S]`` and ``labels`` ``[B, T]`` (-100 = padding)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray
    indices: np.ndarray  # which dataset examples, in row order

    @property
    def num_tokens(self):
        """Real (unpadded) source plus target tokens: what tokens/s counts."""
        return int(self.attention_mask.sum() + (self.labels != IGNORE_INDEX).sum())


class Seq2SeqDataset:
    """Tokenised (source ids, labels) pairs, kept with their texts (evaluation compares generated text)."""

    def __init__(self, sources, labels, *, pad_token_id, texts=()):
        if len(sources) != len(labels):
            raise InputError(f"{len(sources)} sources but {len(labels)} label rows")
        if pad_token_id is None:
            raise InputError("the tokenizer has no pad token: batches cannot be padded")
        self.sources, self.labels, self.texts = list(sources), list(labels), list(texts)
        self.pad_token_id = int(pad_token_id)
        self.source_lengths = np.array([len(s) for s in self.sources], dtype=np.int64)
        self.target_lengths = np.array([len(t) for t in self.labels], dtype=np.int64)

    @classmethod
    def from_pairs(cls, pairs, tokenizer, *, max_source_len=128, max_target_len=32):
        """Tokenise ``[(source, target), ...]``: sources truncated to ``max_source_len`` ids, labels as
        ``target_labels`` makes them."""
        if max_source_len < 2 or max_target_len < 1:
            raise InputError(f"max_source_len must be >= 2 and max_target_len >= 1, "
                             f"got {max_source_len} and {max_target_len}")
        sources = _encode(tokenizer, [s for s, _ in pairs], max_source_len)
        labels = target_labels(tokenizer, [t for _, t in pairs], max_target_len=max_target_len)
        return cls(sources, labels, pad_token_id=tokenizer.pad_token_id, texts=pairs)

    @classmethod
    def from_jsonl(cls, path, tokenizer, *, source_field="source", target_field="target", max_source_len=128,
                   max_target_len=32):
        pairs = read_jsonl(path, source_field=source_field, target_field=target_field)
        return cls.from_pairs(pairs, tokenizer, max_source_len=max_source_len, max_target_len=max_target_len)

    def __len__(self):
        return len(self.sources)

    def collate(self, indices):
        """The examples ``indices`` as one right-padded Batch."""
        indices = np.asarray(indices, dtype=np.int64)
        rows = [self.sources[i] for i in indices]
        targets = [self.labels[i] for i in indices]
        width = max(len(r) for r in rows)
        target_width = max(max(len(t) for t in targets), 1)
        input_ids = np.full((len(rows), width), self.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        labels = np.full((len(rows), target_width), IGNORE_INDEX, dtype=np.int64)
        for i, (row, target) in enumerate(zip(rows, targets)):
            input_ids[i, :len(row)] = row
            attention_mask[i, :len(row)] = 1
            labels[i, :len(target)] = target
        return Batch(input_ids=input_ids, attention_mask=attention_mask, labels=labels, indices=indices)


# ---- ordering -----------------------------------------------------------------------------------------------------

def epoch_batches(lengths, *, batch_size, seed, epoch, pool_batches=100, target_lengths=None):
    """The batches of one epoch as a list of index arrays: every example exactly once, similar lengths together.

    Shuffle, cut into pools of ``pool_batches`` batches, sort each pool by length (and equal lengths by
    ``target_lengths`` when given; stable, so ties keep the shuffled order), cut into batches, shuffle the batches.
    A pure function of ``(seed, epoch)``.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start:start + pool]
        keys = (lengths[chunk],) if target_lengths is None else (target_lengths[chunk], lengths[chunk])
        chunk = chunk[np.lexsort(keys)]  # stable; the last key is the primary one
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


class BatchIterator:
    """Endless batches over a dataset, epoch after epoch; ``position`` (and ``state_dict``) says where it is.

    ``next()`` returns the batch at ``position`` and then advances; a new iterator built with the same dataset,
    batch size and seed and given that position (``load_state_dict``) yields exactly the batches that follow.
    """

    def __init__(self, dataset, *, batch_size, seed=0, pool_batches=100):
        if len(dataset) == 0:
            raise InputError("the training set is empty")
        self.dataset, self.batch_size, self.seed, self.pool_batches = dataset, batch_size, seed, pool_batches
        self.epoch, self.index = 0, 0
        self.bucket_by = "source,target"  # "source": the order of checkpoints saved before targets were sorted too
        self._order, self._order_epoch = None, None

    @property
    def batches_per_epoch(self):
        return math.ceil(len(self.dataset) / self.batch_size)

    @property
    def position(self):
        """``{"epoch": e, "batch": i}``: the next batch is batch i of epoch e."""
        return {"epoch": self.epoch, "batch": self.index}

    def _epoch_order(self):
        if self._order_epoch != self.epoch:
            targets = self.dataset.target_lengths if self.bucket_by == "source,target" else None
            self._order = epoch_batches(self.dataset.source_lengths, batch_size=self.batch_size, seed=self.seed,
                                        epoch=self.epoch, pool_batches=self.pool_batches, target_lengths=targets)
            self._order_epoch = self.epoch
        return self._order

    def __iter__(self):
        return self

    def __next__(self):
        if self.index >= self.batches_per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        batch = self.dataset.collate(self._epoch_order()[self.index])
        self.index += 1
        return batch

    def state_dict(self):
        """What resuming needs (the order itself is recomputed from the seed)."""
        return {"seed": self.seed, "batch_size": self.batch_size, "pool_batches": self.pool_batches,
                "examples": len(self.dataset), "bucket_by": self.bucket_by, **self.position}

    def load_state_dict(self, state):
        """Continue from a saved position; refuses one saved with another seed, batch size, pool size or number
        of examples (another training file would make the position meaningless)."""
        mine = self.state_dict()
        for key in ("seed", "batch_size", "pool_batches", "examples"):
            if key in state and state[key] != mine[key]:
                raise InputError(f"cannot resume the data order: it was saved with {key}={state[key]}, "
                                 f"this run has {key}={mine[key]}")
        # a checkpoint from before targets were sorted too continues in its own order
        bucket_by = state.get("bucket_by", "source")
        if bucket_by not in ("source", "source,target"):
            raise InputError(f"cannot resume the data order: unknown bucket_by={bucket_by!r}")
        self.bucket_by = bucket_by  # set only once checked: a refused state leaves this iterator as it was
        self._order_epoch = None  # the order is recomputed with it
        self.epoch, self.index = int(state["epoch"]), int(state["batch"])
