"""When to checkpoint: every ``period`` iterations, at the end, and when a stop was requested."""
from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

import torch

from .. import distributed as du
from ..checkpoint import unwrap_model
from .base import HookBase

if TYPE_CHECKING:
    from ..trainer import Trainer

logger = logging.getLogger("segdet.train")


class CheckpointHook(HookBase):
    """Saves through ``trainer.save()`` every ``period`` iterations (0: only at the end) and once more when the loop
    ends, normally or on a stop request, unless that iteration is already saved (so max_iter is saved once). Under
    DDP a finished run also checks that every rank ended with the same parameters, since only rank 0's are saved."""

    def __init__(self, period: int = 0):
        if period < 0:
            raise ValueError(f"train.checkpoint_period must be >= 0 (0 = only at the end), got {period}")
        self.period = int(period)

    def after_step(self, trainer: Trainer) -> None:
        if self.period and trainer.iteration % self.period == 0:
            trainer.save()

    def after_train(self, trainer: Trainer) -> None:
        if trainer.checkpointer.last_saved_iter != trainer.iteration:
            trainer.save()
        if trainer.stop_signal is None and trainer.dist.distributed:
            check_replicas_in_sync(trainer.model)


def check_replicas_in_sync(model: torch.nn.Module) -> None:
    """Compare a digest of every rank's parameters (collective): replicas that drifted apart (e.g. a rank that
    skipped a step alone) would make the saved rank-0 weights a lie about what was trained."""
    digest = hashlib.sha256()
    for p in unwrap_model(model).parameters():
        digest.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    digests = du.all_gather_object(digest.hexdigest())
    if len(set(digests)) != 1:
        raise RuntimeError(f"model parameters differ between ranks after training: digests {digests}")
    logger.info("Parameters identical on all %d ranks (sha256 %s)", len(digests), digests[0][:16])
