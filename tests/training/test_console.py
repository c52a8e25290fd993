"""console.py: the progress line, the stop requests that signals make, the loss plot's smoothing."""
import io
import signal
import threading

import numpy as np
import pytest

from seq2seq.training.console import Progress, StopRequests, format_seconds, smooth


def test_progress_redraws_on_a_terminal_and_prints_lines_otherwise():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Terminal(), io.StringIO()
    for stream in (tty, pipe):
        progress = Progress(stream, total=10, first=0, every=5)
        for step in range(1, 11):
            progress.update(step, 2.0, 100, seconds=0.5, lr=1e-4)
        progress.close()
    assert tty.getvalue().count("\r") == 10 and "step 10/10" in tty.getvalue()
    lines = pipe.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("step 5/10 | loss 2.0000 | 200 tok/s | lr 0.0001")


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
