"""The hook interface of :class:`segdet.engine.trainer.Trainer`.

The trainer owns the loop and the optimizer step; everything around them (logging, checkpoints, signals,
the non-finite-loss policy, evaluation, overlays) is a hook. Each event receives the trainer, so a hook holds no
back-reference to it. Hooks run in the order they were registered, for every event.

Events, in the order a run sees them::

    before_train                     once, after the data iterator exists, before the RNG of a resumed run is restored
    per iteration:
        before_step                  before the batch is fetched
        skip_step(losses, grad_norm) after the forward pass (and again after gradient clipping); True drops the update
        after_step                   the iteration is counted: trainer.iteration, trainer.last_step are current
    after_train                      the loop ended without an exception: max_iter reached or trainer.stop_signal set
    close                            always, last, also after an exception: release files and handlers
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..trainer import Trainer


class HookBase:
    """A no-op for every event; subclasses override the ones they need."""

    def before_train(self, trainer: Trainer) -> None:
        pass

    def before_step(self, trainer: Trainer) -> None:
        pass

    def skip_step(self, trainer: Trainer, losses: Mapping[str, float], grad_norm: float | None) -> bool:
        """Asked once after the forward pass with this step's unweighted losses (``grad_norm`` None) and, when the
        gradients are clipped without a grad scaler, once more after clipping (``losses`` empty, ``grad_norm`` the
        global L2 norm before clipping). True drops this step's update: gradients are cleared and the optimizer is
        not stepped, while the scheduler steps and the iteration counts as in any other step. Every hook is asked
        (one may run a collective), so a True from one does not spare the others. Raise to end the run."""
        return False

    def after_step(self, trainer: Trainer) -> None:
        pass

    def after_train(self, trainer: Trainer) -> None:
        pass

    def close(self, trainer: Trainer) -> None:
        pass
