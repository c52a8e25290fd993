"""The kernel decode step (fast/cuda/decode_step.py) against the model's own decode step, on the CPU: every launch
runs through the CPU emulation of the kernels (cuda_on_cpu.py), every product through ``numpy.matmul``. On a GPU
(marker ``gpu``): the same step through ``kernels.run`` and cuBLAS against the eager CuPy path."""
import numpy as np
import pytest

import seq2seq
from cuda_testing import VOCAB, make_step, sources, tiny_bert2bert
from seq2seq.core.errors import InputError
from seq2seq.fast.cuda import decode_step


@pytest.fixture(scope="module")
def model():
    return tiny_bert2bert()


@pytest.mark.parametrize("decoder, hidden_act", [("bert", "gelu"), ("bert", "gelu_new"), ("bert", "relu"),
                                                 ("gpt2", None), ("bart", None)])
def test_kernel_step_logits_equal_the_models_decode_step(emulator, decoder, hidden_act):
    model = tiny_bert2bert(hidden_act=hidden_act, decoder=decoder)
    ids, mask = sources()
    cache = model.start_decoding(ids, mask)
    step = make_step(model, model.start_decoding(ids, mask), launch=emulator.run)
    tokens = np.random.default_rng(1).integers(3, VOCAB, (5, 2))  # 5 steps of 2 rows
    for t in range(5):
        want = model.decode_step(tokens[t][:, None], cache)  # [2, V]
        got = step.step(tokens[t])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert list(step.ctx.lengths) == [5, 5]


def test_beams_share_their_sources_encoder_side_and_reorder_their_history(emulator, model):
    ids, mask = sources()
    copies = 2
    cache = model.start_decoding(ids, mask)
    cache.reorder(np.repeat(np.arange(2), copies))  # [B] -> [B * copies], as encode_sources does for beams
    step = make_step(model, cache, copies=copies, launch=emulator.run)
    assert step.layers[0].k_enc.shape[0] == 2  # one copy per source, not per beam
    rng = np.random.default_rng(2)
    for t in range(4):
        tokens = rng.integers(3, VOCAB, 4)
        want = model.decode_step(tokens[:, None], cache)
        np.testing.assert_allclose(step.step(tokens), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
        index = np.array([1, 1, 2, 3]) if t % 2 == 0 else np.array([0, 0, 3, 2])  # beams of one source
        cache.reorder_beams(index)
        step.reorder_beams(index)


def test_logits_land_in_one_static_buffer(emulator, model):
    ids, mask = sources()
    step = make_step(model, model.start_decoding(ids, mask), launch=emulator.run)
    first = step.step([5, 6])
    buffers = [step.layers[0].k_cache, step.logits, step.ctx.lengths]
    second = step.step([7, 8])
    assert first is second is step.logits
    assert all(a is b for a, b in zip([step.layers[0].k_cache, step.logits, step.ctx.lengths], buffers))


def test_unsupported_models_are_named(model):
    assert decode_step.unsupported(model, max_length=8) is None
    assert decode_step.unsupported(model, max_length=33) == "max_length 33 exceeds the decoder's 32 positions"
    ids, mask = sources()
    cache = model.start_decoding(ids, mask)
    with pytest.raises(InputError, match="max_length 40 exceeds"):
        decode_step.DecodeStep(model, cache.memory, cache.memory_keep, copies=1, max_length=40, launch=None,
                               product=np.matmul)
    silu = tiny_bert2bert(hidden_act="silu")
    assert decode_step.unsupported(silu, max_length=8) == "activation 'silu' has no kernel"


@pytest.mark.parametrize("decoder", ["bert", "bart", "gpt2"])
def test_refill_writes_the_new_weights_into_the_steps_own_copies(decoder):
    """The fused q|k|v and cross k|v and the row-major word table are refilled in place: the same arrays (graphs
    captured on them stay valid), the values a freshly made step would hold, no second copy made first."""
    model = tiny_bert2bert(decoder=decoder)
    ids, mask = sources()
    cache = model.start_decoding(ids, mask)
    step = decode_step.DecodeStep(model, cache.memory, cache.memory_keep, copies=1, max_length=8, launch=None,
                                  product=np.matmul)

    def copies(step):  # the step's own arrays: the row-major word table, each layer's fused pairs
        return [step.word] + [a for layer in step.layers for a in (*layer.qkv_weights, *layer.cross_kv_weights)]

    own = copies(step)
    for p in model.parameters():
        p.data *= -2.0  # in place, as an optimizer changes them
    step.refill(model, cache.memory, cache.memory_keep)
    fresh = decode_step.DecodeStep(model, cache.memory, cache.memory_keep, copies=1, max_length=8, launch=None,
                                   product=np.matmul)
    now = copies(step)
    assert all(a is b for a, b in zip(now, own))
    for got, expected in zip(now, copies(fresh)):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.gpu
@pytest.mark.parametrize("decoder", ["bert", "gpt2", "bart"])
def test_kernel_step_on_the_gpu_equals_the_eager_cupy_step(gpu, decoder):
    from seq2seq.fast.cuda import cublas, kernels
    model = tiny_bert2bert(backend="cupy", decoder=decoder)
    ids, mask = sources()
    cache = model.start_decoding(ids, mask)
    stream = gpu.cuda.Stream(non_blocking=True)
    blas = cublas.Cublas(stream)
    with stream:
        step = make_step(model, model.start_decoding(ids, mask), launch=kernels.run, product=blas.product)
        for t in range(5):
            tokens = gpu.asarray([3 + t, 10 + t])
            want = seq2seq.to_numpy(model.decode_step(tokens[:, None], cache))
            got = seq2seq.to_numpy(step.step(tokens))
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    blas.close()
