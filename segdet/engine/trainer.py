"""The iteration-based training loop; everything around the optimizer step is a hook (segdet/engine/hooks/).

One iteration: fetch a batch, forward, ask the hooks whether to drop the update (non-finite losses), backward,
clip, optimizer step, scheduler step, count the iteration, then the hooks' ``after_step``.

Order of events matters for exact resumption (a run resumed from iteration k must follow the same trajectory as an
uninterrupted one): the checkpoint is loaded (weights, optimizer, schedule, sampler position) before the data
iterator is created, and the saved RNG states are restored only after it and after every hook's ``before_train``,
right before the first step, because creating the iterator draws from the global RNG (the DataLoader's worker base
seed) in both the uninterrupted and the resumed run.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import distributed as du
from .checkpointer import Checkpointer
from .hooks.base import HookBase
from .logger import Timer, format_seconds
from .loss_weights import LossWeights
from ..utils.amp import autocast, resolve_amp

logger = logging.getLogger("segdet.train")



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


@dataclass
class StepInfo:
    """The iteration just taken, for the hooks' ``after_step``: unweighted loss terms, their weighted sum (what was
    minimised), the lr the step used, the global gradient norm before clipping (None without clipping), seconds
    spent fetching the batch and in the whole iteration, and whether the optimizer stepped."""

    losses: dict[str, float]
    loss: float
    lr: float
    grad_norm: float | None
    data_time: float
    time: float
    stepped: bool


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
        optimizer: already built over ``model``'s parameters.
        schedule: ``schedule(optimizer, max_iter=...)`` -> lr scheduler stepped every iteration (the partial that
            conf/schedule/ describes), or None for a constant lr. The trainer passes its own ``max_iter``: it is
            the one owner of the run length, and stores it in every checkpoint.
        data_loader: iterable of ``(list[Tensor[3, H, W]], list[target dict])`` for this rank (its share of the
            global batch), endless or restarted when exhausted.
        run_dir: the run directory (checkpoints/, metrics.jsonl, metrics.json, tb/).
        dist: this process's place in the job; None = single process on ``device``.
        sampler: the loader's sampler with ``state_dict()``/``load_state_dict()`` (data order is then resumed
            exactly), or None.
        hooks: :class:`HookBase` instances, called in this order (segdet.engine.defaults.build_trainer makes the
            standard set).
        grad_clip_norm: clip the global gradient L2 norm to this value (0: no clipping).
        amp: "none" | "bf16" | "fp16": the forward pass under torch.autocast with that dtype, on the CPU or CUDA
            (fp16 with a GradScaler); a device that serves it badly (bf16 on a CPU without native bf16) is logged.
        loss_weights: ``{loss name: weight}`` applied to the model's loss terms before they are summed; terms not
            named weigh 1. A name the model does not return fails at the first step.
        keep_checkpoints: checkpoint files kept; checkpoint_extra: plain values stored in every checkpoint
            (model_config, label_to_category_id, class_names).
        compile: run the training forward (and its backward) through ``torch.compile(model)``; ``model`` itself
            stays the eager module that checkpoints save, resume loads and evaluation runs.
    """

    def __init__(
        self, *, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Callable | None,
        data_loader: Iterable, run_dir: str | os.PathLike, max_iter: int, device: torch.device | str = "cpu",
        dist: du.DistInfo | None = None, sampler=None, hooks: Sequence[HookBase] = (), grad_clip_norm: float = 0.0,
        amp: str = "none", loss_weights: Mapping[str, float] | None = None, find_unused_parameters: bool = False,
        keep_checkpoints: int = 3, checkpoint_extra: Mapping | None = None, compile: bool = False,
    ):
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter <= 0:
            raise ValueError(f"max_iter must be a positive number of iterations, got {max_iter!r}")
        if not isinstance(compile, bool):
            raise ValueError(f"train.compile must be true or false, got {compile!r}")
        self.compile = compile
        self._max_iter = max_iter
        self.dist = dist or du.DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device(device))
        self.device = self.dist.device
        self.model = model.to(self.device)
        self.optimizer = optimizer
        self.schedule = schedule
        self.scheduler = schedule(optimizer, max_iter=max_iter) if schedule is not None else None
        self.data_loader = data_loader
        self.sampler = sampler
        self.run_dir = Path(run_dir)
        self.hooks = list(hooks)
        self.grad_clip_norm = float(grad_clip_norm or 0.0)
        self.amp_dtype = resolve_amp(amp, self.device, key="train.amp")
        # fp16's 5 exponent bits underflow small gradients: scale the loss. bf16 has float32's range.
        self.grad_scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None
        self.loss_weights = LossWeights(loss_weights)
        self.find_unused_parameters = find_unused_parameters
        self.checkpointer = Checkpointer(self.run_dir, keep=keep_checkpoints, extra=checkpoint_extra)
        self.iteration = 0
        self.last_step: StepInfo | None = None
        self.metrics: dict = {}  # the final evaluation's results, filled by an evaluation hook
        self.signal_received: int | None = None  # this process's first SIGTERM/SIGINT (set by SignalHook)
        self.stop_signal: int | None = None  # the signal every rank agreed to stop on

    @property
    def max_iter(self) -> int:
        """The run length in optimizer steps; fixed at construction (the scheduler was built from it)."""
        return self._max_iter

    def request_stop(self, signum: int) -> None:
        """End the loop after this iteration's ``after_step`` hooks (collective: every rank must ask alike)."""
        self.stop_signal = int(signum)

    # ---------------------------------------------------------------------------------------------- checkpoints
    def save(self) -> None:
        """Save a checkpoint of the current iteration (collective: every rank must call it; rank 0 writes)."""
        self.checkpointer.save(self)

    def resume_or_start(self, resume: bool = True) -> int:
        """Load the newest readable checkpoint of the run directory (``resume=False``: move old ones aside and
        start afresh). Returns the iteration training continues from."""
        return self.checkpointer.resume_or_start(self, resume)

    # ---------------------------------------------------------------------------------------------- training
    def _call(self, event: str, *args) -> None:
        for hook in self.hooks:
            getattr(hook, event)(self, *args)

    def _skip(self, losses: Mapping[str, float], grad_norm: float | None) -> bool:
        # Ask every hook before deciding, never short-circuit: a hook's vote may be a collective call.
        votes = [hook.skip_step(self, losses, grad_norm) for hook in self.hooks]
        return any(votes)

    def _wrap(self) -> nn.Module:
        """The module that runs the training forward: ``self.model``, compiled and/or inside DDP."""
        model = self.model
        if self.compile:
            # The data-dependent sizes (proposals kept by NMS, sampled RoIs, positives for the mask head) break the
            # graph, which is fine in training; dynamic=None marks a dimension dynamic once it changes, so a varying
            # RoI count costs one recompile, not one per count. Autocast is entered around the call, and dynamo
            # traces under that state (it guards on it), so under train.amp the compiled graphs run in bf16/fp16.
            model = torch.compile(model, dynamic=None)
        if not self.dist.distributed:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        # Compile inside DDP, as torch's "Where to apply torch.compile?" advises (dynamo handles the DDP wrapper
        # badly). The compiled frames run inside DDP's forward, where dynamo's DDPOptimizer may split them at DDP's
        # gradient buckets so that all-reduces overlap the compiled backward (not measured: no multi-core run here).
        return nn.parallel.DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=self.find_unused_parameters
        )

    def _step(self, model: nn.Module, batch) -> tuple[dict[str, float], float, float | None, bool]:
        """One forward/backward/update: (unweighted loss values, weighted total, grad norm or None, stepped)."""
        images, targets = batch
        images, targets = _move_to(images, self.device), _move_to(targets, self.device)
        with autocast(self.device, self.amp_dtype):
            loss_dict = model(images, targets)
        if not isinstance(loss_dict, Mapping) or not loss_dict:
            raise TypeError(f"model(images, targets) must return a non-empty dict of loss tensors in train mode, got "
                            f"{type(loss_dict).__name__}")
        names = sorted(loss_dict)
        # One device-to-host copy for all terms.
        stacked = torch.stack([loss_dict[k].detach().float().reshape(()) for k in names])
        values = dict(zip(names, stacked.tolist()))
        total = self.loss_weights.total(values)
        self.optimizer.zero_grad(set_to_none=True)
        if self._skip(values, None):
            return values, total, None, False
        loss = self.loss_weights.total(loss_dict)
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
            if self.grad_scaler is None and self._skip({}, grad_norm):
                self.optimizer.zero_grad(set_to_none=True)
                return values, total, grad_norm, False
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        return values, total, grad_norm, True

    def _next_batch(self, data_iter):
        """(batch, iterator), restarting an exhausted loader; (None, iterator) when the loader died of a signal."""
        try:
            return next(data_iter), data_iter
        except StopIteration:
            data_iter = iter(self.data_loader)
            return next(data_iter), data_iter
        except Exception:
            # Ctrl-C reaches DataLoader workers too, which then die: the loader's error is the signal's doing,
            # and the state of the last finished iteration is still good to save.
            if self.signal_received is None:
                raise
            return None, data_iter

    def train(self) -> TrainResult:
        """Run from the current iteration to ``max_iter`` (or until a hook requests a stop)."""
        start = self.iteration
        logger.info("Training iterations %d -> %d on %s, world size %d", start, self.max_iter, self.device,
                    self.dist.world_size)
        model = self._wrap()
        model.train()
        data_iter = iter(self.data_loader)
        try:
            self._call("before_train")
            self.checkpointer.restore_rng()
            total = Timer()
            while self.iteration < self.max_iter and self.stop_signal is None:
                self._call("before_step")
                t0 = time.perf_counter()
                batch, data_iter = self._next_batch(data_iter)
                if batch is None:
                    self.request_stop(self.signal_received)
                    break
                data_time = time.perf_counter() - t0
                lr = self.optimizer.param_groups[0]["lr"]
                values, loss, grad_norm, stepped = self._step(model, batch)
                if self.compile and self.iteration == start:
                    logger.info("First step with torch.compile took %.1f s (compiling; new shapes may recompile)",
                                time.perf_counter() - t0)
                if self.scheduler is not None:
                    self.scheduler.step()
                self.iteration += 1
                self.last_step = StepInfo(losses=values, loss=loss, lr=lr, grad_norm=grad_norm, data_time=data_time,
                                          time=time.perf_counter() - t0, stepped=stepped)
                self._call("after_step")
            if self.stop_signal is None:
                logger.info("Training took %s (%d iterations)", format_seconds(total.seconds()),
                            self.iteration - start)
            self._call("after_train")
        finally:
            self._call("close")
        if self.stop_signal is not None:
            return TrainResult(iteration=self.iteration, signum=self.stop_signal)
        return TrainResult(iteration=self.iteration, metrics=self.metrics)

