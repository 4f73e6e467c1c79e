"""The standard trainer: the loop plus the hooks every segdet run uses, from the ``train`` config's plain values."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from . import distributed as du
from .hooks import CheckpointHook, EvalHook, HookBase, MetricsHook, NonFiniteHook, SignalHook
from .trainer import Trainer


def build_trainer(
    *, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Callable | None, data_loader: Iterable,
    run_dir: str | os.PathLike, max_iter: int, device: torch.device | str = "cpu", dist: du.DistInfo | None = None,
    sampler=None, evaluate_fn: Callable[[nn.Module], dict] | None = None, checkpoint_extra: Mapping | None = None,
    hooks: Sequence[HookBase] = (), checkpoint_period: int = 0, keep_checkpoints: int = 3, eval_period: int = 0,
    log_period: int = 20, grad_clip_norm: float = 0.0, amp: str = "none", skip_nonfinite: bool = False,
    max_nonfinite_skips: int = 10, loss_weights: Mapping[str, float] | None = None,
    find_unused_parameters: bool = False, compile: bool = False, progress_bar: bool | None = None,
    tensorboard: bool = True,
) -> Trainer:
    """A :class:`Trainer` with, in this order: MetricsHook (log_period, tensorboard, progress_bar), CheckpointHook
    (checkpoint_period), SignalHook, NonFiniteHook (skip_nonfinite, max_nonfinite_skips), EvalHook (evaluate_fn,
    eval_period; its results are logged by the MetricsHook), then ``hooks`` (e.g. an OverlayHook). The order is
    what makes an iteration logged before it is checkpointed and a stopped run saved before it says so.

    The keyword arguments after ``hooks`` are the ``train`` config's keys (besides batch_size), see conf/train.yaml;
    the rest are built objects (see :class:`Trainer`)."""
    metrics = MetricsHook(log_period=log_period, tensorboard=tensorboard, progress_bar=progress_bar)
    standard = [
        metrics,
        CheckpointHook(checkpoint_period),
        SignalHook(),
        NonFiniteHook(skip=skip_nonfinite, max_skips=max_nonfinite_skips),
        EvalHook(evaluate_fn, period=eval_period, report=metrics.log_metrics),
    ]
    return Trainer(
        model=model, optimizer=optimizer, schedule=schedule, data_loader=data_loader, run_dir=run_dir,
        max_iter=max_iter, device=device, dist=dist, sampler=sampler, hooks=[*standard, *hooks],
        grad_clip_norm=grad_clip_norm, amp=amp, loss_weights=loss_weights,
        find_unused_parameters=find_unused_parameters, keep_checkpoints=keep_checkpoints,
        checkpoint_extra=checkpoint_extra, compile=compile,
    )
