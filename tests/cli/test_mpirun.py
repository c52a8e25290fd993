"""The command line under a real ``mpirun -n 2`` (Open MPI on loopback): data-parallel ``finetune`` ends where one
process ends, also when resumed with another number of ranks or after ``kill -9`` of a rank; ``generate
--input/--output`` writes what one process writes; a failing rank ends the job, naming itself, never a hang.

Skipped, with the reason, where ``mpirun`` or mpi4py is missing; in CI (``CI`` set) they must run: .ci/run installs
Open MPI and the ``mpi`` extra.
"""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from seq2seq.models.checkpoint import load_state_dict
from seq2seq.training.train import list_checkpoints

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "debian"


def _missing():
    if shutil.which("mpirun") is None:
        return "mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev)"
    try:
        import mpi4py  # noqa: F401, PLC0415
    except ImportError:
        return "mpi4py is not installed (pip install -e '.[mpi]')"
    return None


if _missing():
    if os.environ.get("CI"):
        raise RuntimeError(f"CI must run the MPI tests: {_missing()}")
    pytest.skip(_missing(), allow_module_level=True)

# as root (CI containers), on one machine with 2 cores: ranks may share cores, one thread each
ENV = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMP_NUM_THREADS": "1",
       "OPENBLAS_NUM_THREADS": "1", "SEQ2SEQ_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "OMPI_MCA_btl": "self,vader",
       "OMPI_MCA_rmaps_base_oversubscribe": "1", "OMPI_MCA_hwloc_base_binding_policy": "none"}
TIMEOUT = 240


def command(ranks, *args):
    """``python -m seq2seq ARGS``, under ``mpirun -n RANKS`` unless RANKS is 0 (a plain process)."""
    python = [sys.executable, "-m", "seq2seq", *map(str, args)]
    return python if ranks == 0 else ["mpirun", "-n", str(ranks), *python]


def run(ranks, *args, check=True):
    done = subprocess.run(command(ranks, *args), env=ENV, capture_output=True, text=True, timeout=TIMEOUT)
    if check and done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, make_tiny_bert2bert):
    """A tiny random bert2bert at its initial scale (the generation fixture's weights, scaled 20x to sharpen its
    choices, make training chaotic: float32 rounding would grow past any tolerance within a few steps)."""
    model, tok = make_tiny_bert2bert()
    path = tmp_path_factory.mktemp("mpi-model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    if (FIXTURES / "train.jsonl").exists():
        lines = (FIXTURES / "train.jsonl").read_text(encoding="utf-8").splitlines()[:48]
    else:
        rng = np.random.default_rng(0)
        words = "library tool python audio video network daemon client server file system kernel".split()
        lines = [json.dumps({"source": " ".join(rng.choice(words, size=int(rng.integers(4, 20)))),
                             "target": " ".join(rng.choice(words, size=int(rng.integers(1, 8))))}) for _ in range(48)]
    path = tmp_path_factory.mktemp("mpi-data") / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def finetune_args(model_dir, train_file, out, *more):
    return ("finetune", "--model", model_dir, "--train", train_file, "--out", out, "--batch-size", 6,
            "--warmup-steps", 1, "--lr", 1e-3, "--eval-every", 0, "--eval-examples", 0, "--max-source-len", 32,
            "--max-target-len", 12, *more)


def assert_same_training(ours, theirs, *, rtol=1e-5):
    """Same weights (within ``rtol`` of each tensor's value plus ``rtol`` of the largest weight: see
    tests/training/test_data_parallel.py for why) and the same losses."""
    a, b = (load_state_dict(run / "final" / "model.safetensors") for run in (ours, theirs))
    assert a.keys() == b.keys()
    scale = max(float(np.abs(v).max()) for v in b.values())
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=rtol * scale, err_msg=name)
    history = [json.loads((run / "history.json").read_text()) for run in (ours, theirs)]
    np.testing.assert_allclose(history[0]["loss"], history[1]["loss"], rtol=rtol)
    return history


@pytest.fixture(scope="module")
def one_process(model_dir, train_file, tmp_path_factory):
    """The reference: 8 steps in one plain process."""
    out = tmp_path_factory.mktemp("one") / "run"
    run(0, *finetune_args(model_dir, train_file, out, "--max-steps", 8, "--save-every", 0))
    return out


def test_two_ranks_train_as_one_process(model_dir, train_file, one_process, tmp_path):
    done = run(2, *finetune_args(model_dir, train_file, tmp_path / "run", "--max-steps", 8, "--save-every", 0))
    assert done.stderr.count("model: ") == 1 and "2 ranks of 3 pairs" in done.stderr  # rank 0 alone prints
    history = assert_same_training(tmp_path / "run", one_process)
    assert history[0]["world_size"] == 2 and history[1]["world_size"] == 1


def test_a_run_resumes_with_another_number_of_ranks(model_dir, train_file, one_process, tmp_path):
    args = finetune_args(model_dir, train_file, tmp_path / "run", "--max-steps", 8, "--save-every", 0)
    run(0, *args, "--stop-after", 3)  # one process: steps 1-3
    run(2, *args, "--resume", "--stop-after", 3)  # two ranks: 4-6
    run(0, *args, "--resume")  # one process again: 7-8
    assert_same_training(tmp_path / "run", one_process)


def rank_pid(mpirun, rank):
    """The pid of rank ``rank`` among ``mpirun``'s children (Open MPI names it in each one's environment)."""
    for child in pathlib.Path(f"/proc/{mpirun.pid}/task/{mpirun.pid}/children").read_text().split():
        environ = pathlib.Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"OMPI_COMM_WORLD_RANK={rank}".encode() in environ:
            return int(child)
    return None


def wait_for(condition, process, *, seconds=TIMEOUT):
    end = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the job ended (exit {process.returncode}) before the kill:\n"
                                 f"{process.stderr.read()}")
        if time.monotonic() > end:
            process.kill()
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def kill_rank_when(condition, ranks, *args, rank=1):
    """Start ``mpirun -n RANKS``; when ``condition()`` holds, ``kill -9`` rank ``rank``; return (seconds until the
    job ended, its exit status, its stderr)."""
    job = subprocess.Popen(command(ranks, *args), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True)
    wait_for(lambda: condition() and rank_pid(job, rank) is not None, job)
    os.kill(rank_pid(job, rank), signal.SIGKILL)
    killed = time.monotonic()
    try:
        _, stderr = job.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        job.kill()
        raise AssertionError("the job hung after one rank was killed") from None
    return time.monotonic() - killed, job.returncode, stderr


def test_kill_9_of_a_rank_ends_the_job_and_resume_finishes_the_same_run(model_dir, train_file, tmp_path):
    out = tmp_path / "run"
    args = finetune_args(model_dir, train_file, out, "--max-steps", 30, "--save-every", 2)
    seconds, status, stderr = kill_rank_when(lambda: len(list_checkpoints(out)) >= 2, 2, *args)
    assert status != 0 and seconds < 20, (status, seconds, stderr)
    assert "rank 1" in stderr and "signal 9" in stderr, stderr
    assert not (out / "final").exists()
    latest = list_checkpoints(out)[-1]
    assert json.loads((pathlib.Path(latest) / "trainer_state.json").read_text())["step"] >= 4  # whole, loadable
    run(2, *args, "--resume")
    reference = tmp_path / "reference"
    run(0, *finetune_args(model_dir, train_file, reference, "--max-steps", 30, "--save-every", 0))
    assert_same_training(out, reference)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    path = tmp_path_factory.mktemp("mpi-generate") / "in.jsonl"
    words = "library tool python audio video network daemon client server file system kernel".split()
    rng = np.random.default_rng(3)
    path.write_text("".join(json.dumps({"id": i, "source": " ".join(rng.choice(words, size=int(rng.integers(2, 30))))})
                            + "\n" for i in range(40)), encoding="utf-8")
    return path


def generate_args(model_dir, sources, out):
    return ("generate", "--model", model_dir, "--input", sources, "--output", out, "--batch-size", 3,
            "--max-new-tokens", 6, "--num-beams", 2)


def test_two_ranks_generate_the_file_one_process_writes(tiny_model_dir, sources, tmp_path):
    run(0, *generate_args(tiny_model_dir[0], sources, tmp_path / "one.jsonl"))
    run(2, *generate_args(tiny_model_dir[0], sources, tmp_path / "two.jsonl"))
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.jsonl", "two.jsonl"]  # no sidecar left


def test_a_killed_generate_job_completes_when_rerun(tiny_model_dir, sources, tmp_path):
    out = tmp_path / "out.jsonl"
    args = generate_args(tiny_model_dir[0], sources, out) + ("--max-new-tokens", 24)

    def some_done():
        partial = tmp_path / "out.jsonl.partial.1"
        return partial.exists() and partial.read_text().count("\n") >= 3

    _, status, stderr = kill_rank_when(some_done, 2, *args)
    assert status != 0 and not out.exists(), stderr
    run(2, *args)
    run(0, *generate_args(tiny_model_dir[0], sources, tmp_path / "one.jsonl"), "--max-new-tokens", 24)
    assert out.read_bytes() == (tmp_path / "one.jsonl").read_bytes()


FAILING_RANK = """
import sys
from seq2seq.core.distributed import exit_together, get_communicator
comm = get_communicator()
if comm.rank == 1:
    {fail}
comm.barrier()  # rank 0 would wait here forever for rank 1
"""


@pytest.mark.parametrize("fail, says", [("raise RuntimeError('boom')", "rank 1 of 2 failed (RuntimeError)"),
                                        ("exit_together(comm, 'error: bad input')", "rank 1 of 2 stopped")],
                         ids=["exception", "error-exit"])
def test_a_failing_rank_ends_the_job_naming_itself(fail, says):
    started = time.monotonic()
    done = subprocess.run(["mpirun", "-n", "2", sys.executable, "-c", FAILING_RANK.format(fail=fail)], env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and says in done.stderr, done.stderr
    assert time.monotonic() - started < 30
