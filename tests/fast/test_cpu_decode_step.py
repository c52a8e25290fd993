"""The CPU decode step (fast/cpu/decode_step.py) against the model's own decode step: the same logits, bit for bit,
for every decoder family, several rows per source, padded sources and beam reorders; and generate through it
(kernel_path.py) against generate on the eager path (``cuda_graph=False``), which the generation tests hold to
transformers."""
import numpy as np
import pytest

from cuda_testing import VOCAB, sources, tiny_bert2bert
from seq2seq.core.errors import InputError
from seq2seq.fast import cpu as fast_cpu
from seq2seq.fast.cpu import decode_step as cpu_step
from seq2seq.fast.cpu import parallel, thin
from seq2seq.generation import kernel_path
from seq2seq.nn.activations import array_activation


def make_step(model, cache, *, copies=1, max_length=8):
    return cpu_step.CpuDecodeStep(model, cache.memory, cache.memory_keep, copies=copies, max_length=max_length,
                                  activation=array_activation)


@pytest.fixture
def threads():
    before = parallel.num_threads()
    yield parallel.set_num_threads
    parallel.set_num_threads(before)


@pytest.mark.parametrize("decoder, hidden_act", [("bert", "gelu"), ("bert", "gelu_new"), ("bert", "silu"),
                                                 ("gpt2", None), ("bart", None)])
@pytest.mark.parametrize("copies", [1, 3])
@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
def test_cpu_step_logits_are_the_models_decode_step_bit_for_bit(decoder, hidden_act, copies, padded):
    """Each step's logits equal model.decode_step's exactly, through beam reorders within the sources."""
    model = tiny_bert2bert(hidden_act=hidden_act or "gelu", decoder=decoder)
    ids, mask = sources()
    mask = mask if padded else None
    cache = model.start_decoding(ids, mask, capacity=8)  # capacity = max_length, as generate asks
    step = make_step(model, model.start_decoding(ids, mask), copies=copies)
    if copies > 1:
        cache.reorder(np.repeat(np.arange(2), copies))  # as encode_sources does: the encoder side stays per source
    rows = 2 * copies
    tokens = np.random.default_rng(1).integers(3, VOCAB, (6, rows))
    for t in range(6):
        want = model.decode_step(tokens[t][:, None], cache)  # [rows, V]
        got = step.step(tokens[t])
        assert got.shape == want.shape == (rows, VOCAB)
        np.testing.assert_array_equal(got, want)
        if copies > 1 and t in (2, 4):  # beams of each source take each other's histories
            index = np.array([1, 1, 0, 5, 3, 5]) if t == 2 else np.array([2, 0, 1, 3, 3, 3])
            cache.reorder_beams(index)
            step.reorder_beams(index)
    assert step.length == 6


@pytest.mark.parametrize("rows", [1, 2, 4])
def test_cpu_step_is_bit_identical_for_any_number_of_threads(monkeypatch, threads, rows):
    """Its products go in fixed column chunks whichever thread runs them (a one-row LM head too, once it is
    larger than ONE_ROW_SPREAD: lowered here so that the tiny model's is)."""
    monkeypatch.setattr(thin, "ONE_ROW_SPREAD", 1)
    monkeypatch.setattr(thin, "MIN_CHUNK", 16)
    monkeypatch.setattr(thin, "SMALL", 1)
    model = tiny_bert2bert()
    ids, mask = (a[:rows] for a in sources(batch=max(rows, 2)))
    tokens = np.random.default_rng(2).integers(3, VOCAB, (4, rows))

    def run():
        step = make_step(model, model.start_decoding(ids, mask))
        assert step.vocab.threaded and len(step.vocab.tasks) > 1
        return [step.step(t).copy() for t in tokens]

    threads(1)
    expected = run()
    for n in (2, 3):
        threads(n)
        for got, want in zip(run(), expected):
            np.testing.assert_array_equal(got, want)


def test_unsupported_models_are_named():
    model = tiny_bert2bert()
    assert cpu_step.unsupported(model, max_length=32) is None
    assert cpu_step.unsupported(model, max_length=33) == "max_length 33 exceeds the decoder's 32 positions"
    layer = model.decoder.layers[0].self_attention.query
    layer.weight.data = np.ascontiguousarray(layer.weight.data)  # row-major [out, in]: not the thin layout
    assert "not laid out [in, out] row-major" in cpu_step.unsupported(model, max_length=8)


def _config(model, **kwargs):
    from seq2seq.generation.generate import prepare_config  # noqa: PLC0415
    return prepare_config(model, None, max_new_tokens=5, **kwargs)


def test_generate_takes_the_cpu_step_where_it_serves():
    model = tiny_bert2bert()
    assert kernel_path.choose(model, _config(model), None) == "cpu"
    assert kernel_path.choose(model, _config(model), False) is None  # the eager path
    assert kernel_path.choose(model, _config(model, use_cache=False), None) is None
    recording = _config(model, return_dict_in_generate=True, output_attentions=True)
    assert kernel_path.choose(model, recording, None) is None
    with fast_cpu.disabled():  # the plain forms, as CuPy runs them: the eager path
        assert kernel_path.choose(model, _config(model), None) is None
    with pytest.raises(Exception, match="cuda_graph=True needs the model on backend='cupy'"):
        kernel_path.choose(model, _config(model), True)


@pytest.mark.parametrize("decoder", ["bert", "gpt2", "bart"])
@pytest.mark.parametrize("mode", [dict(), dict(num_beams=3, num_return_sequences=2),
                                  dict(do_sample=True, top_k=20, num_return_sequences=2, seed=7)],
                         ids=["greedy", "beam", "sampling"])
def test_generate_through_the_cpu_step_equals_the_eager_path(monkeypatch, decoder, mode):
    model = tiny_bert2bert(decoder=decoder)
    ids, mask = sources()
    made = []
    monkeypatch.setattr(kernel_path, "CpuDecoding", _counting(kernel_path.CpuDecoding, made))
    kwargs = dict(max_new_tokens=7, return_dict_in_generate=True, output_scores=True, eos_token_id=4, **mode)
    fused = model.generate(ids, mask, **kwargs)
    assert len(made) == 1
    eager = model.generate(ids, mask, cuda_graph=False, **kwargs)
    assert len(made) == 1
    np.testing.assert_array_equal(fused.sequences, eager.sequences)
    for got, want in zip(fused.scores, eager.scores):
        np.testing.assert_array_equal(got, want)


def _counting(cls, made):
    class Counting(cls):
        def __init__(self, *args, **kwargs):
            made.append(self)
            super().__init__(*args, **kwargs)
    return Counting


def test_generate_stream_decodes_through_the_cpu_step(monkeypatch):
    model = tiny_bert2bert()
    ids, mask = sources()
    made = []
    monkeypatch.setattr(kernel_path, "CpuDecoding", _counting(kernel_path.CpuDecoding, made))
    streamed = np.stack(list(model.generate_stream(ids, mask, max_new_tokens=6)), axis=1)
    assert len(made) == 1
    np.testing.assert_array_equal(streamed, model.generate(ids, mask, max_new_tokens=6, cuda_graph=False)[:, 1:])


def test_weights_changed_in_place_are_seen_by_the_next_generate():
    """The step reads the model's own arrays (no copies) and is made per call."""
    model = tiny_bert2bert()
    ids, mask = sources()
    model.generate(ids, mask, max_new_tokens=5)
    for p in model.parameters():
        p.data *= -1.5  # in place, as an optimizer changes them
    np.testing.assert_array_equal(model.generate(ids, mask, max_new_tokens=5),
                                  model.generate(ids, mask, max_new_tokens=5, cuda_graph=False))


def test_a_model_the_step_does_not_serve_decodes_eagerly_with_its_errors():
    """Beyond the position table the CPU step steps aside, and the eager step raises where it always has."""
    model = tiny_bert2bert()
    ids, mask = sources()
    with pytest.raises(InputError, match="decoder_input_ids"):
        model.generate(ids, mask, max_length=40, min_length=40)


def test_a_float64_model_decodes_through_the_cpu_step_as_eagerly():
    model = tiny_bert2bert()
    for p in model.parameters():
        p.data = p.data.astype(np.float64, order="K")  # the layouts kept (thin products read them as they lie)
    assert cpu_step.unsupported(model, max_length=8) is None
    ids, mask = sources()
    kwargs = dict(max_new_tokens=6, num_beams=3, eos_token_id=4, return_dict_in_generate=True, output_scores=True)
    fused, eager = model.generate(ids, mask, **kwargs), model.generate(ids, mask, cuda_graph=False, **kwargs)
    assert fused.scores[0].dtype == np.float32  # generate's scores, whatever the model's dtype
    np.testing.assert_array_equal(fused.sequences, eager.sequences)
    for got, want in zip(fused.scores, eager.scores):
        np.testing.assert_array_equal(got, want)
