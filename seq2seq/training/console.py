"""What a training run shows and hears: its progress line, the loss plot it leaves, and the signals that stop it.

    progress = Progress(sys.stderr, total=2616, first=0, every=10)   # "step 10/2616 | loss 7.6 | 695 tok/s | ..."
    with StopRequests(sys.stderr) as stop:                           # Ctrl-C / kill: finish the step, then stop
        while not done and stop.signal is None: ...
    plot_history(history, "run/loss.png")                            # raw and smoothed loss, validation loss

``train.py`` drives all three; they are kept apart from the loop so that the loop reads as the algorithm.
"""
import signal
import threading
import time

import numpy as np

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


class Progress:
    """One status line on ``stream``: redrawn in place on a terminal, else printed every ``every`` steps.

    The loss shown is the mean of the last ``every`` steps; tokens/s and the ETA count training steps only
    (evaluations and checkpoints excluded), real source and target tokens only (padding excluded).
    """

    def __init__(self, stream, *, total, first, every):
        self.stream, self.total, self.first, self.every = stream, total, first, max(1, every)
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.start, self.train_seconds, self.tokens, self.recent = time.perf_counter(), 0.0, 0, []

    def update(self, step, loss, tokens, *, seconds, lr):
        self.tokens += tokens
        self.train_seconds += seconds
        self.recent = (self.recent + [loss])[-self.every:]
        elapsed = time.perf_counter() - self.start
        eta = self.train_seconds / (step - self.first) * (self.total - step)
        line = (f"step {step}/{self.total} | loss {sum(self.recent) / len(self.recent):.4f} | "
                f"{self.tokens / max(self.train_seconds, 1e-9):,.0f} tok/s | lr {lr:.3g} | "
                f"{format_seconds(elapsed)} elapsed, ETA {format_seconds(eta)}")
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()
        elif step % self.every == 0 or step == self.total:
            print(line, file=self.stream, flush=True)

    def note(self, message):
        """A line of its own (an evaluation result), not overwritten by the next update."""
        if self.tty:
            self.stream.write("\n")
        print(message, file=self.stream, flush=True)

    def close(self):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


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
