"""What the CUDA kernel tests share: the kernel files as the tests know them (each file's entry points, the names
``plans.py`` builds, and the macro that switches its float16/bfloat16 kernels off), and the storage helpers of the
GPU parity tests (bfloat16 as uint16 bits, since NumPy has no bfloat16)."""
import numpy as np

from seq2seq.core.backend import to_numpy

TYPES = ("f32", "f16", "bf16")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
ENTRIES = {
    "bias_activation": [f"bias_{a}_{t}" for a in ACTIVATIONS for t in TYPES],
    "layer_norm": [f"add_layer_norm{v}_{t}" for v in ("", "_pre") for t in TYPES],
    "decode_attention": [f"decode_{v}_attention_{t}" for v in ("self", "cross") for t in TYPES],
    "embeddings": [f"embed_{t}" for t in TYPES],
    "flash_attention": [f"flash_attention_{t}" for t in TYPES],
    "next_token": ["beam_merge"] + [f"{k}_{t}" for k in ("argmax", "beam_topk", "sample") for t in TYPES],
}
HALF_SWITCH = {"bias_activation": "BA_HALF_TYPES", "layer_norm": "LN_HALF_TYPES", "decode_attention": "DA_HALF_TYPES",
               "embeddings": "EM_HALF_TYPES", "flash_attention": "FA_HALF_TYPES", "next_token": "NT_HALF_TYPES"}
TOL = {"float32": 2e-5, "float16": 2e-3, "bfloat16": 1.6e-2}  # relative and absolute, per storage type


def float32_entries(name):
    """The entry points of kernels/<name>.cu built with its half types switched off."""
    return [e for e in ENTRIES[name] if not e.endswith(("_f16", "_bf16"))]


def bf16_bits(a):
    """float32 -> bfloat16 bits (uint16), rounded to nearest even."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(bits):
    return (np.asarray(bits, np.uint32) << 16).view(np.float32)


def storage(a, dtype):
    """(host array as stored, float32 values it stands for) for dtype float32, float16 or bfloat16."""
    if dtype == "bfloat16":
        bits = bf16_bits(a)
        return bits, from_bf16_bits(bits)
    stored = np.asarray(a).astype(dtype)
    return stored, stored.astype(np.float32)


def back(a, dtype):
    """A kernel's output as float32 on the host."""
    host = to_numpy(a)
    return from_bf16_bits(host) if dtype == "bfloat16" else host.astype(np.float32)
