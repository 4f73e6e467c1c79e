"""What a NaN/Inf loss or gradient norm does to the run: stop (the default) or skip a bounded number of steps."""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .. import distributed as du
from .base import HookBase

if TYPE_CHECKING:
    from ..trainer import Trainer

logger = logging.getLogger("segdet.train")


class NonFiniteHook(HookBase):
    """Stops the run with NonFiniteLossError naming the term(s), their values and the iteration, or with ``skip``
    drops such steps' updates, at most ``max_skips`` times over the run, then stops. Every rank agrees first (one
    small all-reduce per check), so ranks never skip or stop alone and their replicas stay equal.

    ``skips`` counts the steps dropped so far by this process (it is not stored in checkpoints)."""

    def __init__(self, *, skip: bool = False, max_skips: int = 10):
        self.skip = bool(skip)
        self.max_skips = int(max_skips)
        self.skips = 0

    def skip_step(self, trainer: Trainer, losses: Mapping[str, float], grad_norm: float | None) -> bool:
        from ..trainer import NonFiniteLossError

        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        if grad_norm is not None and not math.isfinite(grad_norm):
            bad.append("grad_norm")
        (any_bad,) = du.any_across_ranks(bool(bad))
        if not any_bad:
            return False
        where = f"{', '.join(bad) or 'a loss term on another rank'} at iteration {trainer.iteration + 1}"
        values = ", ".join(f"{k}={losses.get(k, grad_norm)}" for k in bad)
        if self.skip and self.skips < self.max_skips:
            self.skips += 1
            logger.warning("Non-finite %s (%s): skipping the step (%d/%d skips allowed)", where, values,
                           self.skips, self.max_skips)
            return True
        extra = (f" after {self.skips} skipped steps (train.max_nonfinite_skips)" if self.skip
                 else "; set train.skip_nonfinite=true to skip such steps")
        saved = trainer.checkpointer.last_saved_iter
        last = f"iteration {saved}" if saved is not None else "none yet"
        raise NonFiniteLossError(
            f"Non-finite loss: {where} ({values}); stopping{extra}. The last good checkpoint ({last}) is kept."
        )
