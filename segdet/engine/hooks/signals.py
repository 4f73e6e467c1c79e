"""SIGTERM / SIGINT become a request to stop at the next iteration boundary.

The trainer then saves a checkpoint and the process exits with 128 + signal number (143 for SIGTERM, 130 for
SIGINT), the shell convention for "terminated by a signal": schedulers and torchrun see an interrupted run, not a
finished one, while the saved checkpoint lets the same command resume. A second signal while stopping restores
the default behaviour, so a stuck save can still be interrupted.
"""
from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING

from ...utils.signals import StopRequest
from .. import distributed as du
from .base import HookBase

if TYPE_CHECKING:
    from ..trainer import Trainer

logger = logging.getLogger("segdet.train")

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
