"""Per-iteration scalars into metrics.jsonl, TensorBoard and the console (segdet.engine.logger.MetricsLogger)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..logger import MetricsLogger, max_memory_mb
from .base import HookBase

if TYPE_CHECKING:
    from ..trainer import Trainer


class MetricsHook(HookBase):
    """Logs every iteration on the main process: the model's loss terms as returned (unweighted, ``loss_*``),
    ``loss`` = their weighted sum (what the optimizer minimised; the plain sum under the default weights), ``lr``,
    ``time`` and ``data_time`` (seconds), ``memory_mb`` and, with gradient clipping, ``grad_norm``. Records are means
    over ``log_period`` iterations (see MetricsLogger). Register it before the checkpoint hook, so an iteration is
    logged before a checkpoint that contains it is written: a resumed run then finds every record it keeps.

    Args:
        log_period: iterations between metrics.jsonl records / console lines.
        tensorboard: also write TensorBoard events to ``run_dir/tb``.
        progress_bar: None = tqdm bar when stderr is a terminal, else plain lines.
    """

    def __init__(self, *, log_period: int = 20, tensorboard: bool = True, progress_bar: bool | None = None):
        self.log_period = int(log_period)
        self.tensorboard = tensorboard
        self.progress_bar = progress_bar
        self._logger: MetricsLogger | None = None

    def before_train(self, trainer: Trainer) -> None:
        self._logger = MetricsLogger(
            run_dir=trainer.run_dir, max_iter=trainer.max_iter, start_iter=trainer.iteration,
            log_period=self.log_period, enabled=trainer.dist.is_main, tensorboard=self.tensorboard,
            progress_bar=self.progress_bar,
        )

    def after_step(self, trainer: Trainer) -> None:
        step = trainer.last_step
        scalars = {**step.losses, "loss": step.loss, "lr": step.lr, "data_time": step.data_time, "time": step.time,
                   "memory_mb": max_memory_mb(trainer.device)}
        if step.grad_norm is not None:
            scalars["grad_norm"] = step.grad_norm
        self._logger.log_iteration(trainer.iteration, scalars)

    def log_metrics(self, iteration: int, metrics: Mapping[str, float]) -> None:
        """Evaluation results as ``val/<name>`` (for the evaluation hook; a no-op outside training)."""
        if self._logger is not None:
            self._logger.log_metrics(iteration, dict(metrics))

    def close(self, trainer: Trainer) -> None:
        if self._logger is not None:
            self._logger.close()
            self._logger = None
