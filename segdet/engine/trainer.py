"""The iteration-based training loop: resume, step, log, checkpoint, evaluate, stop cleanly.

Order of events matters for exact resumption (a run resumed from iteration k must follow the same trajectory as an
uninterrupted one): the checkpoint is loaded (weights, optimizer, schedule, sampler position) before the data
iterator is created, and the saved RNG states are restored only after it, because creating the iterator draws from
the global RNG (the DataLoader's worker base seed) in both the uninterrupted and the resumed run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import distributed as du
from .checkpoint import (
    CheckpointReadError, atomic_write, list_checkpoints, load_checkpoint, save_checkpoint, unwrap_model,
)
from .logger import MetricsLogger, Timer, format_seconds, max_memory_mb
from .rng import get_rng_state, set_rng_state
from .signals import StopRequest

logger = logging.getLogger("segdet.train")

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf loss (or gradient norm) and was stopped; the last checkpoint is untouched."""


@dataclass
class TrainResult:
    """What :meth:`Trainer.train` ended with: the iteration reached, evaluation metrics (empty when stopped early)
    and the signal that stopped it, if any (``exit_code`` is then 128 + signal number)."""

    iteration: int
    metrics: dict = field(default_factory=dict)
    signum: int | None = None

    @property
    def exit_code(self) -> int:
        return 128 + self.signum if self.signum is not None else 0


def _move_to(obj, device: torch.device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: _move_to(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_move_to(v, device) for v in obj)
    return obj


class Trainer:
    """Trains ``model`` for ``max_iter`` optimizer steps on batches ``(images, targets)`` from ``data_loader``.

    Args:
        model: returns ``{"loss_*": scalar Tensor}`` for ``model(images, targets)`` in train mode.
        optimizer, scheduler: already built over ``model``'s parameters; the scheduler is stepped every iteration.
        data_loader: iterable of ``(list[Tensor[3, H, W]], list[target dict])`` for this rank (its share of the
            global batch), endless or at least ``max_iter`` long.
        sampler: the loader's sampler with ``state_dict()``/``load_state_dict()`` (data order is then resumed
            exactly), or None.
        run_dir: the run directory (checkpoints/, metrics.jsonl, metrics.json, tb/).
        dist: this process's place in the job; None = single process on ``device``.
        checkpoint_period: save every this many iterations (0: only at the end); keep_checkpoints: files kept.
        eval_period: run ``evaluate_fn`` every this many iterations (0: only at the end).
        evaluate_fn: ``evaluate_fn(model) -> {"bbox/AP": ..., ...}``, called on every rank with the bare model.
        grad_clip_norm: clip the global gradient L2 norm to this value (0: no clipping).
        amp: "none" | "bf16" | "fp16" autocast on CUDA (ignored with a warning on the CPU).
        skip_nonfinite: skip steps with a non-finite loss instead of stopping, at most ``max_nonfinite_skips`` times.
        checkpoint_extra: plain values stored in every checkpoint (model_config, label_to_category_id, class_names).

    Logged losses are rank 0's (averaged over each ``log_period`` window by the MetricsLogger).
    """

    def __init__(
        self, *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, data_loader: Iterable,
        run_dir: str | os.PathLike, max_iter: int, device: torch.device | str = "cpu", dist: du.DistInfo | None = None,
        sampler=None, checkpoint_period: int = 0, keep_checkpoints: int = 3, eval_period: int = 0,
        evaluate_fn: Callable[[nn.Module], dict] | None = None, grad_clip_norm: float = 0.0, amp: str = "none",
        skip_nonfinite: bool = False, max_nonfinite_skips: int = 10, log_period: int = 20,
        checkpoint_extra: Mapping | None = None, find_unused_parameters: bool = False,
        progress_bar: bool | None = None, tensorboard: bool = True,
    ):
        if max_iter <= 0:
            raise ValueError(f"max_iter must be a positive number of iterations, got {max_iter}")
        if amp not in AMP_DTYPES:
            raise ValueError(f"amp must be one of {sorted(AMP_DTYPES)}, got {amp!r}")
        device = torch.device(device)
        self.dist = dist or du.DistInfo(rank=0, world_size=1, local_rank=0, device=device)
        self.device = self.dist.device
        self.model = model.to(self.device)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.data_loader = data_loader
        self.sampler = sampler
        self.run_dir = Path(run_dir)
        self.max_iter = int(max_iter)
        self.checkpoint_period = int(checkpoint_period)
        self.keep_checkpoints = int(keep_checkpoints)
        self.eval_period = int(eval_period)
        self.evaluate_fn = evaluate_fn
        self.grad_clip_norm = float(grad_clip_norm or 0.0)
        self.amp_dtype = AMP_DTYPES[amp] if self.device.type == "cuda" else None
        if amp != "none" and self.device.type != "cuda":
            logger.warning("amp=%s needs CUDA; training in float32 on %s", amp, self.device)
        self.grad_scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.skip_nonfinite = bool(skip_nonfinite)
        self.max_nonfinite_skips = int(max_nonfinite_skips)
        self.log_period = int(log_period)
        self.checkpoint_extra = dict(checkpoint_extra or {})
        self.find_unused_parameters = find_unused_parameters
        self.progress_bar = progress_bar
        self.tensorboard = tensorboard
        self.iteration = 0
        self.nonfinite_skips = 0
        self._rng_to_restore: dict | None = None
        self._last_saved_iter: int | None = None

    # ----------------------------------------------------------------------------------------------- checkpoints
    def _gathered_states(self) -> tuple[list, list | None]:
        rng = du.all_gather_object(get_rng_state())
        data = du.all_gather_object(self.sampler.state_dict()) if self.sampler is not None else None
        return rng, data

    def save(self) -> Path | None:
        """Save a checkpoint of the current iteration (collective: every rank must call it; rank 0 writes).
        Parameters that turned NaN/Inf (a finite loss can still have produced a non-finite gradient) are never
        written over the last good checkpoint."""
        bad = [n for n, p in unwrap_model(self.model).named_parameters() if not torch.isfinite(p).all()]
        if du.any_across_ranks(bool(bad))[0]:
            raise NonFiniteLossError(
                f"Non-finite parameters at iteration {self.iteration} ({', '.join(bad[:5]) or 'on another rank'}); "
                f"not saving. The last good checkpoint (iteration {self._last_saved_iter}) is kept."
            )
        rng, data = self._gathered_states()
        path = None
        if self.dist.is_main:
            state = {
                "model": unwrap_model(self.model).state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "iteration": self.iteration,
                "world_size": self.dist.world_size,
                "rng": rng,
                **self.checkpoint_extra,
            }
            if data is not None:
                state["data"] = data
            if self.grad_scaler is not None:
                state["grad_scaler"] = self.grad_scaler.state_dict()
            path = save_checkpoint(self.run_dir, state, iteration=self.iteration, keep=self.keep_checkpoints)
            logger.info("Saved checkpoint %s", path)
        self._last_saved_iter = self.iteration
        du.barrier()
        return path

    def resume_or_start(self, resume: bool = True) -> int:
        """Load the newest complete checkpoint of the run directory when ``resume`` (a corrupt newest file falls back
        to the previous one); with ``resume=False`` earlier checkpoints are moved aside. Returns the start iteration.
        """
        candidates = list_checkpoints(self.run_dir)
        if not resume:
            if candidates and self.dist.is_main:
                aside = self.run_dir / f"checkpoints.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
                shutil.move(str(candidates[0].parent), str(aside))
                logger.warning("resume=false: starting afresh; previous checkpoints moved to %s", aside)
            du.barrier()
            return 0
        for path in candidates:
            try:
                ckpt = load_checkpoint(
                    path, self.model, self.optimizer, self.scheduler, grad_scaler=self.grad_scaler,
                    model_config=self.checkpoint_extra.get("model_config"),
                )
            except CheckpointReadError as exc:
                logger.warning("Skipping unreadable checkpoint %s: %s", path, exc)
                continue
            self.iteration = int(ckpt["iteration"])
            self._restore_states(ckpt)
            self._last_saved_iter = self.iteration
            logger.info("Resuming from %s at iteration %d", path, self.iteration)
            return self.iteration
        logger.info("No checkpoint in %s: starting from iteration 0", self.run_dir / "checkpoints")
        return 0

    def _restore_states(self, ckpt: dict) -> None:
        rank, world = self.dist.rank, self.dist.world_size
        saved_world = int(ckpt.get("world_size", 1))
        if saved_world != world:
            logger.warning(
                "Checkpoint was written by %d processes, this run has %d: data order and random streams continue "
                "from rank 0's state and will not match an uninterrupted run exactly", saved_world, world,
            )
        rng = ckpt.get("rng") or []
        self._rng_to_restore = rng[rank] if rank < len(rng) else (rng[0] if rng else None)
        data = ckpt.get("data")
        if self.sampler is not None and data:
            self.sampler.load_state_dict(data[rank] if rank < len(data) else data[0])

    # ---------------------------------------------------------------------------------------------- training
    def _wrap(self) -> nn.Module:
        if not self.dist.distributed:
            return self.model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(
            self.model, device_ids=ids, find_unused_parameters=self.find_unused_parameters
        )

    def _check_finite(self, loss_values: dict[str, float], grad_norm: float | None) -> bool:
        """True when the step must be skipped; raises NonFiniteLossError when the run must stop. Every rank
        agrees (one small all-reduce), so ranks never skip or stop alone."""
        bad = [k for k, v in loss_values.items() if not math.isfinite(v)]
        if grad_norm is not None and not math.isfinite(grad_norm):
            bad.append("grad_norm")
        (any_bad,) = du.any_across_ranks(bool(bad))
        if not any_bad:
            return False
        where = f"{', '.join(bad) or 'a loss term on another rank'} at iteration {self.iteration + 1}"
        values = ", ".join(f"{k}={loss_values.get(k, grad_norm)}" for k in bad)
        if self.skip_nonfinite and self.nonfinite_skips < self.max_nonfinite_skips:
            self.nonfinite_skips += 1
            logger.warning("Non-finite %s (%s): skipping the step (%d/%d skips allowed)", where, values,
                           self.nonfinite_skips, self.max_nonfinite_skips)
            return True
        extra = (f" after {self.nonfinite_skips} skipped steps (train.max_nonfinite_skips)" if self.skip_nonfinite
                 else "; set train.skip_nonfinite=true to skip such steps")
        last = f"iteration {self._last_saved_iter}" if self._last_saved_iter is not None else "none yet"
        raise NonFiniteLossError(
            f"Non-finite loss: {where} ({values}); stopping{extra}. The last good checkpoint ({last}) is kept."
        )

    def _step(self, model: nn.Module, batch) -> tuple[dict[str, float], float | None, bool]:
        images, targets = batch
        images, targets = _move_to(images, self.device), _move_to(targets, self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss_dict = model(images, targets)
        if not isinstance(loss_dict, Mapping) or not loss_dict:
            raise TypeError(f"model(images, targets) must return a non-empty dict of loss tensors in train mode, got "
                            f"{type(loss_dict).__name__}")
        names = sorted(loss_dict)
        stacked = torch.stack([loss_dict[k].detach().float().reshape(()) for k in names])
        values = dict(zip(names, stacked.tolist()))
        if self._check_finite(values, None):
            self.optimizer.zero_grad(set_to_none=True)
            return values, None, False
        loss = sum(loss_dict[k] for k in names)
        self.optimizer.zero_grad(set_to_none=True)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        grad_norm = None
        if self.grad_clip_norm > 0:
            params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.grad_clip_norm))
            # fp16 overflow is the scaler's business (it skips the step and lowers the scale).
            if self.grad_scaler is None and self._check_finite({}, grad_norm):
                self.optimizer.zero_grad(set_to_none=True)
                return values, grad_norm, False
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        return values, grad_norm, True

    def train(self) -> TrainResult:
        """Run from the current iteration to ``max_iter``; evaluate and write ``metrics.json`` at the end."""
        start = self.iteration
        metrics_logger = MetricsLogger(
            run_dir=self.run_dir, max_iter=self.max_iter, start_iter=start, log_period=self.log_period,
            enabled=self.dist.is_main, tensorboard=self.tensorboard, progress_bar=self.progress_bar,
        )
        logger.info("Training iterations %d -> %d on %s, world size %d", start, self.max_iter, self.device,
                    self.dist.world_size)
        model = self._wrap()
        model.train()
        data_iter = iter(self.data_loader)
        if self._rng_to_restore is not None:
            set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        total = Timer()
        stop_now = False
        try:
            with StopRequest() as stop:
                while self.iteration < self.max_iter:
                    t0 = time.perf_counter()
                    try:
                        batch = next(data_iter)
                    except StopIteration:
                        data_iter = iter(self.data_loader)
                        batch = next(data_iter)
                    except Exception:
                        # Ctrl-C reaches DataLoader workers too, which then die: the loader's error is the
                        # signal's doing, and the state of the last finished iteration is still good to save.
                        if not stop.requested:
                            raise
                        stop_now = True
                        break
                    data_time = time.perf_counter() - t0
                    values, grad_norm, stepped = self._step(model, batch)
                    lr = self.optimizer.param_groups[0]["lr"]
                    if self.scheduler is not None:
                        self.scheduler.step()
                    self.iteration += 1
                    scalars = {**values, "loss": sum(values.values()), "lr": lr, "data_time": data_time,
                               "time": time.perf_counter() - t0, "memory_mb": max_memory_mb(self.device)}
                    if grad_norm is not None:
                        scalars["grad_norm"] = grad_norm
                    metrics_logger.log_iteration(self.iteration, scalars)
                    (stop_now,) = du.any_across_ranks(stop.requested)
                    if stop_now:
                        break
                    if self.checkpoint_period and self.iteration % self.checkpoint_period == 0 \
                            and self.iteration < self.max_iter:
                        self.save()
                    if self.eval_period and self.iteration % self.eval_period == 0 \
                            and self.iteration < self.max_iter:
                        self._evaluate(metrics_logger)
                        model.train()
                if stop_now:
                    if self._last_saved_iter != self.iteration:
                        self.save()
                    logger.warning("Stopped by a signal at iteration %d; run the same command again to resume",
                                   self.iteration)
                    # Another rank may have received the signal; exit as terminated either way.
                    return TrainResult(iteration=self.iteration, signum=stop.signum or 15)
            if self._last_saved_iter != self.iteration:
                self.save()
            self._check_replicas_in_sync()
            logger.info("Training took %s (%d iterations)", format_seconds(total.seconds()), self.iteration - start)
            metrics = self._evaluate(metrics_logger)
            self.write_metrics(metrics)
            return TrainResult(iteration=self.iteration, metrics=metrics)
        finally:
            metrics_logger.close()

    def _check_replicas_in_sync(self) -> None:
        """Under DDP, compare a digest of every rank's parameters: replicas that drifted apart (e.g. a rank that
        skipped a step alone) would make the saved rank-0 weights a lie about what was trained."""
        if not self.dist.distributed:
            return
        digest = hashlib.sha256()
        for p in unwrap_model(self.model).parameters():
            digest.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        digests = du.all_gather_object(digest.hexdigest())
        if len(set(digests)) != 1:
            raise RuntimeError(f"model parameters differ between ranks after training: digests {digests}")
        logger.info("Parameters identical on all %d ranks (sha256 %s)", len(digests), digests[0][:16])

    def _evaluate(self, metrics_logger: MetricsLogger) -> dict:
        if self.evaluate_fn is None:
            return {}
        timer = Timer()
        metrics = dict(self.evaluate_fn(unwrap_model(self.model)) or {})
        metrics = du.broadcast_object(metrics)
        logger.info("Evaluation at iteration %d took %s: %s", self.iteration, format_seconds(timer.seconds()),
                    ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if isinstance(v, (int, float))))
        metrics_logger.log_metrics(self.iteration, metrics)
        return metrics

    def write_metrics(self, metrics: dict) -> Path | None:
        """Write ``run_dir/metrics.json``: ``{"iteration": N, **metrics}`` (main process only)."""
        if not self.dist.is_main:
            return None
        path = self.run_dir / "metrics.json"
        payload = json.dumps({"iteration": self.iteration, **metrics}, indent=2, sort_keys=True) + "\n"
        atomic_write(path, lambda f: f.write(payload.encode()))
        logger.info("Wrote %s", path)
        return path
