"""The CUDA kernels (kernels/*.cu): the loader, NVRTC compiles of every file, and the bias + activation and layer
norm families.

On the CPU: the NumPy references (seq2seq/fast/cuda/reference.py) against the package's own plain ops (nn/), the
loader's pure-Python parts, every .cu file compiled by NVRTC (cuda-bindings, no driver needed) for compute_80,
compute_90 and sm_90, with the CUDA headers of the nvidia-cuda-runtime wheel for the float16/bfloat16 kernels, and
the float32 kernels run through the CPU emulation (cuda_on_cpu.py) against their references.
With a GPU (marker ``gpu``): each kernel launched through the loader, compared with its reference.
The other families' tests: test_cuda_attention_kernels.py, test_cuda_token_kernels.py.
"""
import re
import subprocess
import sys

import numpy as np
import pytest

from cuda_testing import ACTIVATIONS, ENTRIES, HALF_SWITCH, TOL, back, float32_entries, storage
import seq2seq
from seq2seq.core.backend import has_cupy, to_numpy
from seq2seq.core.errors import InputError
from seq2seq.fast.cuda import eager_plans, kernels, plans, reference
from seq2seq.nn import functional
from seq2seq.fast import cpu as fast_cpu
from seq2seq.nn.activations import get_activation
from seq2seq.nn.loss import cross_entropy
from seq2seq.training.optim import _adamw_update

SOURCES = sorted(kernels.KERNELS_DIR.glob("*.cu"))
ARCHS = ("compute_80", "compute_90", "sm_90")
HIDDEN_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}  # kernel name -> config.json hidden_act


# ---- references against the package's plain ops (CPU) -----------------------------------------------------------

@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_bias_activation_reference_matches_the_activation(act, dtype, rng):
    x = rng.standard_normal((5, 24)).astype(np.float32) * 3
    b = rng.standard_normal(24).astype(np.float32)
    got = reference.bias_activation(x.astype(dtype), b.astype(dtype), act)
    plain = get_activation(HIDDEN_ACT[act])(x.astype(dtype).astype(np.float32) + b.astype(dtype).astype(np.float32))
    assert got.dtype == np.dtype(dtype) and got.shape == x.shape
    tol = 1e-6 if dtype == "float32" else 1e-3
    np.testing.assert_allclose(got.astype(np.float32), to_numpy(plain).astype(dtype).astype(np.float32),
                               rtol=tol, atol=tol)


def test_bias_activation_reference_refuses_an_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation"):
        reference.bias_activation(np.zeros((1, 2), np.float32), np.zeros(2, np.float32), "swish")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_add_layer_norm_reference_matches_layer_norm(dtype, rng):
    x, residual = (rng.standard_normal((7, 40)).astype(dtype) for _ in range(2))
    bias, gamma, beta = (rng.standard_normal(40).astype(dtype) for _ in range(3))
    got = reference.add_layer_norm(x, residual, bias, gamma, beta, 1e-12)
    v = x.astype(np.float32) + residual.astype(np.float32) + bias.astype(np.float32)
    plain = functional.layer_norm(v, gamma.astype(np.float32), beta.astype(np.float32), eps=1e-12)
    assert got.dtype == np.dtype(dtype)
    tol = 1e-5 if dtype == "float32" else 2e-3
    np.testing.assert_allclose(got.astype(np.float32), to_numpy(plain).astype(dtype).astype(np.float32),
                               rtol=tol, atol=tol)


def test_add_layer_norm_pre_reference_returns_the_sum_and_its_layer_norm(rng):
    x, residual = (rng.standard_normal((3, 16)).astype(np.float32) for _ in range(2))
    gamma, beta = (rng.standard_normal(16).astype(np.float32) for _ in range(2))
    s, y = reference.add_layer_norm_pre(x, residual, gamma, beta, 1e-5)
    np.testing.assert_array_equal(s, x + residual)
    np.testing.assert_allclose(y, to_numpy(functional.layer_norm(x + residual, gamma, beta, eps=1e-5)),
                               rtol=1e-5, atol=1e-5)


# ---- the loader, without a GPU ----------------------------------------------------------------------------------

def test_every_kernel_family_is_found_and_has_its_entry_points():
    assert sorted(p.stem for p in SOURCES) == sorted(ENTRIES)
    for name, entries in ENTRIES.items():
        text = kernels.path(name).read_text(encoding="utf-8")
        assert text.startswith("//"), f"{name}.cu must open with its header comment"
        assert 'extern "C" __global__' in text


def test_source_prepends_the_defines():
    code = kernels.source("layer_norm", LN_THREADS=128, LN_HALF_TYPES=0)
    assert code.startswith("#define LN_HALF_TYPES 0\n#define LN_THREADS 128\n//")


def test_nothing_cuda_is_imported_with_the_package():
    code = ("import sys, seq2seq; print(any(m.startswith(('cupy', 'cuda', 'seq2seq.fast.cuda')) "
            "for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_available_says_no_without_a_device():
    if has_cupy():
        pytest.skip("a CUDA device is present")
    assert not kernels.available() and not kernels.available("layer_norm")


# ---- NVRTC compiles every file (no GPU needed) ------------------------------------------------------------------

def _nvrtc():
    return pytest.importorskip("cuda.bindings.nvrtc", reason="cuda-bindings is not installed (pip install -e .[test])")


def _include_dir():
    """The CUDA headers' folder (cuda_fp16.h), from the nvidia-cuda-runtime wheel or a toolkit, or None."""
    try:
        from cuda.pathfinder import find_nvidia_header_directory
        return find_nvidia_header_directory("cudart")
    except Exception:
        return None


def _compile(nvrtc, code, arch, options=()):
    """(result, log, ptx or cubin bytes) of compiling ``code`` for ``arch``."""
    err, prog = nvrtc.nvrtcCreateProgram(code.encode(), b"kernel.cu", 0, [], [])
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, err
    opts = [f"--gpu-architecture={arch}".encode(), *(o.encode() for o in kernels.OPTIONS + tuple(options))]
    (result,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    _, size = nvrtc.nvrtcGetProgramLogSize(prog)
    # Why bytearrays: nvrtc writes into the buffer it is given; a bytes object of one byte (b" " * 1) is the
    # interpreter's shared b" ", and writing into it would turn every b" " in the process into b"\x00"
    log = bytearray(size)
    nvrtc.nvrtcGetProgramLog(prog, log)
    binary = bytearray()
    if result == nvrtc.nvrtcResult.NVRTC_SUCCESS:
        get_size, get = ((nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN) if arch.startswith("sm_")
                         else (nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX))
        _, n = get_size(prog)
        binary = bytearray(n)
        get(prog, binary)
    nvrtc.nvrtcDestroyProgram(prog)
    return result, log.decode(errors="replace").rstrip("\x00"), bytes(binary)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("half", [False, True], ids=["float32", "all-types"])
@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_kernel_compiles_with_nvrtc(name, half, arch):
    nvrtc = _nvrtc()
    options = ()
    if half:
        include = _include_dir()
        if include is None:
            pytest.skip("no CUDA headers (cuda_fp16.h): pip install nvidia-cuda-runtime; float32 kernels only")
        options = (f"-I{include}",)
    code = kernels.source(name, **{HALF_SWITCH[name]: int(half)})
    result, log, binary = _compile(nvrtc, code, arch, options)
    assert result == nvrtc.nvrtcResult.NVRTC_SUCCESS, f"{name}.cu for {arch} failed:\n{log}"
    assert binary, "no PTX/CUBIN came out"
    if not arch.startswith("sm_"):  # the PTX names every entry point the loader asks for
        entries = set(re.findall(r"\.entry\s+(\w+)", binary.decode(errors="replace")))
        assert entries == set(ENTRIES[name] if half else float32_entries(name))
    assert "warning" not in log.lower(), f"{name}.cu for {arch}: NVRTC warns:\n{log}"


def test_a_broken_kernel_fails_with_its_log():
    nvrtc = _nvrtc()
    result, log, _ = _compile(nvrtc, 'extern "C" __global__ void k() { undefined_thing(); }', "compute_80")
    assert result != nvrtc.nvrtcResult.NVRTC_SUCCESS and "undefined_thing" in log


# ---- the float32 kernels on the CPU (cuda_on_cpu.py), and every storage type on a GPU ---------------------------

@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(3, 7), (2, 5, 40)])
def test_bias_activation_kernel_runs_on_the_cpu_emulation(emulator, act, shape, rng):
    x, b = rng.standard_normal(shape).astype(np.float32) * 3, rng.standard_normal(shape[-1]).astype(np.float32)
    got = emulator.run(plans.bias_activation(x, b, act))
    np.testing.assert_allclose(got, reference.bias_activation(x, b, act), rtol=TOL["float32"], atol=TOL["float32"])


def test_layer_norm_kernels_run_on_the_cpu_emulation(emulator, rng):
    x, residual = (rng.standard_normal((4, 300)).astype(np.float32) + 2 for _ in range(2))
    bias, gamma, beta = (rng.standard_normal(300).astype(np.float32) for _ in range(3))
    got = emulator.run(plans.add_layer_norm(x, residual, bias, gamma, beta, 1e-12))
    np.testing.assert_allclose(got, reference.add_layer_norm(x, residual, bias, gamma, beta, 1e-12), rtol=1e-5,
                               atol=1e-5)
    s, y = emulator.run(plans.add_layer_norm_pre(x, residual, gamma, beta, 1e-5))
    want_s, want_y = reference.add_layer_norm_pre(x, residual, gamma, beta, 1e-5)
    np.testing.assert_array_equal(s, want_s)
    np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("dtype", sorted(TOL))
@pytest.mark.parametrize("shape", [(3, 7), (65, 3072), (2, 5, 768)])
def test_bias_activation_kernel_matches_the_reference(gpu, act, dtype, shape, rng):
    (x, xf), (b, bf) = storage(rng.standard_normal(shape) * 3, dtype), storage(rng.standard_normal(shape[-1]), dtype)
    got = back(kernels.run(plans.bias_activation(gpu.asarray(x), gpu.asarray(b), act, dtype=dtype)), dtype)
    want = reference.bias_activation(xf, bf, act)  # float32 from the stored values, rounded by the tolerance
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", sorted(TOL))
@pytest.mark.parametrize("shape", [(1, 32), (9, 768), (4, 1000), (3, 4096)])
def test_layer_norm_kernels_match_the_reference(gpu, dtype, shape, rng):
    (x, xf), (r, rf) = (storage(rng.standard_normal(shape) + 2, dtype) for _ in range(2))
    (b, bf), (g, gf), (be, bef) = (storage(rng.standard_normal(shape[-1]), dtype) for _ in range(3))
    dev = [gpu.asarray(a) for a in (x, r, b, g, be)]
    got = back(kernels.run(plans.add_layer_norm(*dev, 1e-12, dtype=dtype)), dtype)
    np.testing.assert_allclose(got, reference.add_layer_norm(xf, rf, bf, gf, bef, 1e-12),
                               rtol=TOL[dtype], atol=4 * TOL[dtype])
    s, y = kernels.run(plans.add_layer_norm_pre(dev[0], dev[1], dev[3], dev[4], 1e-5, dtype=dtype))
    want_s, want_y = reference.add_layer_norm_pre(xf, rf, gf, bef, 1e-5)
    np.testing.assert_allclose(back(s, dtype), want_s, rtol=TOL[dtype], atol=TOL[dtype])
    np.testing.assert_allclose(back(y, dtype), want_y, rtol=TOL[dtype], atol=4 * TOL[dtype])


# ---- the training kernels: activations' backward, layer norm with its statistics, and its backward --------------

def _activation_grad(act, v):
    """d act(v) / dv through the package's own activation (nn/activations.py), in float64."""
    x = seq2seq.Tensor(v.astype(np.float64), requires_grad=True)
    get_activation(HIDDEN_ACT[act])(x).sum().backward()
    return x.grad


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_activation_backward_reference_is_the_activations_derivative(act, rng):
    v = rng.standard_normal((4, 9)).astype(np.float32) * 3
    gy = rng.standard_normal((4, 9)).astype(np.float32)
    np.testing.assert_allclose(reference.activation_backward(gy, v, act), gy * _activation_grad(act, v), rtol=2e-5,
                               atol=2e-6)


@pytest.mark.parametrize("from_output", [False, True], ids=["from_x", "from_y"])
def test_layer_norm_references_match_layer_norm_and_its_backward(from_output, rng):
    x = rng.standard_normal((5, 12)).astype(np.float32) * 2 + 1
    gamma, beta = rng.uniform(0.5, 1.5, 12).astype(np.float32), rng.uniform(-1, 1, 12).astype(np.float32)
    gy = rng.standard_normal((5, 12)).astype(np.float32)
    y, mean, rstd = reference.layer_norm(x, gamma, beta, 1e-5)
    tensors = [seq2seq.Tensor(a, requires_grad=True) for a in (x, gamma, beta)]
    plain = functional.layer_norm(*tensors, eps=1e-5)
    plain.backward(gy)
    np.testing.assert_allclose(y, plain.data, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean, x.mean(axis=-1), rtol=1e-5, atol=1e-6)
    assert mean.dtype == rstd.dtype == np.float32 and mean.shape == rstd.shape == (5,)
    gx, gy_xhat = reference.layer_norm_backward(gy, y if from_output else x, mean, rstd, gamma, beta, from_output)
    np.testing.assert_allclose(gx, tensors[0].grad, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gy_xhat.sum(axis=0), tensors[1].grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_activation_backward_kernel_runs_on_the_cpu_emulation(emulator, act, rng):
    v, gy = (rng.standard_normal((3, 70)).astype(np.float32) * 3 for _ in range(2))
    got = emulator.run(eager_plans.activation_backward(gy, v, act))
    np.testing.assert_allclose(got, reference.activation_backward(gy, v, act), rtol=TOL["float32"],
                               atol=TOL["float32"])


@pytest.mark.parametrize("from_output", [False, True], ids=["from_x", "from_y"])
@pytest.mark.parametrize("need_x", [True, False], ids=["gx", "no_gx"])
def test_training_layer_norm_kernels_run_on_the_cpu_emulation(emulator, rng, from_output, need_x):
    x = rng.standard_normal((4, 300)).astype(np.float32) + 2
    gamma, beta = rng.uniform(0.5, 1.5, 300).astype(np.float32), rng.standard_normal(300).astype(np.float32)
    gy = rng.standard_normal((4, 300)).astype(np.float32)
    y, mean, rstd = emulator.run(eager_plans.layer_norm(x, gamma, beta, 1e-12))
    want = reference.layer_norm(x, gamma, beta, 1e-12)
    for got, expected in zip((y, mean, rstd), want):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    gx, gy_xhat = emulator.run(eager_plans.layer_norm_backward(gy, y if from_output else x, mean, rstd, gamma,
                                                               beta if from_output else None,
                                                               from_output=from_output, need_x=need_x))
    want_gx, want_gy_xhat = reference.layer_norm_backward(gy, y if from_output else x, mean, rstd, gamma, beta,
                                                          from_output)
    assert (gx is None) == (not need_x)
    if need_x:
        np.testing.assert_allclose(gx, want_gx, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gy_xhat, want_gy_xhat, rtol=1e-4, atol=1e-5)


def test_layer_norm_backward_from_the_output_needs_beta(rng):
    x = np.ones((2, 4), np.float32)
    with pytest.raises(InputError, match="needs beta"):
        eager_plans.layer_norm_backward(x, x, x[:, 0], x[:, 0], x[0], None, from_output=True)


@pytest.mark.gpu
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("dtype", sorted(TOL))
def test_activation_backward_kernel_matches_the_reference(gpu, act, dtype, rng):
    (v, vf), (gy, gyf) = (storage(rng.standard_normal((65, 3072)) * 3, dtype) for _ in range(2))
    got = back(kernels.run(eager_plans.activation_backward(gpu.asarray(gy), gpu.asarray(v), act, dtype=dtype)), dtype)
    np.testing.assert_allclose(got, reference.activation_backward(gyf, vf, act), rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", sorted(TOL))
@pytest.mark.parametrize("from_output", [False, True], ids=["from_x", "from_y"])
def test_training_layer_norm_kernels_match_the_reference(gpu, dtype, from_output, rng):
    (x, xf), (gy, gyf) = (storage(rng.standard_normal((9, 768)) + 2, dtype) for _ in range(2))
    (g, gf), (b, bf) = storage(rng.uniform(0.5, 1.5, 768), dtype), storage(rng.standard_normal(768), dtype)
    y, mean, rstd = kernels.run(eager_plans.layer_norm(*(gpu.asarray(a) for a in (x, g, b)), 1e-12, dtype=dtype))
    want_y, want_mean, want_rstd = reference.layer_norm(xf, gf, bf, 1e-12)
    np.testing.assert_allclose(back(y, dtype), want_y, rtol=TOL[dtype], atol=4 * TOL[dtype])
    np.testing.assert_allclose(to_numpy(mean), want_mean, rtol=1e-5, atol=1e-5)
    kept = y if from_output else gpu.asarray(x)
    gx, gy_xhat = kernels.run(eager_plans.layer_norm_backward(gpu.asarray(gy), kept, mean, rstd, gpu.asarray(g),
                                                              gpu.asarray(b), from_output=from_output, dtype=dtype))
    want_gx, want_gy_xhat = reference.layer_norm_backward(gyf, back(kept, dtype), to_numpy(mean), to_numpy(rstd),
                                                          gf, bf, from_output)
    np.testing.assert_allclose(back(gx, dtype), want_gx, rtol=4 * TOL[dtype], atol=4 * TOL[dtype])
    np.testing.assert_allclose(to_numpy(gy_xhat), want_gy_xhat, rtol=4 * TOL[dtype], atol=4 * TOL[dtype])


# ---- optim.cu: AdamW's step -------------------------------------------------------------------------------------

HYPER = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01}


def _adamw_hyper(step):
    return {**HYPER, "step_size": HYPER["lr"] / (1 - HYPER["beta1"] ** step),
            "bias_correction2": 1 - HYPER["beta2"] ** step}


def test_adamw_reference_is_the_optimizers_update(rng):
    p, g, m, v = rng.standard_normal((4, 6, 5)).astype(np.float32)
    v = np.abs(v)
    want_p, want_m, want_v = p.copy(), m.copy(), v.copy()
    _adamw_update(want_p, g, want_m, want_v, **_adamw_hyper(3))
    for got, want in zip(reference.adamw(p, g, m, v, **_adamw_hyper(3)), (want_p, want_m, want_v)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("order", ["C", "F"])  # F: the tied LM-head table; its gradient comes C-ordered here
def test_adamw_kernel(launcher, order, rng):
    xp, dtype = launcher.xp, launcher.dtype
    host = [rng.standard_normal((70, 9)) for _ in range(4)]
    host[3] = np.abs(host[3])  # v >= 0
    (p, pf), (g, gf), (m, mf), (v, vf) = (storage(a, dtype) for a in host)
    p, m, v = (xp.asarray(np.asarray(a, order=order)) for a in (p, m, v))
    for step in (1, 2):
        out = launcher.run(eager_plans.adamw(p, xp.asarray(g), m, v, dtype=dtype, **_adamw_hyper(step)))
        assert out[0] is p and out[1] is m and out[2] is v  # in place
        pf, mf, vf = reference.adamw(pf, gf, mf, vf, **_adamw_hyper(step))
        for got, want in zip((p, m, v), (pf, mf, vf)):
            np.testing.assert_allclose(back(got, dtype), want, rtol=TOL[dtype], atol=TOL[dtype])
        pf, mf, vf = (back(a, dtype) for a in (p, m, v))  # go on from what is stored


def test_adamw_refuses_moments_it_cannot_update_in_place():
    p = np.zeros((4, 6), np.float32)
    m_other_order = np.zeros((6, 4), np.float32).T  # [4, 6] column-major, p row-major
    with pytest.raises(InputError, match="in place"):
        eager_plans.adamw(p, p, m_other_order, p.copy(), **_adamw_hyper(1))


# ---- cross_entropy.cu: the loss's statistics and gradient ---------------------------------------------------------

@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_references_are_the_losss_gradient(smoothing, rng):
    x = rng.standard_normal((6, 50)).astype(np.float32) * 3
    labels = rng.integers(0, 50, 6)
    labels[2] = -100
    t = seq2seq.Tensor(x, requires_grad=True)
    with fast_cpu.disabled():
        loss = cross_entropy(t, labels, label_smoothing=smoothing)
        loss.backward()
    m, log_sum, mean_shifted = reference.softmax_statistics(x, with_mean=True)
    np.testing.assert_allclose(log_sum + m, np.log(np.exp(x.astype(np.float64)).sum(axis=-1)), rtol=1e-6)
    np.testing.assert_allclose(mean_shifted, x.mean(axis=-1) - m, rtol=1e-5, atol=1e-6)
    weight = (labels != -100) / 5  # five rows counted
    g = reference.cross_entropy_grad(x, m, log_sum, np.where(labels != -100, labels, 0), weight.astype(np.float32),
                                     smoothing)
    np.testing.assert_allclose(g, t.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("with_mean", [False, True])
def test_cross_entropy_kernels(launcher, with_mean, rng):
    xp, dtype = launcher.xp, launcher.dtype
    x, xf = storage(rng.standard_normal((5, 1000)) * 4, dtype)
    labels, weight = rng.integers(0, 1000, 5), rng.uniform(0, 1, 5).astype(np.float32)
    m, log_sum, mean_shifted = launcher.run(eager_plans.softmax_statistics(xp.asarray(x), with_mean=with_mean,
                                                                           dtype=dtype))
    want = reference.softmax_statistics(xf, with_mean=with_mean)
    assert (mean_shifted is None) == (not with_mean)
    for got, expected in zip((m, log_sum, mean_shifted), want):
        if expected is not None:
            np.testing.assert_allclose(to_numpy(got), expected, rtol=1e-5, atol=1e-5)
    g = launcher.run(eager_plans.cross_entropy_grad(xp.asarray(x), m, log_sum, xp.asarray(labels), xp.asarray(weight),
                                                    smoothing=0.1, dtype=dtype))
    np.testing.assert_allclose(back(g, dtype), reference.cross_entropy_grad(xf, to_numpy(m), to_numpy(log_sum), labels,
                                                                            weight, 0.1), rtol=TOL[dtype],
                               atol=TOL[dtype])


# ---- dropout.cu: the keep mask made on the device -----------------------------------------------------------------

def test_dropout_mask_reference_keeps_one_minus_p_and_depends_on_the_seed():
    for p in (0.1, 0.5):
        keep = reference.dropout_mask((1000, 1000), p, seed=7)
        assert abs(keep.mean() - (1 - p)) < 0.002
    assert reference.dropout_mask((50,), 0.0, seed=1).all() and not reference.dropout_mask((50,), 1.0, seed=1).any()
    a, b = (reference.dropout_mask((4, 300), 0.3, seed=s) for s in (1, 2))
    assert (a != b).any() and np.array_equal(a, reference.dropout_mask((4, 300), 0.3, seed=1))


@pytest.mark.parametrize("shape", [(7,), (3, 5, 70)])
def test_dropout_mask_kernel_is_the_reference_bit_for_bit(launcher, shape):
    for seed in (0, 12345, 2 ** 63 - 1):
        keep = launcher.run(eager_plans.dropout_mask(launcher.xp, shape, 0.25, seed))
        assert keep.dtype == np.bool_ and keep.shape == shape
        np.testing.assert_array_equal(to_numpy(keep), reference.dropout_mask(shape, 0.25, seed))


def test_dropout_mask_refuses_a_probability_outside_0_1():
    with pytest.raises(InputError, match="dropout probability"):
        eager_plans.dropout_mask(np, (3,), 1.5, 0)
