"""What the CUDA kernel tests share: the kernel files as the tests know them (each file's entry points, the names
``plans.py`` builds, and the macro that switches its float16/bfloat16 kernels off), the storage helpers of the
GPU parity tests (bfloat16 as uint16 bits, since NumPy has no bfloat16), and the tiny bert2bert the kernel decode
step is tested on."""
import numpy as np

import seq2seq
from seq2seq.core.backend import to_numpy
from seq2seq.fast.cuda import decode_step

TYPES = ("f32", "f16", "bf16")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
ENTRIES = {
    "bias_activation": [f"{k}_{t}" for a in ACTIVATIONS for k in (f"bias_{a}", f"{a}_backward") for t in TYPES],
    "layer_norm": [f"{k}_{t}" for k in ("add_layer_norm", "add_layer_norm_pre", "layer_norm", "layer_norm_backward")
                   for t in TYPES],
    "decode_attention": [f"decode_{v}_attention_{t}" for v in ("self", "cross") for t in TYPES],
    "embeddings": [f"embed_{t}" for t in TYPES],
    "flash_attention": [f"flash_attention_{t}" for t in TYPES],
    "next_token": ["beam_merge"] + [f"{k}_{t}" for k in ("argmax", "beam_topk", "sample") for t in TYPES],
    "softmax": [f"{k}_{t}" for k in ("masked_softmax", "softmax_backward") for t in TYPES],
    "optim": [f"adamw_{t}" for t in TYPES],
    "cross_entropy": [f"{k}_{t}" for k in ("softmax_statistics", "cross_entropy_grad") for t in TYPES],
    "dropout": ["dropout_mask"],
}
HALF_SWITCH = {"bias_activation": "BA_HALF_TYPES", "layer_norm": "LN_HALF_TYPES", "decode_attention": "DA_HALF_TYPES",
               "embeddings": "EM_HALF_TYPES", "flash_attention": "FA_HALF_TYPES", "next_token": "NT_HALF_TYPES",
               "softmax": "SM_HALF_TYPES", "optim": "OP_HALF_TYPES",
               "cross_entropy": "CE_HALF_TYPES", "dropout": "DR_HALF_TYPES"}
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


# ---- the kernel decode step's tests ----------------------------------------------------------------------------

VOCAB = 97


def tiny_bert2bert(*, hidden_act="gelu", seed=3, backend="numpy", decoder="bert"):
    """A random bert2bert (hidden 32, 2 layers, 2 heads), its weights spread so that logits differ clearly; with
    ``decoder="gpt2"`` a bert2gpt2 (48 wide: the encoder's output is projected; scores scaled per layer), with
    ``"bart"`` a bert2bart (scaled embeddings, positions offset by 2)."""
    enc = seq2seq.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=48, max_position_embeddings=32)
    if decoder == "gpt2":
        dec = seq2seq.GPT2Config(vocab_size=VOCAB, n_embd=48, n_layer=2, n_head=2, n_positions=32,
                                 scale_attn_by_inverse_layer_idx=True)
    elif decoder == "bart":
        dec = seq2seq.BartConfig(vocab_size=VOCAB, d_model=32, decoder_layers=2, decoder_attention_heads=2,
                                 decoder_ffn_dim=48, max_position_embeddings=32, scale_embedding=True)
    else:
        dec = seq2seq.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=48, max_position_embeddings=32, hidden_act=hidden_act)
    config = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec, decoder_start_token_id=2,
                                                                       pad_token_id=0)
    model = seq2seq.EncoderDecoderModel(config, seed=seed, backend=backend)
    for p in model.parameters():
        p.data *= 5.0  # initializer_range 0.02 -> 0.1: logits far from uniform
    return model


def sources(batch=2, src=5):
    """Source ids ``[batch, src]`` and their mask, the second source right-padded."""
    rng = np.random.default_rng(0)
    ids = rng.integers(3, VOCAB, (batch, src))
    mask = np.ones_like(ids)
    mask[1, src - 2:] = 0  # the second source right-padded by 2
    return ids, mask


def make_step(model, cache, *, copies=1, max_length=8, launch, product=np.matmul):
    """A DecodeStep for the sources of ``cache`` (a DecoderCache of ``copies`` rows per source)."""
    assert cache.copies == copies  # the cache keeps each source's encoder side once (nn/cache.py)
    return decode_step.DecodeStep(model, cache.memory, cache.memory_keep, copies=copies, max_length=max_length,
                                  launch=launch, product=product)
