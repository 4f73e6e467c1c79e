"""SIGTERM / SIGINT become a request to stop at the next iteration boundary.

The trainer then saves a checkpoint and the process exits with 128 + signal number (143 for SIGTERM, 130 for
SIGINT), the shell convention for "terminated by a signal": schedulers and torchrun see an interrupted run, not a
finished one, while the saved checkpoint lets the same command resume. A second signal while stopping restores
the default behaviour, so a stuck save can still be interrupted.
"""
from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import distributed as du
from .base import HookBase

if TYPE_CHECKING:
    from ..trainer import Trainer

logger = logging.getLogger("segdet.train")

HANDLED = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Context manager installing the handlers (main thread only); ``signum`` is the first signal received or None.
    ``on_signal(signum)``, when given, is called from the handler at the first signal."""

    def __init__(self, signals=HANDLED, on_signal: Callable[[int], None] | None = None):
        self.signals = tuple(signals)
        self.on_signal = on_signal
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.signum is not None:
            # Second signal: give up on the clean stop.
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.signum = signum
        if self.on_signal is not None:
            self.on_signal(signum)
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


class SignalHook(HookBase):
    """Installs the handlers for the run (restored in ``close``). After every iteration the ranks agree whether any
    of them received a signal (one small all-reduce) and then all stop together; the trainer's result then carries
    the signal, so the script exits with 128 + its number (143 for SIGTERM, 130 for SIGINT). Register it after
    the checkpoint hook: the checkpoint hook's ``after_train`` saves the stopped iteration before this hook says
    so. A signal that arrives while the data loader is waiting shows up as the loader's error; the trainer then
    stops without finishing the iteration (``trainer.signal_received``)."""

    def __init__(self):
        self._request: StopRequest | None = None

    def before_train(self, trainer: Trainer) -> None:
        def received(signum: int) -> None:
            trainer.signal_received = signum

        self._request = StopRequest(on_signal=received).__enter__()

    def after_step(self, trainer: Trainer) -> None:
        (stop,) = du.any_across_ranks(self._request.requested)
        if stop:
            # Another rank may have received the signal; exit as terminated either way.
            trainer.request_stop(self._request.signum or signal.SIGTERM)

    def after_train(self, trainer: Trainer) -> None:
        if trainer.stop_signal is not None:
            logger.warning("Stopped by a signal at iteration %d; run the same command again to resume",
                           trainer.iteration)

    def close(self, trainer: Trainer) -> None:
        if self._request is not None:
            self._request.__exit__(None, None, None)
            self._request = None
