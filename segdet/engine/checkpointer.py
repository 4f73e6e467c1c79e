"""Saving a trainer's state into its run directory and resuming from the newest readable checkpoint.

The file format (atomic writes, retention, strict loading) is segdet.engine.checkpoint's; this module decides what
goes into a training checkpoint and who writes it under DDP. When to save is the CheckpointHook's business.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import distributed as du
from .checkpoint import CheckpointReadError, list_checkpoints, load_checkpoint, save_checkpoint, unwrap_model

if TYPE_CHECKING:
    from .trainer import Trainer

logger = logging.getLogger("segdet.train")


class Checkpointer:
    """Checkpoints of one run directory.

    Args:
        run_dir: the run directory; files go to ``run_dir/checkpoints/model_<iteration>.pt``.
        keep: newest checkpoint files kept (<= 0: all).
        extra: plain values stored in every checkpoint (model_config, label_to_category_id, class_names);
            ``extra["model_config"]`` is also compared with the config a resumed checkpoint was saved with.
    """

    def __init__(self, run_dir: str | os.PathLike, *, keep: int = 3, extra: Mapping | None = None):
        self.run_dir = Path(run_dir)
        self.keep = int(keep)
        self.extra = dict(extra or {})
        self.last_saved_iter: int | None = None  # the newest iteration known to be on disk

    def save(self, trainer: Trainer) -> None:
        """Save ``trainer``'s current iteration (collective: every rank must call it; rank 0 writes). Parameters
        that turned NaN/Inf (a finite loss can still have produced a non-finite gradient) are never written over the
        last good checkpoint."""
        from .trainer import NonFiniteLossError

        model = unwrap_model(trainer.model)
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
        if du.any_across_ranks(bool(bad))[0]:
            raise NonFiniteLossError(
                f"Non-finite parameters at iteration {trainer.iteration} ({', '.join(bad[:5]) or 'on another rank'}); "
                f"not saving. The last good checkpoint (iteration {self.last_saved_iter}) is kept."
            )
        state = trainer.state_dict()  # collective
        if trainer.dist.is_main:
            state = {"model": model.state_dict(), **state, **self.extra}
            path = save_checkpoint(self.run_dir, state, iteration=trainer.iteration, keep=self.keep)
            logger.info("Saved checkpoint %s", path)
        self.last_saved_iter = trainer.iteration
        du.barrier()

    def resume_or_start(self, trainer: Trainer, resume: bool = True) -> int:
        """Load the newest complete checkpoint into ``trainer`` when ``resume`` (a corrupt newest file falls back to
        the previous one); with ``resume=False`` earlier checkpoints are moved aside. Returns the start iteration.
        """
        candidates = list_checkpoints(self.run_dir)
        if not resume:
            if candidates and trainer.dist.is_main:
                aside = self.run_dir / f"checkpoints.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
                shutil.move(str(candidates[0].parent), str(aside))
                logger.warning("resume=false: starting afresh; previous checkpoints moved to %s", aside)
            du.barrier()
            return 0
        for path in candidates:
            try:
                ckpt = load_checkpoint(
                    path, trainer.model, trainer.optimizer, trainer.scheduler, grad_scaler=trainer.grad_scaler,
                    model_config=self.extra.get("model_config"),
                )
            except CheckpointReadError as exc:
                logger.warning("Skipping unreadable checkpoint %s: %s", path, exc)
                continue
            logger.info("Resuming from %s at iteration %d", path, int(ckpt["iteration"]))
            trainer.restore(ckpt)
            self.last_saved_iter = trainer.iteration
            return trainer.iteration
        logger.info("No checkpoint in %s: starting from iteration 0", self.run_dir / "checkpoints")
        return 0
