"""The array-module switch: NumPy by default, CuPy only when asked, never imported by `import seq2seq`."""
import subprocess
import sys

import numpy as np
import pytest

import seq2seq
from seq2seq.core.backend import backend_of, check_dtype, get_array_module, to_backend, to_numpy, xp_for
from seq2seq.core.errors import InputError


def test_numpy_is_the_default():
    x = np.ones(3, np.float32)
    assert get_array_module(x) is np
    assert get_array_module(seq2seq.Tensor(x)) is np
    assert backend_of(x) == "numpy"
    assert xp_for("numpy") is np


def test_to_numpy_accepts_arrays_tensors_and_lists():
    x = np.arange(4.0)
    assert to_numpy(seq2seq.Tensor(x)) is x
    np.testing.assert_array_equal(to_numpy([1, 2]), [1, 2])
    np.testing.assert_array_equal(to_backend(x, "numpy"), x)


def test_import_does_not_import_cupy_or_torch():
    code = "import sys, seq2seq; print('cupy' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_unknown_backend_and_dtype():
    with pytest.raises(InputError, match="tpu"):
        xp_for("tpu")
    with pytest.raises(InputError, match="int8"):
        check_dtype("int8")
    assert check_dtype("float64") == np.float64


def test_cupy_backend_without_cupy_is_a_clear_error():
    if seq2seq.has_cupy():
        pytest.skip("CuPy is installed here")
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match="CuPy"):
            xp_for("cupy")


def test_arrays_are_not_mistaken_for_tensors():
    """An ndarray's own ``.data`` (a memoryview; on CuPy a device pointer) must never be taken for its contents."""
    x = np.arange(6.0).reshape(2, 3)
    assert to_numpy(x) is x
    from seq2seq.core.backend import unwrap
    assert unwrap(x) is x and unwrap(seq2seq.Tensor(x)) is x and unwrap(3) == 3


def test_cupy_arrays_round_trip(xp):
    x = xp.arange(6, dtype=xp.float32).reshape(2, 3)
    assert get_array_module(x) is xp and get_array_module(seq2seq.Tensor(x)) is xp
    np.testing.assert_array_equal(to_numpy(x), np.arange(6).reshape(2, 3))
    t = seq2seq.Tensor(x)
    assert t.data is x
