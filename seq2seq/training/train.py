"""Fine-tuning: the training loop, with periodic evaluation, atomic checkpoints and exact resumption.

    for step in 1 .. total_steps:
        batches = k batches from the length-bucketed, seeded order            (data.py)
        for each batch: (loss * its share of the labelled tokens).backward()  # k > 1: gradient accumulation
        clip_grad_norm_(params, clip); opt.step(); sched.step(); opt.zero_grad()
        every eval_every steps: validation loss and ROUGE of generated text   (evaluate.py)
        every save_every steps: OUT/checkpoint-{step:06d}/

A checkpoint holds everything the next step depends on: the weights (``save_pretrained``, our compact format),
the tokenizer, AdamW's moments (``optimizer.safetensors``; hyper-parameters and step counts in
``optimizer.json``), the schedule's position, the position in the data order, the state of the generator that
dropout draws from, and the loss and evaluation history (``trainer_state.json``). So a run killed at any moment
and resumed from its latest checkpoint computes, step for step, the very numbers (bit for bit) an uninterrupted
run computes. Checkpoints are written into a temporary directory and renamed into place, so a kill mid-write
leaves the previous checkpoint intact and never a half-written one; Ctrl-C or SIGTERM asks for a stop after the
step under way, with a checkpoint (``StopRequests``, console.py), so that nothing is lost at all. On resume the
hyper-parameters come from the current arguments (so a run can be extended); the checkpoint supplies the position.

Under ``mpirun -n N`` (a communicator from ``core/distributed.py``) the same loop trains data-parallel: every rank
draws the same batches, computes the gradient of its rows of each (``data_parallel.py``), one allreduce sums them,
and each rank takes the same optimizer step; the result equals one process's. Rank 0 alone shows progress,
evaluates and writes; a stop request on any rank stops every rank after the same step.

At the end ``OUT/final/`` holds the model in the layout transformers loads (tied copies written out),
``OUT/history.json`` the losses and scores, and ``OUT/loss.png`` their plot. ``TrainingArguments`` defaults as
transformers' ``Seq2SeqTrainingArguments`` does (lr 5e-5, batch 8, 3 epochs, no warm-up, no weight decay); the
recipe that worked for a MiniLM bert2bert on Debian package descriptions is the ``finetune`` command's default
(``cli/finetune.py``).
"""
import dataclasses
import json
import math
import os
import re
import shutil
import sys
import time

import numpy as np

from ..core.backend import to_numpy
from ..core.distributed import SingleProcess
from ..core.errors import CheckpointNotFoundError, InputError
from ..fast.cpu.native import tune
from ..models.checkpoint import load_state_dict
from ..nn.loss import check_label_smoothing
from .console import Progress, StopRequests, plot_history
from .data import IGNORE_INDEX, BatchIterator
from .data_parallel import allreduce_gradients, broadcast_parameters, dropout_rows, row_shards
from .evaluate import evaluate, load_rouge
from .optim import AdamW, LinearSchedule, clip_grad_norm_, param_groups

CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"  # written last: a checkpoint directory without it is incomplete


@dataclasses.dataclass
class TrainingArguments:
    """Hyper-parameters and bookkeeping intervals; ``batch_size`` is per forward pass (the optimizer sees
    ``batch_size * grad_accum`` examples a step). ``max_steps`` overrides ``epochs``; ``stop_after`` ends this
    run after that many steps without changing the schedule (train in chunks, then ``resume``).

    The defaults are those of transformers' ``Seq2SeqTrainingArguments`` where it has the setting (the name there
    in the comment); the ``finetune`` command starts from a recipe of its own (``cli/finetune.py``)."""

    lr: float = 5e-5  # learning_rate
    batch_size: int = 8  # per_device_train_batch_size
    grad_accum: int = 1  # gradient_accumulation_steps
    epochs: float = 3  # num_train_epochs
    max_steps: int = None  # max_steps (-1 there)
    warmup_steps: int = 0  # warmup_steps
    weight_decay: float = 0.0  # weight_decay
    clip: float = 1.0  # max_grad_norm
    label_smoothing_factor: float = 0.0  # training loss only: the validation loss stays plain -log p, comparable
    eval_every: int = 500  # eval_steps (which falls back to logging_steps, 500)
    eval_examples: int = 200
    eval_beams: int = 4
    eval_max_new_tokens: int = 32
    save_every: int = 500  # save_steps
    keep_checkpoints: int = 0  # save_total_limit (None there: keep all)
    seed: int = 42  # seed
    log_every: int = 10
    stop_after: int = None

    def to_dict(self):
        return dataclasses.asdict(self)


class Trainer:
    """Trains ``model`` on ``train_data`` (a ``Seq2SeqDataset``), writing into ``out_dir``; see the module doc."""

    def __init__(self, model, tokenizer, train_data, *, args, out_dir, validation_data=None, stream=None, comm=None):
        if args.grad_accum < 1 or args.batch_size < 1:
            raise InputError(f"batch_size and grad_accum must be >= 1, got {args.batch_size} and {args.grad_accum}")
        check_label_smoothing(args.label_smoothing_factor, name="label_smoothing_factor")  # now, not at step 1
        self.model, self.tokenizer, self.args, self.out_dir = model, tokenizer, args, os.fspath(out_dir)
        self.comm = SingleProcess() if comm is None else comm
        self.lead = self.comm.rank == 0  # the rank that shows progress, evaluates and writes
        self.validation = validation_data if self.lead else None
        self.stream = (sys.stderr if stream is None else stream) if self.lead else Silent()
        if self.validation is not None and args.eval_examples > 0:
            load_rouge()  # fail now, not after an hour of training, when rouge-score is missing
        tune()  # training is a program of its own: OpenBLAS's idle threads sleep, malloc keeps freed memory
        self.batches = BatchIterator(train_data, batch_size=args.batch_size, seed=args.seed)
        self.optimizer = AdamW(param_groups(model, args.weight_decay), lr=args.lr)
        self.total_steps = self._total_steps()
        self.schedule = LinearSchedule(self.optimizer, args.warmup_steps, self.total_steps)
        # dropout's draws: from the run's seed, whatever seed the model was built with (so a run is set by its
        # arguments alone), and saved in checkpoints
        model.state.rng = np.random.default_rng(args.seed)
        broadcast_parameters(model.parameters(), self.comm)  # every rank starts from rank 0's weights
        self.step = 0
        self.stop_requests = None  # the StopRequests of the train() under way
        self.agreed_stop = False  # with several ranks: whether any rank was asked to stop (known after each step)
        self.stopped_by = None  # the signal that ended the last train() early, if one did
        # train_seconds: the time spent in training steps, summed over every chunk of a resumed run (evaluations and
        # checkpoint writes left out); what a model card reports as the training time
        self.history = {"loss": [], "lr": [], "grad_norm": [], "eval": [], "train_seconds": 0.0,
                        "world_size": self.comm.world_size}

    def _total_steps(self):
        if self.args.max_steps is not None:
            return int(self.args.max_steps)
        batches = self.args.epochs * self.batches.batches_per_epoch
        return max(1, math.ceil(batches / self.args.grad_accum))

    # -- the loop --------------------------------------------------------------------------------------------
    def train(self):
        """Run from the current step to ``total_steps`` (or ``stop_after`` steps); returns the history."""
        args = self.args
        last = self.total_steps if args.stop_after is None else min(self.total_steps, self.step + args.stop_after)
        progress = Progress(self.stream, total=self.total_steps, first=self.step, every=args.log_every)
        self.model.train()
        with StopRequests(self.stream) as stop:
            self._loop(last, progress, stop)
        self.stopped_by = stop.signal
        if self.step >= self.total_steps:
            self.finish(progress)
        progress.close()
        return self.history

    def _loop(self, last, progress, stop):
        """Steps up to ``last``, evaluating and saving on schedule; a stop request ends it after a step, with a
        checkpoint written."""
        args, saved = self.args, True
        self.stop_requests = stop
        while self.step < last and not self._stopping():
            started = time.perf_counter()
            loss, tokens, grad_norm = self.training_step()
            seconds = time.perf_counter() - started
            self.step += 1
            self.history["loss"].append(loss)
            self.history["lr"].append(self.schedule.get_last_lr()[0])
            self.history["grad_norm"].append(grad_norm)
            if self.history["train_seconds"] is not None:
                self.history["train_seconds"] += seconds
            self.schedule.step()
            progress.update(self.step, loss, tokens, seconds=seconds, lr=self.history["lr"][-1])
            saved = False
            if self.validation is not None and args.eval_every and self.step % args.eval_every == 0:
                progress.note(self.run_evaluation())
            if args.save_every and self.step % args.save_every == 0:
                self.save_checkpoint()
                saved = True
        if not saved:
            self.save_checkpoint()

    def _stopping(self):
        """Whether to stop before the next step: this process's stop request, or with several ranks the request
        every rank learnt of in the last step's allreduce (a rank that stopped on its own would leave the others
        waiting in the next allreduce)."""
        if self.comm.world_size == 1:
            return self.stop_requests is not None and self.stop_requests.signal is not None
        return self.agreed_stop

    def training_step(self):
        """One optimizer step over ``grad_accum`` batches; returns (mean loss, tokens seen, gradient norm).

        Each batch's loss is weighted by its share of the step's labelled tokens, so the gradient is that of the
        mean loss over all of them, exactly as one big batch would give. With several ranks each computes that
        for its rows of every batch, and the allreduce sums the ranks' parts (``data_parallel.py``).
        """
        batches = [next(self.batches) for _ in range(self.args.grad_accum)]
        counts = [int((b.labels != IGNORE_INDEX).sum()) for b in batches]
        total, step_loss = max(sum(counts), 1), 0.0
        world, rank = self.comm.world_size, self.comm.rank
        for batch, count in zip(batches, counts):
            start, stop = row_shards(len(batch.input_ids), world)[rank]
            if start == stop:  # fewer rows than ranks: nothing here; rank 0's generator state is taken below
                continue
            mine = int((batch.labels[start:stop] != IGNORE_INDEX).sum())
            with dropout_rows(self.model, start, stop, len(batch.input_ids)):
                # pack_padding: the encoder leaves the padding's positions out (nn/packing.py); the loss, the
                # gradients and the dropout masks are those of the padded batch
                out = self.model(batch.input_ids[start:stop], attention_mask=batch.attention_mask[start:stop],
                                 labels=batch.labels[start:stop], label_smoothing=self.args.label_smoothing_factor,
                                 pack_padding=True)
            loss = out.loss if len(batches) == 1 and world == 1 else out.loss * (mine / total)
            loss.backward()  # the graph is freed as backward walks it
            if mine:  # rows whose labels are all ignored: a loss of 0/0, a gradient of zeros
                step_loss += float(loss.item())
            del out, loss
        if world > 1:
            asked = self.stop_requests is not None and self.stop_requests.signal is not None
            step_loss, stops = allreduce_gradients(self.model.parameters(), self.comm, extra=[step_loss, asked])
            self.agreed_stop = stops > 0
            if any(len(b.input_ids) < world for b in batches):  # a rank sat out: rank 0's generator is right
                bits = self.model.state.rng.bit_generator
                bits.state = self.comm.broadcast(bits.state)
        # clip 0 (off): an infinite bound measures the norm without ever scaling the gradients
        grad_norm = clip_grad_norm_(self.model.parameters(), self.args.clip or float("inf"))
        self.optimizer.step()
        self.optimizer.zero_grad()
        return step_loss, sum(b.num_tokens for b in batches), grad_norm

    def run_evaluation(self):
        """Evaluate on the validation set, record the result in the history, and return a one-line summary."""
        args = self.args
        start = time.perf_counter()
        result = evaluate(self.model, self.tokenizer, self.validation, batch_size=args.batch_size,
                          rouge_examples=args.eval_examples, num_beams=args.eval_beams,
                          max_new_tokens=args.eval_max_new_tokens, stream=self.stream)
        self.history["eval"].append({"step": self.step, **result})
        scores = " ".join(f"{k} {result[k]:.4f}" for k in ("rouge1", "rouge2", "rougeL") if k in result)
        return (f"eval at step {self.step}: loss {result['loss']:.4f} {scores} "
                f"({time.perf_counter() - start:.0f}s)")

    # -- saving and resuming ---------------------------------------------------------------------------------
    def save_checkpoint(self):
        """Write ``OUT/checkpoint-{step:06d}/`` atomically and keep only the newest ``keep_checkpoints`` (rank 0
        writes; the other ranks hold the same state)."""
        if not self.lead:
            return None
        path = os.path.join(self.out_dir, f"checkpoint-{self.step:06d}")
        with atomic_directory(path) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            save_optimizer(self.optimizer, tmp)
            state = {"step": self.step, "total_steps": self.total_steps, "data": self.batches.state_dict(),
                     "schedule": self.schedule.state_dict(),
                     "dropout_rng": self.model.state.rng.bit_generator.state,
                     "args": self.args.to_dict(), "history": self.history}
            write_json(os.path.join(tmp, STATE_FILE), state)
        keep = self.args.keep_checkpoints
        if keep:
            for old in list_checkpoints(self.out_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        return path

    def load_checkpoint(self, path):
        """Continue from a checkpoint directory: optimizer moments, schedule and data position, dropout's
        generator, history. The model's weights must already be loaded from it (``from_pretrained``)."""
        with open(os.path.join(path, STATE_FILE), encoding="utf-8") as f:
            state = json.load(f)
        load_optimizer(self.optimizer, path)
        schedule = {**state["schedule"], "warmup_steps": self.args.warmup_steps, "total_steps": self.total_steps,
                    "base_lrs": [self.args.lr] * len(self.optimizer.param_groups)}
        self.schedule.load_state_dict(schedule)  # the position from the checkpoint, the shape from the arguments
        self.batches.load_state_dict(state["data"])
        self.model.state.rng.bit_generator.state = state["dropout_rng"]
        # a checkpoint from before train_seconds was recorded: the total is unknown (None), not the time since
        self.step, self.history = int(state["step"]), {"train_seconds": None, **state["history"]}
        shaping = ("lr", "warmup_steps", "weight_decay", "clip", "label_smoothing_factor", "grad_accum", "epochs",
                   "max_steps")  # the settings that change the run's arithmetic
        changed = {k: (v, getattr(self.args, k)) for k, v in state["args"].items()
                   if k in shaping and v != getattr(self.args, k)}
        if changed:
            print(f"note: resuming with changed settings {changed} (saved, now): the run will differ from an "
                  "uninterrupted one", file=self.stream)

    def finish(self, progress):
        """The end of the run: a last evaluation, ``final/`` for transformers, history.json and loss.png (rank 0)."""
        if not self.lead:
            return
        evaluated = [e["step"] for e in self.history["eval"]]
        if self.validation is not None and self.step not in evaluated:
            progress.note(self.run_evaluation())
        with atomic_directory(os.path.join(self.out_dir, "final")) as tmp:
            self.model.save_pretrained(tmp, include_tied_copies=True)
            self.tokenizer.save_pretrained(tmp)
        write_json(os.path.join(self.out_dir, "history.json"), {"args": self.args.to_dict(), **self.history})
        plot_history(self.history, os.path.join(self.out_dir, "loss.png"))


class Silent:
    """Where the ranks other than 0 write their progress: nowhere (one bar for the job, not one a rank)."""

    def write(self, text):
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


# ---- files ----------------------------------------------------------------------------------------------------------

def write_json(path, content):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=1)
        f.write("\n")


class atomic_directory:
    """``with atomic_directory(path) as tmp:`` fill ``tmp``; on success it replaces ``path`` in one rename.

    Files are flushed to disk before the rename, so after a crash ``path`` is either the old or the new one.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        parent, name = os.path.split(self.path)
        self.tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}")

    def __enter__(self):
        shutil.rmtree(self.tmp, ignore_errors=True)
        os.makedirs(self.tmp)
        return self.tmp

    def __exit__(self, kind, error, traceback):
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        for name in os.listdir(self.tmp):
            with open(os.path.join(self.tmp, name), "rb") as f:
                os.fsync(f.fileno())
        old = self.path + f".old-{os.getpid()}"
        if os.path.exists(self.path):
            os.rename(self.path, old)
        os.rename(self.tmp, self.path)
        shutil.rmtree(old, ignore_errors=True)
        return False


def save_optimizer(optimizer, path):
    """AdamW's state: moment arrays in optimizer.safetensors, step counts and hyper-parameters in optimizer.json."""
    import safetensors.numpy  # noqa: PLC0415 - a runtime dependency; imported here to keep it near its use
    state = optimizer.state_dict()
    arrays = {f"{position}.{name}": np.ascontiguousarray(to_numpy(value))
              for position, entry in state["state"].items() for name, value in entry.items() if name != "step"}
    steps = {str(position): entry["step"] for position, entry in state["state"].items()}
    safetensors.numpy.save_file(arrays, os.path.join(path, "optimizer.safetensors"))
    write_json(os.path.join(path, "optimizer.json"), {"param_groups": state["param_groups"], "step": steps})


def load_optimizer(optimizer, path):
    """Restore what ``save_optimizer`` wrote (the moments; hyper-parameters stay those of ``optimizer``)."""
    with open(os.path.join(path, "optimizer.json"), encoding="utf-8") as f:
        saved = json.load(f)
    arrays = load_state_dict(os.path.join(path, "optimizer.safetensors"))
    state = {int(position): {"step": step} for position, step in saved["step"].items()}
    for key, array in arrays.items():
        position, name = key.split(".", 1)
        state[int(position)][name] = array
    groups = [{**{k: v for k, v in current.items() if k != "params"}, "params": old["params"]}
              for current, old in zip(optimizer.param_groups, saved["param_groups"])]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def list_checkpoints(out_dir):
    """Complete checkpoint directories in ``out_dir``, oldest (lowest step) first."""
    if not os.path.isdir(out_dir):
        return []
    found = [(int(m.group(1)), os.path.join(out_dir, name)) for name in os.listdir(out_dir)
             if (m := CHECKPOINT_DIR.match(name)) and os.path.isfile(os.path.join(out_dir, name, STATE_FILE))]
    return [path for _, path in sorted(found)]


def find_checkpoint(path):
    """``path`` itself when it is a checkpoint, else the latest checkpoint inside it (CheckpointNotFoundError
    when there is none)."""
    if os.path.isfile(os.path.join(path, STATE_FILE)):
        return os.fspath(path)
    found = list_checkpoints(path)
    if not found:
        raise CheckpointNotFoundError(f"no training checkpoint (a checkpoint-NNNNNN directory holding {STATE_FILE}) "
                                      f"in {path}")
    return found[-1]
