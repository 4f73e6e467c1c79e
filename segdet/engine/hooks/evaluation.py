"""Evaluation during and after training, and the run's metrics.json."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from torch import nn

from .. import distributed as du
from ..checkpoint import atomic_write, unwrap_model
from ..logger import Timer, format_seconds
from .base import HookBase

if TYPE_CHECKING:
    from ..trainer import Trainer

logger = logging.getLogger("segdet.train")


class EvalHook(HookBase):
    """Runs ``evaluate_fn(bare model) -> {"bbox/AP": ..., ...}`` on every rank every ``period`` iterations (0: only
    at the end; not at an iteration where a stop was requested) and once when training finished, then writes
    ``run_dir/metrics.json`` = ``{"iteration": N, **final metrics}`` (main process). Rank 0's results are the
    ones used. ``report(iteration, metrics)`` (e.g. MetricsHook.log_metrics) receives every evaluation's results.
    A stopped run neither evaluates at the end nor writes metrics.json. Without ``evaluate_fn`` metrics.json holds
    the iteration only."""

    def __init__(self, evaluate_fn: Callable[[nn.Module], Mapping] | None = None, *, period: int = 0,
                 report: Callable[[int, Mapping], None] | None = None):
        if period < 0:
            raise ValueError(f"train.eval_period must be >= 0 (0 = only at the end), got {period}")
        self.evaluate_fn = evaluate_fn
        self.period = int(period)
        self.report = report

    def _evaluate(self, trainer: Trainer) -> dict:
        if self.evaluate_fn is None:
            return {}
        timer = Timer()
        metrics = dict(self.evaluate_fn(unwrap_model(trainer.model)) or {})
        metrics = du.broadcast_object(metrics)
        logger.info("Evaluation at iteration %d took %s: %s", trainer.iteration, format_seconds(timer.seconds()),
                    ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if isinstance(v, (int, float))))
        if self.report is not None:
            self.report(trainer.iteration, metrics)
        return metrics

    def after_step(self, trainer: Trainer) -> None:
        if (self.period and trainer.iteration % self.period == 0 and trainer.iteration < trainer.max_iter
                and trainer.stop_signal is None):
            self._evaluate(trainer)
            trainer.model.train()  # an evaluate_fn need not restore train mode

    def after_train(self, trainer: Trainer) -> None:
        if trainer.stop_signal is not None:
            return
        trainer.metrics = self._evaluate(trainer)
        if trainer.dist.is_main:
            path = trainer.run_dir / "metrics.json"
            payload = json.dumps({"iteration": trainer.iteration, **trainer.metrics}, indent=2, sort_keys=True) + "\n"
            atomic_write(path, lambda f: f.write(payload.encode()))
            logger.info("Wrote %s", path)
