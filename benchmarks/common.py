"""Shared benchmark helpers: build the same random model in transformers and here, time both interleaved.

Shared machines are noisy (10-20% between processes, more when a neighbour takes a core), so the two engines are
timed alternately in one process and the ratio of medians is what gets reported.
"""
import os
import platform
import statistics
import tempfile
import time
import warnings

import numpy as np


def machine():
    """The machine in a line: CPU, cores, NumPy, and which OpenBLAS kernels its products run on (they weigh: see
    blas_kernels below)."""
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}, "
            f"{blas_kernels()}")


def blas_kernels():
    """Which table of kernels NumPy's OpenBLAS runs, and whether ``OPENBLAS_CORETYPE`` chose it.

    Some machines set ``OPENBLAS_CORETYPE`` (and ``OPENBLAS_L2_SIZE``) in the environment, for old OpenBLAS builds
    that failed on their CPU. On an AVX-512 CPU, ``OPENBLAS_CORETYPE=Haswell`` halves the speed of large products
    against the AVX-512 kernels a current NumPy's OpenBLAS picks there, while torch runs its own AVX-512 code: to
    measure what a user gets, run the benchmark with both unset in that command alone,
    ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/forward.py``, and read this line.
    """
    from seq2seq.fast.cpu.native import blas_kernels as kernels  # noqa: PLC0415
    name = kernels()
    if name is None:
        return "BLAS: not an OpenBLAS this process can ask"
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return f"OpenBLAS kernels {name}" + (f" (OPENBLAS_CORETYPE={forced} set)" if forced else " (its own choice)")


def bert2bert_pair(*, hidden=768, layers=12, heads=12, intermediate=3072, vocab=30522, decoder="bert", seed=0):
    """(transformers model, our model) with identical random weights, both in eval mode.

    The encoder is a BERT of the given size; the decoder a BERT of the same size, or with ``decoder="gpt2"`` a
    GPT-2 of that width and depth (gpt2-small at the default size, its 50257-token vocabulary).
    """
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    import seq2seq  # noqa: PLC0415

    torch.manual_seed(seed)

    def bert():  # a fresh object each time: from_encoder_decoder_configs modifies the decoder's in place
        return transformers.BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                       intermediate_size=intermediate, vocab_size=vocab)

    if decoder == "bert":
        dec = bert()
    else:
        dec = transformers.GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, n_inner=intermediate)
    config = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(bert(), dec)
    config.decoder_start_token_id, config.pad_token_id = (101, 0) if decoder == "bert" else (50256, 50256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.EncoderDecoderModel(config).eval()
        with tempfile.TemporaryDirectory() as path:
            hf.save_pretrained(path)
            ours = seq2seq.EncoderDecoderModel.from_pretrained(path)
    return hf, ours


def interleaved(fns, *, repeats, warmup=1):
    """Run each named function ``warmup`` times, then ``repeats`` rounds of all of them; median seconds each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def max_rel_err(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())
