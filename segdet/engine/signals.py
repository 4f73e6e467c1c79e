"""Turning SIGTERM / SIGINT into a request to stop at the next iteration boundary.

The trainer then saves a checkpoint and the process exits with 128 + signal number (143 for SIGTERM, 130 for
SIGINT), the shell convention for "terminated by a signal": schedulers and torchrun see an interrupted run, not a
finished one, while the saved checkpoint lets the same command resume. A second signal while stopping restores
the default behaviour, so a stuck save can still be interrupted.
"""
from __future__ import annotations

import logging
import signal
import threading

logger = logging.getLogger(__name__)

HANDLED = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Context manager installing the handlers (main thread only); ``signum`` is the first signal received or None."""

    def __init__(self, signals=HANDLED):
        self.signals = tuple(signals)
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum) if self.signum is not None else 0

    def _handle(self, signum, frame):
        if self.signum is not None:
            # Second signal: give up on the clean stop.
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.signum = signum
        logger.warning("Received %s: stopping after the current iteration and saving a checkpoint",
                       signal.Signals(signum).name)

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
