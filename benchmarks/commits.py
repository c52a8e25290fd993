"""This engine at two checkouts, interleaved: did a change make it slower? (Ours against ours; no transformers.)

    python benchmarks/commits.py OLD_CHECKOUT NEW_CHECKOUT            # e.g. a `git worktree add /tmp/old HEAD~3`
    python benchmarks/commits.py OLD NEW --rounds 5 --only greedy

Each checkout runs in a subprocess of its own (``PYTHONPATH`` set to it), both started with the same process
settings (OpenBLAS's thread timeout and glibc's malloc, through the environment, as ``tune_cpu()`` sets them), so
that only the package's code differs. Every round starts a fresh pair, which take turns; each turn repeats the
workload after one warm-up run; a workload's time is the median over its rounds' runs. Run a checkout against
itself to see the noise (``commits.py A A``). The weights are the same: a random
bert2bert-base (and a MiniLM-sized one for the training step) saved once by the newer checkout and loaded by both,
and both must give the same outputs (ids equal, losses within 1e-5) before any time counts.
Ratio = old time / new time (above 1: the new checkout is faster).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

SETTINGS = {"OPENBLAS_THREAD_TIMEOUT": "4", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str((1 << 31) - 1)}
WORKLOADS = ("greedy b1", "greedy b8", "beam4 b1", "forward b8x256", "train step b16x128/32")


def build(base, small):
    """Random bert2bert checkpoints: bert-base size, and MiniLM-sized (384 wide, 6 layers) for training."""
    import seq2seq  # noqa: PLC0415

    minilm = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    for path, size in ((base, {}), (small, minilm)):
        bert = seq2seq.BertConfig(**size)
        config = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(bert, bert)
        config.decoder_start_token_id, config.pad_token_id = 101, 0
        seq2seq.EncoderDecoderModel(config, seed=0).save_pretrained(path)


def workload(name, base, small):
    """A function running the workload once and returning what its outputs must agree on."""
    import numpy as np  # noqa: PLC0415

    import seq2seq  # noqa: PLC0415
    import seq2seq.optim  # noqa: PLC0415

    rng = np.random.default_rng(0)
    if name.startswith("train"):
        model = seq2seq.EncoderDecoderModel.from_pretrained(small).train()
        model.state.rng = np.random.default_rng(0)  # dropout's draws: the same in both (how seed= maps to them may not)
        src, tgt = rng.integers(1000, 30000, (16, 128)), rng.integers(1000, 30000, (16, 32))
        optimizer = seq2seq.optim.AdamW(model.parameters(), lr=1e-5)

        def step():
            loss = model(src, labels=tgt).loss
            loss.backward()
            seq2seq.optim.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            return round(float(loss), 4)
        return step
    model = seq2seq.EncoderDecoderModel.from_pretrained(base)
    if name.startswith("forward"):
        src, tgt = rng.integers(1000, 30000, (8, 256)), rng.integers(1000, 30000, (8, 64))

        def forward():
            with seq2seq.no_grad():
                return round(float(model(src, decoder_input_ids=tgt).logits[:, -1].sum()), 1)
        return forward
    batch = 8 if name.endswith("b8") else 1
    beams = 4 if name.startswith("beam") else 1
    src = rng.integers(1000, 30000, (batch, 128))
    return lambda: model.generate(src, num_beams=beams, max_new_tokens=64, min_new_tokens=64).tolist()


def serve(names, base, small, repeats):
    """The subprocess: for each line read (a workload name), run it once to warm up, then ``repeats`` timed runs;
    answer with the times and the outputs."""
    import time  # noqa: PLC0415

    fns = {name: workload(name, base, small) for name in names}
    print("ready", flush=True)  # loaded: timing may start (the other checkout's loading must not overlap it)
    for line in sys.stdin:
        fn = fns[line.strip()]
        result = fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        print(json.dumps({"times": times, "result": result}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per turn")
    parser.add_argument("--only", help="run only the workloads whose name contains this text")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)  # the subprocess role: names, base, small
    parser.add_argument("--build", nargs=2, help=argparse.SUPPRESS)  # the subprocess that saves the checkpoints
    args = parser.parse_args()
    if args.build:
        return build(*args.build)
    if args.serve:
        names, base, small = args.serve
        return serve(names.split(","), base, small, args.repeats)
    names = [w for w in WORKLOADS if not args.only or args.only in w]
    with tempfile.TemporaryDirectory() as tmp:
        base, small = os.path.join(tmp, "base"), os.path.join(tmp, "small")
        subprocess.run([sys.executable, __file__, args.old, args.new, "--build", base, small], check=True,
                       env={**os.environ, "PYTHONPATH": os.path.abspath(args.new)})
        print(f"old {args.old}, new {args.new}: {args.rounds} rounds x {args.repeats} timed runs, medians")
        print(f"{'workload':24} {'old s':>8} {'new s':>8} {'old/new':>8}")
        for name in names:
            times = {"old": [], "new": []}
            results = {}
            for r in range(args.rounds):
                # fresh processes every round: a process's own luck (where its big arrays landed in memory) moves a
                # decode step by 10-15% (measured: the same checkout against itself), so it must average out too
                children = {label: start_checkout(checkout, name, base, small, args)
                            for label, checkout in (("old", args.old), ("new", args.new))}
                for child in children.values():
                    assert child.stdout.readline().strip() == "ready"
                for label in (("old", "new") if r % 2 == 0 else ("new", "old")):  # alternate who goes first
                    child = children[label]
                    child.stdin.write(name + "\n")
                    child.stdin.flush()
                    answer = json.loads(child.stdout.readline())
                    times[label] += answer["times"]
                    results[label] = answer["result"]
                for child in children.values():
                    child.stdin.close()
                    child.wait()
            if results["old"] != results["new"]:
                sys.exit(f"{name}: the two checkouts disagree: {results['old']} against {results['new']}")
            old, new = statistics.median(times["old"]), statistics.median(times["new"])
            print(f"{name:24} {old:8.3f} {new:8.3f} {old / new:8.2f}", flush=True)


def start_checkout(checkout, name, base, small, args):
    """A subprocess serving workload ``name`` with the package of ``checkout``."""
    env = {**os.environ, **SETTINGS, "PYTHONPATH": os.path.abspath(checkout)}
    return subprocess.Popen([sys.executable, __file__, args.old, args.new, "--repeats", str(args.repeats),
                             "--serve", name, base, small], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)


if __name__ == "__main__":
    main()
