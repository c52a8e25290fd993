"""This engine on an NVIDIA GPU (CuPy) against transformers on the same card, same run: outputs checked, then timed.

    python benchmarks/gpu.py --out results/            # on a CUDA machine: bert2bert-base, the issue's workloads
    python benchmarks/gpu.py --dry-run                 # anywhere: a tiny model, NumPy and torch on the CPU

Checks first (each printed and written to ``OUT/gpu.json``): float32 logits within 1e-4 relative of transformers'
(TF32 off in both), greedy and beam-4 ids identical (through the graphed kernel step, generate's default on a GPU,
and through the eager path, ``cuda_graph=False``), float16 logits finite and within 1e-2 relative. Then tokens/s
of greedy batch 1 and 32 and beam 4 (both paths), the time of one batch-1 decode step, the encoder at batch
32 x 512 (float32 and float16) and one training step (batch 32, source 256, target 64, AdamW) with its peak
memory. Ratio = their time over ours. ``--dry-run`` runs the same code on the CPU with a tiny model, so the
script is tested without a GPU.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import bert2bert_pair  # noqa: E402

NEW = 64


class Device:
    """Synchronising, memory and array transfer for one side: CuPy/torch-CUDA, or NumPy/torch-CPU (--dry-run)."""

    def __init__(self, *, gpu):
        import torch  # noqa: PLC0415
        self.torch, self.gpu = torch, gpu
        self.cupy = __import__("cupy") if gpu else None
        self.backend, self.torch_device = ("cupy", "cuda") if gpu else ("numpy", "cpu")
        if gpu:
            torch.backends.cuda.matmul.allow_tf32 = False  # float32 parity: both sides without TF32
            torch.backends.cudnn.allow_tf32 = False

    def sync(self):
        if self.gpu:
            self.cupy.cuda.Device().synchronize()
            self.torch.cuda.synchronize()

    def ours(self, array):
        return self.cupy.asarray(array) if self.gpu else np.asarray(array)

    def theirs(self, array):
        return self.torch.as_tensor(np.asarray(array)).to(self.torch_device)

    def reset_memory(self):
        if self.gpu:
            self.cupy.get_default_memory_pool().free_all_blocks()
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def memory(self):
        """(ours, theirs) bytes held at most: CuPy's pool keeps what it once needed, so its size is our peak."""
        if not self.gpu:
            return None, None
        return self.cupy.get_default_memory_pool().total_bytes(), self.torch.cuda.max_memory_allocated()


def timed(device, fn, *, repeats):
    """Median seconds of ``fn`` (after one warm-up call), synchronised before and after each call."""
    fn()
    times = []
    for _ in range(repeats):
        device.sync()
        start = time.perf_counter()
        fn()
        device.sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def inputs(batch, length, *, vocab):
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, vocab - 1, (batch, length))
    mask = np.ones_like(ids)
    if batch > 1:
        mask[1:, length * 3 // 4:] = 0  # some padding, as real batches have
    return ids, mask


def relative(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def build(device, size, dtype="float32"):
    """(transformers model on the device, our model on the device), the same random weights."""
    import seq2seq  # noqa: PLC0415
    import tempfile  # noqa: PLC0415
    hf, ours = bert2bert_pair(**size)
    if dtype != "float32" or device.gpu:
        with tempfile.TemporaryDirectory() as path:
            ours.save_pretrained(path)
            ours = seq2seq.EncoderDecoderModel.from_pretrained(path, backend=device.backend, dtype=dtype)
    hf = hf.to(device.torch_device)
    return hf, ours


def check_outputs(device, hf, ours, *, vocab, results):
    torch = device.torch
    ids, mask = inputs(4, 128, vocab=vocab)
    labels = inputs(4, 32, vocab=vocab)[0]
    out = ours(device.ours(ids), attention_mask=device.ours(mask), labels=device.ours(labels))
    with torch.no_grad():
        ref = hf(input_ids=device.theirs(ids), attention_mask=device.theirs(mask), labels=device.theirs(labels))
    from seq2seq import to_numpy  # noqa: PLC0415
    results["logits_rel_err"] = relative(to_numpy(out.logits), ref.logits.float().cpu().numpy())
    results["loss_rel_err"] = relative(float(out.loss.item()), float(ref.loss))
    for name, extra in (("greedy", {}), ("beam4", {"num_beams": 4})):
        with torch.no_grad():
            b = hf.generate(input_ids=device.theirs(ids), attention_mask=device.theirs(mask), max_new_tokens=24,
                            **extra)
        for path, graph in (("", None), ("eager_", False)):  # the default (graphed kernel step on a GPU), eager
            a = ours.generate(device.ours(ids), attention_mask=device.ours(mask), max_new_tokens=24,
                              cuda_graph=graph, **extra)
            results[f"{name}_{path}ids_identical"] = bool(np.array_equal(to_numpy(a), b.cpu().numpy()))
    said = {key: "identical" if value else "DIFFER" for key, value in results.items() if key.endswith("identical")}
    print(f"float32: logits rel err {results['logits_rel_err']:.2e}, loss {results['loss_rel_err']:.2e}, greedy ids "
          f"{said['greedy_ids_identical']} (eager {said['greedy_eager_ids_identical']}), beam 4 "
          f"{said['beam4_ids_identical']} (eager {said['beam4_eager_ids_identical']})", flush=True)
    return ref.logits.float().cpu().numpy()


def check_half(device, half, reference, *, vocab, results):
    """float16 logits: finite, and within 1e-2 of transformers' float32 ones (relative to the largest)."""
    from seq2seq import to_numpy  # noqa: PLC0415
    ids, mask = inputs(4, 128, vocab=vocab)
    labels = inputs(4, 32, vocab=vocab)[0]
    logits = to_numpy(half(device.ours(ids), attention_mask=device.ours(mask), labels=device.ours(labels)).logits)
    results["float16_finite"] = bool(np.isfinite(logits).all())
    results["float16_logits_rel_err"] = relative(logits, reference)
    print(f"float16: logits finite {results['float16_finite']}, rel err {results['float16_logits_rel_err']:.2e}",
          flush=True)


def generation_speed(device, hf, ours, *, vocab, repeats, results):
    torch = device.torch
    for name, batch, extra in (("greedy b1", 1, {}), ("greedy b32", 32, {}), ("beam4 b1", 1, {"num_beams": 4})):
        ids, mask = inputs(batch, 128, vocab=vocab)
        kwargs = dict(max_new_tokens=NEW, min_new_tokens=NEW, **extra)
        a_ids, a_mask, b_ids, b_mask = device.ours(ids), device.ours(mask), device.theirs(ids), device.theirs(mask)

        def run_ours(cuda_graph=None):  # None: the graphed kernel step on a GPU; False: the eager array path
            return ours.generate(a_ids, attention_mask=a_mask, eos_token_id=None, cuda_graph=cuda_graph, **kwargs)

        def run_hf():
            with torch.no_grad():
                return hf.generate(input_ids=b_ids, attention_mask=b_mask, eos_token_id=None, **kwargs)

        ours_s, hf_s = timed(device, run_ours, repeats=repeats), timed(device, run_hf, repeats=repeats)
        eager_s = timed(device, lambda: run_ours(False), repeats=repeats)
        tokens = batch * NEW
        results[name] = {"ours_tok_s": tokens / ours_s, "ours_eager_tok_s": tokens / eager_s,
                         "transformers_tok_s": tokens / hf_s, "ratio": hf_s / ours_s}
        print(f"{name:<12} ours {tokens / ours_s:9.1f} tok/s (eager {tokens / eager_s:9.1f})  transformers "
              f"{tokens / hf_s:9.1f}  ratio {hf_s / ours_s:5.2f}", flush=True)
    source = device.ours(inputs(1, 128, vocab=vocab)[0])

    def seconds_for(n):
        return timed(device, lambda: ours.generate(source, max_new_tokens=n, min_new_tokens=n, eos_token_id=None),
                     repeats=repeats)

    one, two = seconds_for(8), seconds_for(8 + NEW)
    results["decode_step_ms"] = (two - one) / NEW * 1e3  # the steps' cost without the encoder and the first step
    print(f"one batch-1 decode step: {results['decode_step_ms']:.3f} ms", flush=True)


def encoder_speed(device, hf, ours, *, dtype, batch, length, vocab, repeats, results):
    torch = device.torch
    ids, mask = inputs(batch, length, vocab=vocab)
    a_ids, a_mask, b_ids, b_mask = device.ours(ids), device.ours(mask), device.theirs(ids), device.theirs(mask)
    import seq2seq  # noqa: PLC0415
    with seq2seq.no_grad():
        ours_s = timed(device, lambda: ours.encode(a_ids, attention_mask=a_mask), repeats=repeats)
        with seq2seq.fast.cpu.disabled():  # every op's plain array form: what the kernels of fast/ save
            plain_s = timed(device, lambda: ours.encode(a_ids, attention_mask=a_mask), repeats=repeats)
    with torch.no_grad():
        hf_s = timed(device, lambda: hf.encoder(input_ids=b_ids, attention_mask=b_mask), repeats=repeats)
    results[f"encoder {dtype}"] = {"ours_ms": ours_s * 1e3, "ours_plain_forms_ms": plain_s * 1e3,
                                   "transformers_ms": hf_s * 1e3, "ratio": hf_s / ours_s}
    print(f"encoder {batch} x {length} {dtype}: ours {ours_s * 1e3:.1f} ms (plain forms {plain_s * 1e3:.1f}), "
          f"transformers {hf_s * 1e3:.1f} ms, ratio {hf_s / ours_s:.2f}", flush=True)


def training_speed(device, hf, ours, *, batch, source, target, vocab, repeats, results):
    torch = device.torch
    import seq2seq  # noqa: PLC0415
    ids, mask = inputs(batch, source, vocab=vocab)
    labels = inputs(batch, target, vocab=vocab)[0]
    ours.train()
    hf.train()
    opt = seq2seq.optim.AdamW(ours.parameters(), lr=1e-5)
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=1e-5)
    a = device.ours(ids), device.ours(mask), device.ours(labels)
    b = device.theirs(ids), device.theirs(mask), device.theirs(labels)

    def step_ours():
        ours(a[0], attention_mask=a[1], labels=a[2]).loss.backward()
        opt.step()
        opt.zero_grad()

    def step_hf():
        hf(input_ids=b[0], attention_mask=b[1], labels=b[2]).loss.backward()
        hf_opt.step()
        hf_opt.zero_grad()

    device.reset_memory()
    ours_s, hf_s = timed(device, step_ours, repeats=repeats), timed(device, step_hf, repeats=repeats)
    ours_bytes, hf_bytes = device.memory()
    with seq2seq.fast.cpu.disabled():  # every op's plain array form: what the kernels of fast/ save
        plain_s = timed(device, step_ours, repeats=repeats)
    results["train step"] = {"ours_ms": ours_s * 1e3, "ours_plain_forms_ms": plain_s * 1e3,
                             "transformers_ms": hf_s * 1e3, "ratio": hf_s / ours_s,
                             "ours_peak_bytes": ours_bytes, "transformers_peak_bytes": hf_bytes}
    memory = f", peak memory ours {ours_bytes / 2**30:.2f} GiB, transformers {hf_bytes / 2**30:.2f}" \
        if ours_bytes else ""
    print(f"train step {batch} x {source}->{target}: ours {ours_s * 1e3:.0f} ms (plain forms {plain_s * 1e3:.0f}), "
          f"transformers {hf_s * 1e3:.0f} ms, ratio {hf_s / ours_s:.2f}{memory}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder to write gpu.json into")
    parser.add_argument("--dry-run", action="store_true", help="a tiny model on the CPU (tests the script)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = Device(gpu=not args.dry_run)
    size = dict(hidden=64, layers=2, heads=2, intermediate=128, vocab=2000) if args.dry_run else {}
    vocab = size.get("vocab", 30522)
    small = dict(batch=2, length=64, source=32, target=8) if args.dry_run else dict(batch=32, length=512, source=256,
                                                                                    target=64)
    torch = device.torch
    results = {"device": torch.cuda.get_device_name() if device.gpu else "cpu (dry run)",
               "torch": torch.__version__, "cupy": device.cupy.__version__ if device.gpu else None}
    print(f"{results['device']}: torch {results['torch']}, cupy {results['cupy']}", flush=True)
    hf, ours = build(device, size)
    hf.generation_config.decoder_start_token_id = hf.config.decoder_start_token_id
    hf.generation_config.pad_token_id = hf.config.pad_token_id
    reference = check_outputs(device, hf, ours, vocab=vocab, results=results)
    generation_speed(device, hf, ours, vocab=vocab, repeats=args.repeats, results=results)
    encoder_speed(device, hf, ours, dtype="float32", batch=small["batch"], length=small["length"], vocab=vocab,
                  repeats=args.repeats, results=results)
    training_speed(device, hf, ours, batch=small["batch"], source=small["source"], target=small["target"],
                   vocab=vocab, repeats=args.repeats, results=results)
    del ours
    _, half = build(device, size, dtype="float16")
    check_half(device, half, reference, vocab=vocab, results=results)
    hf = hf.half().eval()
    encoder_speed(device, hf, half, dtype="float16", batch=small["batch"], length=small["length"], vocab=vocab,
                  repeats=args.repeats, results=results)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "gpu.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
