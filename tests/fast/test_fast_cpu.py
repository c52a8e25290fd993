"""The fused CPU forms (seq2seq/fast/cpu/) against the plain forms in nn/ and training/, without torch.

The plain form of an op is its definition and what CuPy runs; on NumPy an op takes its fused form unless
``fast_cpu.disabled()`` is in force. Each test runs the same thing both ways and compares: values and gradients
of every op over shapes and dtypes, the optimizer's updates bit for bit, each form's gradients against finite
differences, and a whole small model forward and backward.
"""
import numpy as np
import pytest

import seq2seq
from seq2seq.core.autograd import Tensor
from seq2seq.core.backend import to_numpy
from seq2seq.core.gradcheck import check_grad
from seq2seq.fast import cpu as fast_cpu
from seq2seq.fast.cpu import gelu as fast_gelu
from seq2seq.fast.cpu import optim as fast_optim
from seq2seq.fast.cpu import parallel
from seq2seq.fast.cpu.linear import FEW_ROWS, linear_forward
from seq2seq.nn import functional
from seq2seq.nn import loss as nn_loss
from seq2seq.nn.activations import Gelu, erf, get_activation
from seq2seq.training.optim import AdamW, clip_grad_norm_

TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-12),
       np.float16: dict(rtol=1e-2, atol=1e-2)}  # float16 sums over rows round by their order


def forward_backward(op, arrays, gy_seed=1):
    """``op`` on Tensors made from ``arrays``, backward with a fixed random gradient: (output, input grads)."""
    tensors = [Tensor(a.copy(order="K"), requires_grad=True) for a in arrays]
    y = op(*tensors)
    gy = np.random.default_rng(gy_seed).standard_normal(y.shape).astype(y.dtype)
    y.backward(gy)
    return [y.data] + [t.grad for t in tensors]


def both_forms(op, arrays):
    """``forward_backward`` through the fused form (NumPy's default) and through the plain form."""
    fused = forward_backward(op, arrays)
    with fast_cpu.disabled():
        plain = forward_backward(op, arrays)
    return fused, plain


def assert_close(fused, plain, dtype):
    for got, want in zip(fused, plain):
        assert got.dtype == want.dtype and got.shape == want.shape
        scale = max(1.0, float(np.abs(want.astype(np.float64)).max()))  # products and sums: relative to the size
        np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * scale)


def test_disabled_turns_the_branch_off_in_this_thread_only():
    assert fast_cpu.enabled(np)
    with fast_cpu.disabled():
        assert not fast_cpu.enabled(np)
        with fast_cpu.disabled():
            pass
        assert not fast_cpu.enabled(np)  # nested: still off
        seen = []
        thread = __import__("threading").Thread(target=lambda: seen.append(fast_cpu.enabled(np)))
        thread.start()
        thread.join()
        assert seen == [True]
    assert fast_cpu.enabled(np)


# ---- linear ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["out_in", "in_out", "column_major"])
@pytest.mark.parametrize("x_shape", [(3, 16), (2, 5, 16), (FEW_ROWS + 1, 16), (4, 70, 16)])
def test_linear_fused_equals_plain(rng, x_shape, layout, dtype):
    in_out = layout == "in_out"
    w = rng.standard_normal((16, 12) if in_out else (12, 16)).astype(dtype)
    if layout == "column_major":  # as the tied LM-head table (layers.lm_head_layout)
        w = np.asfortranarray(w)
    x, b = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(12).astype(dtype)
    fused, plain = both_forms(lambda *t: functional.linear(*t, in_out=in_out), [x, w, b])
    assert_close(fused, plain, dtype)
    assert fused[2].flags.f_contiguous == (layout == "column_major")  # the fused gradient keeps W's order
    fused, plain = both_forms(lambda *t: functional.linear(*t, in_out=in_out), [x, w])  # without a bias
    assert_close(fused, plain, dtype)


def test_linear_few_rows_take_the_transposed_product(rng):
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((4, 16), (12, 16), (12,)))
    y = linear_forward(x, w, b, in_out=False)
    assert y.flags.f_contiguous and not y.flags.c_contiguous  # (W x^T)^T: a view of a [12, 4] product
    np.testing.assert_allclose(y, x @ w.T + b, rtol=1e-6, atol=1e-6)


# ---- layer norm -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("x_shape", [(4, 7), (2, 3, 24), (300, 64)])
def test_layer_norm_fused_equals_plain(rng, x_shape, dtype):
    c = x_shape[-1]
    x = (3 * rng.standard_normal(x_shape) + 1).astype(dtype)
    gamma, beta = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    fused, plain = both_forms(lambda *t: functional.layer_norm(*t, eps=1e-5), [x, gamma, beta])
    assert_close(fused, plain, dtype)


@pytest.mark.parametrize("forward_form, backward_form", [("fused", "plain"), ("plain", "fused")])
def test_layer_norm_backward_follows_either_forward(rng, forward_form, backward_form):
    """Both forms keep x, mean and rstd alike: the branch may change between forward and backward."""
    x, gamma, beta, gy = (rng.standard_normal(s).astype(np.float32) for s in ((2, 3, 8), (8,), (8,), (2, 3, 8)))
    expected = functional.LayerNorm(1e-5)
    expected.needs_input_grad = (True, True, True)
    expected.forward(x, gamma, beta)
    want = expected.backward(gy)
    op = functional.LayerNorm(1e-5)
    op.needs_input_grad = (True, True, True)
    with fast_cpu.disabled() if forward_form == "plain" else _nothing():
        op.forward(x, gamma, beta)
    with fast_cpu.disabled() if backward_form == "plain" else _nothing():
        got = op.backward(gy)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def _nothing():
    import contextlib
    return contextlib.nullcontext()


# ---- cross-entropy --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("n, v", [(6, 7), (40, 3000)])
def test_cross_entropy_fused_equals_plain(rng, n, v, dtype, smoothing):
    logits = (4 * rng.standard_normal((n, v))).astype(dtype)
    labels = rng.integers(0, v, n)
    labels[::3] = -100
    fused, plain = both_forms(lambda t: nn_loss.cross_entropy(t, labels, label_smoothing=smoothing), [logits])
    assert_close(fused, plain, dtype)


# ---- erf and GELU ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_erf_fused_equals_plain(rng, dtype):
    x = np.concatenate([3 * rng.standard_normal(5000), [0.0, -0.0, 4.0, -4.5, np.inf, -np.inf]]).astype(dtype)
    x = x.reshape(-1, 2)
    fused = erf(x)
    with fast_cpu.disabled():
        plain = erf(x)
    assert fused.dtype == plain.dtype == dtype
    np.testing.assert_array_equal(fused, plain)  # the same polynomials, evaluated in the same order


@pytest.mark.parametrize("phi_form", ["rational", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape", [(5, 8), (3, 700, 48)])
def test_gelu_fused_equals_plain(rng, shape, dtype, phi_form, monkeypatch):
    monkeypatch.setattr(fast_gelu, "PHI_FORM", phi_form)  # whichever this machine runs, both are tested
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    x.reshape(-1)[:3] = 0  # Phi(0) = 1/2, which the fused backward cannot get as y / x
    x.reshape(-1)[3:7] = [-12, 12, 5.9, -5.9]  # beyond both forms' clamps
    fused, plain = both_forms(get_activation("gelu"), [x])
    # float32: the fused forward's Phi is its own (GELU within 1.5e-6 of float64), the plain one's erf-based
    assert_close(fused, plain, dtype)


@pytest.mark.parametrize("phi_form", ["rational", "tanh"])
def test_gelu_float32_forms_are_within_1_5e_6_of_float64(rng, phi_form, monkeypatch):
    monkeypatch.setattr(fast_gelu, "PHI_FORM", phi_form)
    x = np.concatenate([np.linspace(-12, 12, 4001), 3 * rng.standard_normal(4000)]).reshape(-1, 1)
    got = get_activation("gelu")(Tensor(x.astype(np.float32))).data
    want = get_activation("gelu")(Tensor(x)).data  # float64: through the exact erf
    np.testing.assert_allclose(got, want, rtol=0, atol=1.5e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_clamp_ufunc_gives_what_maximum_and_minimum_give(rng, dtype, monkeypatch):
    x = np.concatenate([[np.nan, -np.inf, np.inf, -0.0, 0.0, 1e30, -1e30, 5.75, -5.75],
                        12 * rng.standard_normal(3000)]).astype(dtype)
    assert fast_gelu._CLIP is not None  # found in this NumPy: the fast path is the one tested
    got = fast_gelu._clamp(x, -5.75, 5.75, out=np.empty_like(x))
    monkeypatch.setattr(fast_gelu, "_CLIP", None)  # a NumPy without the ufunc: maximum, then minimum
    want = fast_gelu._clamp(x, -5.75, 5.75, out=np.empty_like(x))
    np.testing.assert_array_equal(got, want)  # NaN stays NaN, -0 stays -0
    assert np.array_equal(np.signbit(got), np.signbit(want))
    x16 = x[np.isfinite(x)].astype(np.float16)  # and with the bounds in the array's own dtype
    np.testing.assert_array_equal(fast_gelu._clamp(x16, -5.75, 5.75, out=np.empty_like(x16)), np.clip(x16, -5.75, 5.75))


def test_gelu_backward_follows_either_forward(rng):
    x, gy = (rng.standard_normal((4, 9)).astype(np.float32) for _ in range(2))
    for forward_plain in (False, True):
        op = Gelu()
        with fast_cpu.disabled() if forward_plain else _nothing():
            op.forward(x)
        with _nothing() if forward_plain else fast_cpu.disabled():
            got = op.backward(gy)
        reference = Gelu()
        reference.forward(x)
        np.testing.assert_allclose(got, reference.backward(gy), rtol=1e-5, atol=1e-6)


# ---- finite differences, both forms ---------------------------------------------------------------------------------

FORMS = {"fused": _nothing, "plain": fast_cpu.disabled}
LABELS = np.array([1, -100, 6, 3, 3, 0])

GRADIENT_CASES = {
    "linear": (lambda x, w, b: functional.linear(x, w, b), [(3, 5), (4, 5), (4,)]),
    "linear_many_rows": (lambda x, w, b: functional.linear(x, w, b), [(FEW_ROWS + 2, 3), (2, 3), (2,)]),
    "linear_in_out": (lambda x, w, b: functional.linear(x, w, b, in_out=True), [(2, 3, 5), (5, 4), (4,)]),
    "layer_norm": (lambda x, g, b: functional.layer_norm(x, g, b, eps=1e-5), [(2, 3, 6), (6,), (6,)]),
    "cross_entropy": (lambda x: nn_loss.cross_entropy(x, LABELS), [(6, 7)]),
    "cross_entropy_smoothed": (lambda x: nn_loss.cross_entropy(x, LABELS, label_smoothing=0.2), [(6, 7)]),
    "gelu": (get_activation("gelu"), [(4, 4)]),
}


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("case", sorted(GRADIENT_CASES))
def test_gradients_match_finite_differences(rng, case, form):
    op, shapes = GRADIENT_CASES[case]
    arrays = [2 * rng.standard_normal(s) for s in shapes]
    with FORMS[form]():
        assert check_grad(op, *arrays)


# ---- the optimizer --------------------------------------------------------------------------------------------------

def _adamw_run(rng, dtype, *, plain):
    params = [Tensor(rng.standard_normal((70, 20)).astype(dtype)),
              Tensor(np.asfortranarray(rng.standard_normal((50, 30)).astype(dtype))),  # a tied table's layout
              Tensor(rng.standard_normal(30).astype(dtype)),
              Tensor(rng.standard_normal((40, 6)).astype(dtype)[:, ::2])]  # not contiguous
    opt = AdamW(params, lr=1e-2, weight_decay=0.1)
    norms = []
    for step in range(3):
        for p in params:
            p.grad = (rng.standard_normal(p.shape) * 10.0 ** (step - 1)).astype(dtype)
        params[1].grad = np.asfortranarray(params[1].grad) if step else params[1].grad  # C, then F-ordered
        with fast_cpu.disabled() if plain else _nothing():
            norms.append(clip_grad_norm_(params, 5.0))
            opt.step()
    return norms, [p.data for p in params], [p.grad for p in params], opt.state_dict()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adamw_and_clipping_fused_equal_plain_bit_for_bit(dtype):
    """The resume tests are bit-exact: the fused update must be the plain arithmetic, in its order."""
    fused = _adamw_run(np.random.default_rng(0), dtype, plain=False)
    plain = _adamw_run(np.random.default_rng(0), dtype, plain=True)
    assert fused[0] == plain[0]
    for got, want in zip(fused[1] + fused[2], plain[1] + plain[2]):
        np.testing.assert_array_equal(got, want)
    for i, state in fused[3]["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(state[name], plain[3]["state"][i][name])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_fused_optimizer_and_bias_are_bit_identical_for_any_threads(monkeypatch, rng, threads):
    p, g, m, v = (rng.standard_normal((37, 11)).astype(np.float32) for _ in range(4))
    v = np.abs(v)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((200, 11), (9, 11), (9,)))
    hyper = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, step_size=1e-2,
                 bias_correction2=0.002)

    def run():
        arrays = [a.copy() for a in (p, m, v, g)]
        fast_optim.adamw_update(arrays[0], g, arrays[1], arrays[2], **hyper)
        fast_optim.scale_in_place(arrays[3], np.float32(0.3))
        return arrays + [linear_forward(x, w, b, in_out=False)]

    before = parallel.num_threads()
    try:
        parallel.set_num_threads(1)
        expected = run()
        parallel.set_num_threads(threads)
        monkeypatch.setattr(parallel, "BLOCK_VALUES", 40)
        got = run()
    finally:
        parallel.set_num_threads(before)
    for a, e in zip(got, expected):
        np.testing.assert_array_equal(a, e)


# ---- a whole model --------------------------------------------------------------------------------------------------

def _tiny_model(decoder):
    enc = seq2seq.BertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                             intermediate_size=40, max_position_embeddings=128)
    dec = {"bert": lambda: seq2seq.BertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=2,
                                              num_attention_heads=4, intermediate_size=36,
                                              max_position_embeddings=128),
           "gpt2": lambda: seq2seq.GPT2Config(vocab_size=50, n_embd=24, n_layer=2, n_head=4, n_positions=64)}
    config = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec[decoder](), decoder_start_token_id=2,
                                                                       pad_token_id=0)
    model = seq2seq.EncoderDecoderModel(config, seed=1)
    model.train()  # dropout on: its draws come from the model's generator, the same in both forms
    return model


def _model_step(decoder):
    model = _tiny_model(decoder)
    rng = np.random.default_rng(0)
    ids, labels = rng.integers(3, 50, (3, 70)), rng.integers(3, 50, (3, 9))  # 210 encoder rows: several blocks
    mask = np.ones_like(ids)
    mask[1:, -4:] = 0
    labels[2, -3:] = -100
    out = model(ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    return to_numpy(out.logits), to_numpy(out.loss), {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("decoder", ["bert", "gpt2"])
def test_whole_model_plain_equals_fused(decoder):
    """The plain path is what CuPy runs: a model through it must compute what the fused CPU path computes."""
    logits, loss, grads = _model_step(decoder)
    with fast_cpu.disabled():
        plain_logits, plain_loss, plain_grads = _model_step(decoder)

    def relative(a, b):
        return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))

    assert relative(logits, plain_logits) < 1e-5
    assert relative(loss, plain_loss) < 1e-5
    assert grads.keys() == plain_grads.keys()
    # Why the key biases are left out: their gradient is zero in exact arithmetic (softmax ignores a constant added
    # to a row of scores, and q . b_key is one), so both forms give rounding noise; tiny noise, checked as such.
    zero = [name for name in grads if name.endswith("key.bias")]
    assert zero and all(np.abs(grads[name]).max() < 1e-6 * np.abs(plain_grads[name[:-4] + "weight"]).max() + 1e-7
                        for name in zero)
    worst = {name: relative(grads[name], plain_grads[name]) for name in grads if name not in zero}
    assert max(worst.values()) < 1e-5, sorted(worst.items(), key=lambda item: -item[1])[:5]
