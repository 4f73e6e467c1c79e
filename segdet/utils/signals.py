"""SIGTERM / SIGINT become a request to stop at the next safe point, shared by training and prediction.

The caller checks ``requested`` at its own boundary (an iteration, a batch), saves what it has and exits with
``exit_code`` = 128 + signal number (143 for SIGTERM, 130 for SIGINT), the shell convention for "terminated by
a signal", so schedulers and torchrun see an interrupted run while the same command can resume it. A second
signal while stopping restores the previous handler and re-raises, so a stuck save can still be interrupted.
"""
from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

HANDLED = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Context manager installing the handlers (main thread only; elsewhere it does nothing).

    Args:
        signals: the signals to catch.
        on_signal: called from the handler with the signal number at the first signal.
        stopping: what the warning logged at the first signal says will happen, after the signal's name.
    """

    def __init__(self, signals=HANDLED, on_signal: Callable[[int], None] | None = None,
                 stopping: str = "stopping after the current iteration and saving a checkpoint"):
        self.signals = tuple(signals)
        self.on_signal = on_signal
        self.stopping = stopping
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """128 + the signal number, or 0 when no signal came."""
        return 128 + int(self.signum) if self.signum is not None else 0

    def _handle(self, signum, frame):
        if self.signum is not None:
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.signum = signum
        if self.on_signal is not None:
            self.on_signal(signum)
        logger.warning("Received %s: %s", signal.Signals(signum).name, self.stopping)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.getsignal(s)
                signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()
        return False
