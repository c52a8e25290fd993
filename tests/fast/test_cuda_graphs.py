"""The CUDA-graph bookkeeping (fast/cuda/graphs.py) on the CPU: length buckets, one capture per (rows, bucket),
replays that advance the device lengths with no host input, buffers kept referenced by the graphs that use them.
A ``Recorder`` stands in for the stream capture; the kernel step runs through the CPU emulation of the kernels."""
import numpy as np
import pytest

from seq2seq.core.errors import GenerationError, InputError
from seq2seq.fast.cuda import decode_step, graphs, plans
from seq2seq.generation import kernel_path
from cuda_testing import make_step, sources, tiny_bert2bert


@pytest.mark.parametrize("max_length, want", [(16, [1, 2, 4, 8, 16]), (12, [1, 2, 4, 8, 12]), (1, [1]),
                                              (5, [1, 2, 4, 5])])
def test_buckets_are_powers_of_two_capped_at_max_length(max_length, want):
    assert graphs.buckets(max_length) == want
    assert [graphs.length_bucket(n, 12) for n in (1, 2, 3, 4, 5, 8, 9, 12)] == [1, 2, 4, 4, 8, 8, 12, 12]


@pytest.mark.parametrize("length", [0, 13])
def test_a_length_outside_the_decode_is_refused(length):
    with pytest.raises(InputError, match=f"length {length} must be in"):
        graphs.length_bucket(length, 12)


class FakeStep:
    """What GraphedStep needs of a DecodeStep, noting each run's bucket; its run() computes through a real
    decode_step.Context (so that a Recorder tapes it): lengths += 1, logits = ids * 10 + lengths."""

    def __init__(self, rows, max_length):
        self.rows, self.length = rows, 0
        self.ctx = decode_step.Context(np, launch=None, product=None, rows=rows, max_length=max_length,
                                       source_of_row=None, keep=None)
        self.ids, self.lengths, self.logits = (np.zeros(rows, np.int64) for _ in range(3))
        self.runs = []

    def write_ids(self, ids):
        self.ids[...] = ids

    def run(self, *, max_keys=None):
        self.runs.append(max_keys)
        self.ctx.elementwise(np.add, self.lengths, 1, out=self.lengths)
        self.ctx.elementwise(np.multiply, self.ids, 10, out=self.logits)
        self.ctx.elementwise(np.add, self.logits, self.lengths, out=self.logits)
        return self.logits


def test_one_capture_per_bucket_and_replays_after_it():
    fake, recorder = FakeStep(rows=3, max_length=12), graphs.Recorder()
    graphed = graphs.GraphedStep(fake, capture=recorder)
    for n in range(1, 12):
        logits = graphed.step([n, n + 1, n + 2])
        assert logits is fake.logits
        np.testing.assert_array_equal(logits, np.array([n, n + 1, n + 2]) * 10 + n)  # this step's, from the tape
    assert fake.runs == [1, 2, 4, 8, 12]  # run() itself: the eager first step, then once per capture
    assert sorted(graphed.graphs) == [(3, 2), (3, 4), (3, 8), (3, 12)]
    assert recorder.captures == 4
    assert {key: c.replays for key, c in graphed.graphs.items()} == {(3, 2): 1, (3, 4): 2, (3, 8): 4, (3, 12): 3}
    assert all(c.step is fake for c in graphed.graphs.values())  # the buffers the graphs address stay alive


def test_a_step_that_reads_the_host_replays_what_it_read_at_capture():
    """The Recorder replays the taped operations, not run(): host values read during the capture are frozen,
    as they would be in a CUDA graph."""
    class HostReading(FakeStep):
        def run(self, *, max_keys=None):
            self.ctx.elementwise(np.add, np.zeros(self.rows, np.int64), self.length, out=self.logits)
            return self.logits

    step = HostReading(rows=2, max_length=8)
    graphed = graphs.GraphedStep(step, capture=graphs.Recorder())
    seen = [int(graphed.step([0, 0])[0]) for _ in range(4)]
    assert seen == [1, 2, 3, 3]  # step 4 replays bucket 4's tape, taped at step 3


def test_graphed_kernel_step_equals_the_models_steps_and_buckets_the_shared_memory(emulator):
    model = tiny_bert2bert()
    ids, mask = sources()
    cache = model.start_decoding(ids, mask)
    shared = []

    def launch(spec):  # the emulator, noting the self-attention's shared memory
        if spec.entry.startswith("decode_self_attention"):
            shared.append(spec.shared_mem)
        return emulator.run(spec)

    max_length = 8
    step = make_step(model, model.start_decoding(ids, mask), max_length=max_length, launch=launch)
    recorder = graphs.Recorder()
    graphed = graphs.GraphedStep(step, capture=recorder)
    tokens = np.random.default_rng(4).integers(3, 97, (max_length - 1, 2))
    for n, t in enumerate(tokens, start=1):
        want = model.decode_step(t[:, None], cache)
        got = graphed.step(t)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
        assert list(step.ctx.lengths) == [n, n]  # advanced by the replay itself, on the "device"
        hs = step.layers[0].hs
        bucket = graphs.length_bucket(n, max_length)
        assert shared[-2:] == [plans._decode_shared(hs, bucket)] * 2  # both layers, this step's bucket
    assert recorder.captures == 3 and sorted(b for _, b in graphed.graphs) == [2, 4, 8]


# ---- generate(cuda_graph=...) -----------------------------------------------------------------------------------

@pytest.fixture
def kernels_on_the_cpu(emulator, monkeypatch):
    """generation/kernel_path.py's runtime made the CPU's: emulated kernels, numpy.matmul, a Recorder."""
    recorder = graphs.Recorder()
    monkeypatch.setattr(kernel_path, "available", lambda model: True)
    monkeypatch.setattr(kernel_path, "runtime", lambda: (emulator.run, np.matmul, recorder))
    return recorder


GREEDY, BEAM_2 = dict(num_beams=1), dict(num_beams=2, num_return_sequences=2)
SAMPLE_2 = dict(do_sample=True, seed=7, num_return_sequences=2, top_k=0)


@pytest.mark.parametrize("decoder, kwargs", [("bert", GREEDY), ("bert", BEAM_2), ("gpt2", GREEDY), ("gpt2", BEAM_2),
                                             ("bert", SAMPLE_2)],
                         ids=["bert-greedy", "bert-beam-2", "gpt2-greedy", "gpt2-beam-2", "bert-sample-2"])
def test_generate_through_the_kernel_step_gives_the_eager_ids(kernels_on_the_cpu, decoder, kwargs, monkeypatch):
    model = tiny_bert2bert(decoder=decoder)
    model.generation_config.decoder_start_token_id = 2
    ids, mask = sources()
    settings = dict(max_new_tokens=5, eos_token_id=None, **kwargs)
    eager = model.generate(ids, mask, cuda_graph=False, **settings)
    steps = []
    monkeypatch.setattr(graphs.GraphedStep, "step", _counting(graphs.GraphedStep.step, steps))
    np.testing.assert_array_equal(model.generate(ids, mask, cuda_graph=True, **settings), eager)
    assert len(steps) == 5 and kernels_on_the_cpu.captures == 3  # buckets 2, 4, 8 (max_length 6 -> 6)


def _counting(method, calls):
    def counted(self, *args):
        calls.append(args)
        return method(self, *args)
    return counted


def test_calls_the_kernel_step_does_not_serve_stay_eager(kernels_on_the_cpu, monkeypatch):
    model = tiny_bert2bert()
    ids, mask = sources()
    monkeypatch.setattr(graphs.GraphedStep, "step", lambda *a: pytest.fail("the kernel step ran"))
    out = model.generate(ids, mask, max_new_tokens=2, return_dict_in_generate=True, output_attentions=True)
    assert out.decoder_attentions is not None
    model.generate(ids, mask, max_new_tokens=2, use_cache=False, cuda_graph=True)
    with pytest.raises(InputError, match="decoder_input_ids has 33 positions"):  # the eager path's own error
        model.generate(ids, mask, max_length=40, eos_token_id=None, cuda_graph=True)


def test_cuda_graph_true_on_numpy_is_refused_and_the_default_is_eager(monkeypatch):
    model = tiny_bert2bert()
    ids, mask = sources()
    monkeypatch.setattr(kernel_path, "runtime", lambda: pytest.fail("the kernel path was taken on NumPy"))
    with pytest.raises(GenerationError, match="cuda_graph=True needs the model on backend='cupy'"):
        model.generate(ids, mask, max_new_tokens=2, cuda_graph=True)
    with pytest.raises(GenerationError, match="cuda_graph must be True, False or None"):
        model.generate(ids, mask, max_new_tokens=2, cuda_graph="yes")
    np.testing.assert_array_equal(model.generate(ids, mask, max_new_tokens=3),
                                  model.generate(ids, mask, max_new_tokens=3, cuda_graph=False))


@pytest.mark.gpu
@pytest.mark.parametrize("kwargs", [dict(num_beams=1), dict(num_beams=2, num_return_sequences=2)],
                         ids=["greedy", "beam-2"])
def test_the_graph_path_gives_the_eager_and_transformers_ids_on_cupy(gpu, tmp_path, kwargs):
    import seq2seq
    from oracle import batch, hf_bert2bert, save_hf, torch
    hf = hf_bert2bert(spread=4.0)
    model = seq2seq.EncoderDecoderModel.from_pretrained(save_hf(hf, tmp_path), backend="cupy")
    ids, mask, _ = batch(61, batch_size=3, src_len=9)
    settings = dict(max_new_tokens=8, eos_token_id=27, pad_token_id=0, decoder_start_token_id=2, **kwargs)
    with torch.no_grad():
        want = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), **settings).numpy()
    graphed = seq2seq.to_numpy(model.generate(ids, mask, cuda_graph=True, **settings))
    eager = seq2seq.to_numpy(model.generate(ids, mask, cuda_graph=False, **settings))
    np.testing.assert_array_equal(eager, want)
    np.testing.assert_array_equal(graphed, want)


def test_the_next_generate_call_refills_the_held_step_and_replays_its_graphs(kernels_on_the_cpu):
    model = tiny_bert2bert()
    ids, mask = sources()
    rng = np.random.default_rng(5)
    others = rng.integers(3, 97, ids.shape), np.ones_like(ids)  # new sources of the same shape
    settings = dict(max_new_tokens=3, eos_token_id=None)  # max_length 4: buckets 2 and 4 captured

    def both_paths(ids, mask):
        graphed = model.generate(ids, mask, cuda_graph=True, **settings)
        np.testing.assert_array_equal(graphed, model.generate(ids, mask, cuda_graph=False, **settings))
        return graphed

    first = both_paths(ids, mask)
    held = kernel_path._HELD[model]
    assert not np.array_equal(both_paths(*others), first)
    for layer in model.decoder.layers:
        layer.self_attention.value.weight.data *= -3.0  # in place: a fused copy must be refilled...
        layer.ffn.up.weight.data *= 1.5  # ...and a view follows by itself
    assert not np.array_equal(both_paths(ids, mask), first)
    assert kernel_path._HELD[model] is held and kernels_on_the_cpu.captures == 2  # captured once, replayed since
    both_paths(ids[:1], mask[:1])  # sources of another shape: a new step, new captures
    assert kernel_path._HELD[model] is not held and kernels_on_the_cpu.captures == 4
    kernel_path.release(model)
    assert model not in kernel_path._HELD
