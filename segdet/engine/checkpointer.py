"""Saving a trainer's state into its run directory and resuming from the newest readable checkpoint.

The file format (atomic writes, retention, strict loading) is segdet.engine.checkpoint's; this module decides what
goes into a training checkpoint (weights, optimizer, scheduler, iteration, max_iter, every rank's RNG and sampler
state) and who writes it under DDP. When to save is the CheckpointHook's business.
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
from .lr_scheduler import describe_max_iter_change
from .rng import get_rng_state, set_rng_state

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
        self._rng_state: dict | None = None  # a resumed rank's RNG state, until restore_rng()

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
        rng = du.all_gather_object(get_rng_state())
        data = du.all_gather_object(trainer.sampler.state_dict()) if trainer.sampler is not None else None
        if trainer.dist.is_main:
            state = {
                "model": model.state_dict(),
                "optimizer": trainer.optimizer.state_dict(),
                "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
                "iteration": trainer.iteration,
                "max_iter": trainer.max_iter,
                "world_size": trainer.dist.world_size,
                "rng": rng,
                **self.extra,
            }
            if data is not None:
                state["data"] = data
            if trainer.grad_scaler is not None:
                state["grad_scaler"] = trainer.grad_scaler.state_dict()
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
            self._continue(trainer, ckpt)
            self.last_saved_iter = trainer.iteration
            return trainer.iteration
        logger.info("No checkpoint in %s: starting from iteration 0", self.run_dir / "checkpoints")
        return 0

    def _continue(self, trainer: Trainer, ckpt: Mapping) -> None:
        """What a loaded checkpoint sets besides weights, optimizer and scheduler: the iteration, this rank's
        sampler position, and its RNG state, held back until :meth:`restore_rng`."""
        rank, world = trainer.dist.rank, trainer.dist.world_size
        saved_world = int(ckpt.get("world_size", 1))
        if saved_world != world:
            logger.warning(
                "Checkpoint was written by %d processes, this run has %d: data order and random streams continue "
                "from rank 0's state and will not match an uninterrupted run exactly", saved_world, world,
            )
        trainer.iteration = int(ckpt["iteration"])
        rng = ckpt.get("rng") or []
        self._rng_state = rng[rank] if rank < len(rng) else (rng[0] if rng else None)
        data = ckpt.get("data")
        if trainer.sampler is not None and data:
            trainer.sampler.load_state_dict(data[rank] if rank < len(data) else data[0])
        saved_max_iter = ckpt.get("max_iter")  # absent from checkpoints written before the trainer stored it
        if saved_max_iter is not None and int(saved_max_iter) != trainer.max_iter:
            change = describe_max_iter_change(trainer.schedule, trainer.scheduler, old_max_iter=int(saved_max_iter),
                                              iteration=trainer.iteration)
            logger.warning("train.max_iter is %d, the checkpoint's run had %d: %s", trainer.max_iter,
                           int(saved_max_iter), change)

    def restore_rng(self) -> None:
        """Set the resumed RNG state (once). The trainer calls it right before the first step, after the data
        iterator and the hooks' before_train, since creating the iterator draws from the global RNG in the
        uninterrupted run as well."""
        if self._rng_state is not None:
            set_rng_state(self._rng_state)
            self._rng_state = None
