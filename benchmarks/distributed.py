"""Data parallelism on one machine: 2 MPI ranks x 1 thread against 1 process x 2 threads, same work, same run.

    python benchmarks/distributed.py                # training tokens/s, generation pairs/s, allreduce GB/s
    python benchmarks/distributed.py --steps 4      # fewer timed training steps

The model is the shipped one (weights/minilm-l6-debian-synopsis, 21.8M parameters, float32 on the CPU), trained as
its recipe trains it (batch 64, sources cut to 64 tokens) on Debian descriptions (data/debian/train.jsonl when
built, else the test fixtures, repeated), and generating synopses (beam 4) for descriptions of the test split.
Training: both configurations run the same global batches and end with the same weights (checked); the first step
is a warm-up, the rest are timed. Generation: ``generate --input/--output`` end to end (model load included in
both), outputs checked byte-identical. Allreduce: the bytes of one step's gradients, summed over 2 ranks on
loopback; with the step time it gives the model of scaling to N machines printed at the end.

Workers (``--worker train|allreduce``) are this same file, started under ``mpirun`` or plainly.
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
MODEL = REPO / "weights" / "minilm-l6-debian-synopsis"
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_btl": "self,vader",
           "OMPI_MCA_rmaps_base_oversubscribe": "1", "OMPI_MCA_hwloc_base_binding_policy": "none"}


def data_file(split):
    built = REPO / "data" / "debian" / f"{split}.jsonl"
    return built if built.exists() else REPO / "tests" / "fixtures" / "debian" / f"{split}.jsonl"


def pairs(split, count):
    """``count`` lines of a split (repeated when the file holds fewer)."""
    lines = [line for line in data_file(split).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [lines[i % len(lines)] for i in range(count)]


# ---- workers ------------------------------------------------------------------------------------------------------

def train_worker(args):
    import seq2seq  # noqa: PLC0415
    from seq2seq.distributed import get_communicator  # noqa: PLC0415
    from seq2seq.training.data import Seq2SeqDataset  # noqa: PLC0415
    from seq2seq.training.train import Trainer, TrainingArguments  # noqa: PLC0415

    comm = get_communicator()
    model = seq2seq.EncoderDecoderModel.from_pretrained(MODEL)
    tok = seq2seq.Tokenizer.from_pretrained(MODEL)
    records = [json.loads(line) for line in pairs("train", 64 * (args.steps + 1))]
    data = Seq2SeqDataset.from_pairs([(r["source"], r["target"]) for r in records], tok, max_source_len=64)
    settings = TrainingArguments(lr=1e-4, batch_size=64, max_steps=args.steps + 1, eval_every=0, eval_examples=0,
                                 save_every=0, seed=0)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, tok, data, args=settings, out_dir=out, comm=comm)
        model.train()
        seconds, tokens = [], 0
        for step in range(args.steps + 1):
            comm.barrier()
            start = time.perf_counter()
            _, step_tokens, _ = trainer.training_step()
            trainer.schedule.step()
            if step:  # the first step warms up (allocations, OpenBLAS's threads)
                seconds.append(time.perf_counter() - start)
                tokens += step_tokens
    if comm.rank == 0:
        digest = float(sum(float(np.abs(p.data).sum()) for p in model.parameters()))
        print(json.dumps({"tokens_per_s": tokens / sum(seconds), "step_s": float(np.median(seconds)),
                          "weights": digest, "parameters": model.num_parameters()}))


def allreduce_worker(args):
    from seq2seq.distributed import get_communicator  # noqa: PLC0415
    comm = get_communicator()
    buffer = np.ones(args.values, dtype=np.float32)
    times = []
    for _ in range(6):
        comm.barrier()
        start = time.perf_counter()
        comm.allreduce_(buffer)
        times.append(time.perf_counter() - start)
    if comm.rank == 0:
        print(json.dumps({"seconds": float(np.median(times[1:])), "bytes": buffer.nbytes}))


# ---- the driver ---------------------------------------------------------------------------------------------------

def launch(ranks, threads, argv):
    """Run ``argv`` (after ``python``) in ``ranks`` MPI ranks (0: one plain process) of ``threads`` threads."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "SEQ2SEQ_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    command = [sys.executable, *map(str, argv)]
    if ranks:
        env.update(MPI_ENV)
        command = ["mpirun", "-n", str(ranks), *command]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")
    return done.stdout, time.perf_counter() - start


def worker_result(ranks, threads, *argv):
    stdout, _ = launch(ranks, threads, [__file__, *argv])
    return json.loads(stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed training steps (after one warm-up step)")
    parser.add_argument("--texts", type=int, default=96, help="descriptions to generate synopses for")
    parser.add_argument("--worker", choices=("train", "allreduce"), help=argparse.SUPPRESS)
    parser.add_argument("--values", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return (train_worker if args.worker == "train" else allreduce_worker)(args)
    if shutil.which("mpirun") is None:
        sys.exit("needs mpirun (apt-get install openmpi-bin libopenmpi-dev) and mpi4py (pip install -e '.[mpi]')")
    print(f"{os.cpu_count()} CPUs; model {MODEL.name}; data {data_file('train').parent}")

    one = worker_result(0, 2, "--worker", "train", "--steps", args.steps)
    two = worker_result(2, 1, "--worker", "train", "--steps", args.steps)
    same = abs(one["weights"] - two["weights"]) <= 1e-5 * abs(one["weights"])
    print(f"training, batch 64 x <=64 tokens: 1 process x 2 threads {one['tokens_per_s']:,.0f} tok/s "
          f"({one['step_s']:.2f} s a step); 2 ranks x 1 thread {two['tokens_per_s']:,.0f} tok/s "
          f"({two['step_s']:.2f} s); ratio {two['tokens_per_s'] / one['tokens_per_s']:.2f}; "
          f"weights {'equal' if same else 'DIFFER'}")

    with tempfile.TemporaryDirectory() as folder:
        source = pathlib.Path(folder) / "in.jsonl"
        source.write_text("\n".join(pairs("test", args.texts)) + "\n", encoding="utf-8")
        generate = ["-m", "seq2seq", "generate", "--model", MODEL, "--input", source, "--num-beams", 4,
                    "--no-repeat-ngram-size", 3, "--max-new-tokens", 32, "--batch-size", 8]
        _, one_s = launch(0, 2, [*generate, "--output", pathlib.Path(folder) / "one.jsonl"])
        _, two_s = launch(2, 1, [*generate, "--output", pathlib.Path(folder) / "two.jsonl"])
        same = (pathlib.Path(folder) / "one.jsonl").read_bytes() == (pathlib.Path(folder) / "two.jsonl").read_bytes()
    print(f"generation, beam 4, {args.texts} descriptions (model load included): 1 process x 2 threads "
          f"{args.texts / one_s:.1f} pairs/s; 2 ranks x 1 thread {args.texts / two_s:.1f} pairs/s; ratio "
          f"{one_s / two_s:.2f}; outputs {'identical' if same else 'DIFFER'}")

    reduce = worker_result(2, 1, "--worker", "allreduce", "--values", one["parameters"])
    gigabytes = reduce["bytes"] / 1e9
    print(f"allreduce of one step's gradients ({gigabytes * 1e3:.0f} MB float32), 2 ranks on loopback: "
          f"{reduce['seconds'] * 1e3:.0f} ms ({gigabytes / reduce['seconds']:.1f} GB/s)")
    step = one["step_s"]
    print("scaling model, N machines of these 2 cores, batch 64 split N ways, a ring allreduce moving "
          "2(N-1)/N of the gradient bytes per machine:")
    for name, bandwidth in (("10 Gb/s Ethernet", 1.25), ("100 Gb/s InfiniBand", 12.5)):
        cells = []
        for n in (2, 4, 8, 16):
            seconds = step / n + 2 * (n - 1) / n * gigabytes / bandwidth
            cells.append(f"N={n}: {step / seconds:.1f}x")
        print(f"  {name}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
