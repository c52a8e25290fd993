"""What a training run shows and hears: its progress bar, the loss plot it leaves, and the signals that stop it.

    progress = Progress(sys.stderr, total=2616, first=0, every=10)   # train: 1%| | 10/2616 [..., loss 7.6, 695 tok/s]
    with StopRequests(sys.stderr) as stop:                           # Ctrl-C / kill: finish the step, then stop
        while not done and stop.signal is None: ...
    plot_history(history, "run/loss.png")                            # raw and smoothed loss, validation loss

Progress is shown with tqdm (``tqdm.auto``: a text bar on a terminal, a widget in a notebook), the convention
users of transformers know; ``progress_bar`` gives the shorter loops (evaluation, batch generation) theirs.
Where tqdm shows nothing (stderr piped to a file), a training run prints a plain line every ``every`` steps
instead, so that a log still says how the run goes.

``train.py`` drives all three; they are kept apart from the loop so that the loop reads as the algorithm.
"""
import signal
import sys
import threading
import time

import numpy as np
from tqdm.auto import tqdm

from .plot import line_plot


def smooth(values, *, window=None):
    """Centred moving average (the ends average what is there), so the curve does not lag behind the steps as
    an exponential average would; the window defaults to ~3% of the points, at least 5, always odd."""
    values = np.asarray(values, dtype=np.float64)
    window = window or max(5, len(values) // 30)
    half = window // 2
    sums = np.concatenate([[0.0], np.cumsum(values)])
    low = np.maximum(np.arange(len(values)) - half, 0)
    high = np.minimum(np.arange(len(values)) + half + 1, len(values))
    return ((sums[high] - sums[low]) / (high - low)).tolist()


def plot_history(history, path):
    """loss.png: the training loss per step (raw and smoothed) and the validation loss at each evaluation."""
    steps = list(range(1, len(history["loss"]) + 1))
    series = {"train loss": (steps, history["loss"]), "train loss (smoothed)": (steps, smooth(history["loss"]))}
    if history["eval"]:
        series["validation loss"] = ([e["step"] for e in history["eval"]], [e["loss"] for e in history["eval"]])
    line_plot(path, series, title="loss per step")


def format_seconds(seconds):
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def progress_bar(*, total, desc, unit, stream=None, show=True):
    """A tqdm bar over ``total`` units of a short loop (evaluation, batch generation) on ``stream`` (default
    stderr): only where tqdm shows bars (a terminal, a notebook: ``disable=None`` keeps pipes and log files
    clean), only once the loop has taken a second (``delay``), and gone when it ends (``leave=False``).
    ``show=False`` hides it (when the loop's own output is on the same screen)."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr if stream is None else stream,
                disable=None if show else True, leave=False, delay=1.0, dynamic_ncols=True)


class Progress:
    """A training run's progress on ``stream``: a tqdm bar of steps, with the loss, tokens/s and learning rate
    after it; where tqdm shows no bar (a pipe, a log file), a line every ``every`` steps instead.

    The loss shown is the mean of the last ``every`` steps; tokens/s counts training steps only (evaluations
    and checkpoints excluded), real source and target tokens only (padding excluded).
    """

    def __init__(self, stream, *, total, first, every):
        self.stream, self.total, self.first, self.every = stream, total, first, max(1, every)
        self.start, self.train_seconds, self.tokens, self.recent = time.perf_counter(), 0.0, 0, []
        self.bar = tqdm(total=total, initial=first, desc="train", unit="step", file=stream, disable=None,
                        dynamic_ncols=True)
        self.lines = self.bar.disable  # tqdm shows nothing here: print log lines

    def update(self, step, loss, tokens, *, seconds, lr):
        self.tokens += tokens
        self.train_seconds += seconds
        self.recent = (self.recent + [loss])[-self.every:]
        loss, speed = sum(self.recent) / len(self.recent), self.tokens / max(self.train_seconds, 1e-9)
        if not self.lines:
            self.bar.set_postfix_str(f"loss {loss:.4f}, {speed:,.0f} tok/s, lr {lr:.3g}", refresh=False)
            self.bar.update(step - self.bar.n)
        elif step % self.every == 0 or step == self.total:
            eta = self.train_seconds / (step - self.first) * (self.total - step)
            print(f"step {step}/{self.total} | loss {loss:.4f} | {speed:,.0f} tok/s | lr {lr:.3g} | "
                  f"{format_seconds(time.perf_counter() - self.start)} elapsed, ETA {format_seconds(eta)}",
                  file=self.stream, flush=True)

    def note(self, message):
        """A line of its own (an evaluation result), above the bar rather than through it."""
        if self.lines:
            print(message, file=self.stream, flush=True)
        else:
            self.bar.write(message, file=self.stream)

    def close(self):
        self.bar.close()


class StopRequests:
    """``with StopRequests(stream) as stop:`` while a run trains, Ctrl-C (SIGINT) or ``kill`` (SIGTERM, what a
    batch system or a closing session sends) only sets ``stop.signal``: the loop finishes the step under way, writes
    a checkpoint and returns, so that ``--resume`` loses nothing. A second signal stops at once, as if there were no
    handler (KeyboardInterrupt, or the default end of the process).

    Python runs signal handlers in the main thread only, between bytecodes: elsewhere this does nothing, and a
    signal that comes during a long matrix product is seen when the product returns.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, stream):
        self.stream, self.signal, self.previous = stream, None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._request) for sig in self.SIGNALS}
        return self

    def _request(self, signum, frame):
        if self.signal is not None:  # the second request: stop now, the way the signal would without us
            self._restore()
            signal.raise_signal(signum)
            return
        self.signal = signum
        print(f"\n{signal.Signals(signum).name}: stopping after this step, with a checkpoint "
              "(send it again to stop at once)", file=self.stream, flush=True)

    def _restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def __exit__(self, kind, error, traceback):
        self._restore()
        return False
