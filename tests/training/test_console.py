"""console.py: the progress bar (tqdm) and its plain lines in a pipe, the stop requests that signals make, the loss
plot's smoothing."""
import io
import signal
import threading

import numpy as np
import pytest

from seq2seq.training.console import Progress, StopRequests, format_seconds, progress_bar, smooth


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_tqdm_bar_on_a_terminal_and_lines_in_a_pipe():
    tty, pipe = Terminal(), io.StringIO()
    for stream in (tty, pipe):
        progress = Progress(stream, total=10, first=0, every=5)
        for step in range(1, 11):
            progress.update(step, 2.0, 100, seconds=0.5, lr=1e-4)
            if step == 6:
                progress.note("eval at step 6: loss 1.9")
        progress.close()
    drawn = tty.getvalue()
    assert drawn.startswith("\rtrain:   0%") and "eval at step 6: loss 1.9\n" in drawn
    last = drawn.rstrip("\n").rsplit("\r", 1)[-1]  # what the terminal shows at the end: the bar, with the postfix
    assert last.startswith("train: 100%") and "10/10 [" in last and last.endswith("loss 2.0000, 200 tok/s, lr 0.0001]")
    lines = pipe.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in pipe.getvalue()
    assert lines[0].startswith("step 5/10 | loss 2.0000 | 200 tok/s | lr 0.0001 | ")
    assert lines[1] == "eval at step 6: loss 1.9" and lines[2].startswith("step 10/10 | loss 2.0000 |")


def test_a_resumed_run_starts_its_bar_where_it_stopped():
    tty = Terminal()
    progress = Progress(tty, total=10, first=4, every=1)
    progress.update(5, 1.5, 10, seconds=1.0, lr=1e-3)
    progress.close()
    assert "4/10" in tty.getvalue() and tty.getvalue().rstrip().rsplit("\r", 1)[-1].startswith("train:  50%")


def test_short_loops_get_a_bar_only_where_tqdm_shows_one():
    assert progress_bar(total=3, desc="x", unit="text", stream=io.StringIO()).disable  # a pipe: nothing
    assert not progress_bar(total=3, desc="x", unit="text", stream=Terminal()).disable
    assert progress_bar(total=3, desc="x", unit="text", stream=Terminal(), show=False).disable
    quick = Terminal()
    with progress_bar(total=3, desc="x", unit="text", stream=quick) as bar:
        bar.update(3)
    assert quick.getvalue() == ""  # done within its second of delay: never drawn


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_only_sets_the_request_and_the_old_handler_comes_back(sig):
    before, stream = signal.getsignal(sig), io.StringIO()
    with StopRequests(stream) as stop:
        assert stop.signal is None
        signal.raise_signal(sig)  # no KeyboardInterrupt, no end of the process: only the request
        assert stop.signal == sig
    assert signal.getsignal(sig) is before
    assert stream.getvalue().strip().startswith(f"{signal.Signals(sig).name}: stopping after this step")


def test_a_second_sigint_raises_keyboardinterrupt_at_once():
    with pytest.raises(KeyboardInterrupt), StopRequests(io.StringIO()):
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_outside_the_main_thread_nothing_is_installed():
    seen = []
    worker = threading.Thread(target=lambda: seen.append(StopRequests(io.StringIO()).__enter__().previous))
    worker.start()
    worker.join()
    assert seen == [{}]  # Python allows signal handlers in the main thread only


def test_smooth_is_a_centred_average_and_format_seconds_reads_as_a_clock():
    np.testing.assert_allclose(smooth([0, 0, 3, 0, 0], window=3), [0, 1, 1, 1, 0])
    assert smooth([5.0] * 40) == [5.0] * 40
    assert [format_seconds(s) for s in (7, 75, 3 * 3600 + 125)] == ["7s", "1m15s", "3h02m"]
