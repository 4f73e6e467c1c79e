"""Learning-rate schedule: linear warm-up followed by step or cosine decay, stepped once per iteration."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

POLICIES = ("step", "cosine", "constant")


class WarmupLR(torch.optim.lr_scheduler.LRScheduler):
    """lr(it) = base_lr * warmup(it) * decay(it) for every parameter group.

    warmup(it) rises linearly from ``warmup_factor`` at it=0 to 1 at ``warmup_iters``;
    decay is ``gamma ** (number of milestones <= it)`` for "step", a half cosine from 1 down to ``final_factor`` at
    ``max_iter`` for "cosine", and 1 for "constant". Its state is plain numbers and lists, so it survives
    ``torch.load(weights_only=True)``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        max_iter: int,
        policy: str = "step",
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
        warmup_iters: int = 0,
        warmup_factor: float = 0.001,
        final_factor: float = 0.0,
        last_epoch: int = -1,
    ):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        if max_iter <= 0:
            raise ValueError(f"max_iter must be positive, got {max_iter}")
        if warmup_iters < 0 or not 0.0 < warmup_factor <= 1.0:
            raise ValueError(
                f"warmup_iters must be >= 0 and warmup_factor in (0, 1], got {warmup_iters} and {warmup_factor}"
            )
        milestones = [int(m) for m in milestones]
        if milestones != sorted(milestones) or any(m <= 0 for m in milestones):
            raise ValueError(f"milestones must be increasing positive iterations, got {milestones}")
        self.max_iter = int(max_iter)
        self.policy = policy
        self.milestones = milestones
        self.gamma = float(gamma)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)
        self.final_factor = float(final_factor)
        super().__init__(optimizer, last_epoch)

    def factor(self, it: int) -> float:
        """Multiplier of the base learning rate at iteration ``it`` (0-based)."""
        if self.policy == "step":
            decay = self.gamma ** sum(1 for m in self.milestones if m <= it)
        elif self.policy == "cosine":
            progress = min(it, self.max_iter) / self.max_iter
            decay = self.final_factor + (1.0 - self.final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            decay = 1.0
        if it < self.warmup_iters:
            alpha = it / self.warmup_iters
            decay *= self.warmup_factor * (1.0 - alpha) + alpha
        return decay

    # Only the position in the schedule is state; its shape (max_iter, milestones, warm-up) comes from the config of
    # the run that resumes, so a run can be extended by raising train.max_iter and resuming.
    _STATE_KEYS = ("last_epoch", "_step_count", "base_lrs", "_last_lr")

    def state_dict(self) -> dict:
        return {k: self.__dict__[k] for k in self._STATE_KEYS if k in self.__dict__}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict({k: v for k, v in state_dict.items() if k in self._STATE_KEYS})
        self._last_lr = [base * self.factor(self.last_epoch) for base in self.base_lrs]
        # The base class leaves the optimizer's lr alone until the next step(); a resumed run's first step must
        # already use the restored schedule even when the optimizer state is not loaded with it.
        for group, lr in zip(self.optimizer.param_groups, self.get_last_lr()):
            group["lr"] = lr

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    max_iter: int,
    policy: str = "step",
    steps: Sequence[float] = (0.75, 0.9),
    gamma: float = 0.1,
    warmup_iters: int = 100,
    warmup_factor: float = 0.001,
    final_factor: float = 0.0,
) -> WarmupLR:
    """WarmupLR from config values; ``steps`` are fractions of ``max_iter`` (0.75 -> decay at 75% of training)
    so one schedule file serves every run length.
    """
    if any(not 0.0 < s < 1.0 for s in steps):
        raise ValueError(f"steps must be fractions of max_iter in (0, 1), got {list(steps)}")
    milestones = sorted({max(1, round(s * max_iter)) for s in steps})
    return WarmupLR(
        optimizer,
        max_iter=max_iter,
        policy=policy,
        milestones=milestones,
        gamma=gamma,
        warmup_iters=min(warmup_iters, max_iter),
        warmup_factor=warmup_factor,
        final_factor=final_factor,
    )


def describe_max_iter_change(schedule, scheduler, *, old_max_iter: int, iteration: int) -> str:
    """What resuming at ``iteration`` does to the lr schedule when the run length changed: ``scheduler`` is the one
    ``schedule(optimizer, max_iter=...)`` built for the new run length; the old one is rebuilt from ``schedule``
    for ``old_max_iter`` on a probe optimizer. Example: "cosine schedule stretched from 2000 to 3000 iterations;
    lr at resume (iteration 1000) 0.000854, 0.0005 under the old schedule"."""
    if scheduler is None:
        return "there is no lr schedule, the lr stays as it is"
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    old = schedule(probe, max_iter=old_max_iter) if schedule is not None else None
    if not isinstance(scheduler, WarmupLR) or not isinstance(old, WarmupLR):
        return f"the lr schedule is rebuilt for the new max_iter and continues at iteration {iteration}"
    new = scheduler
    verb = "stretched" if new.max_iter > old.max_iter else "compressed"
    if new.policy == "cosine":
        shape = f"cosine schedule {verb} from {old.max_iter} to {new.max_iter} iterations"
    elif new.policy == "step" and new.milestones != old.milestones:
        shape = f"step schedule {verb}: lr drops moved from iterations {old.milestones} to {new.milestones}"
    else:
        shape = f"{new.policy} schedule unchanged"
    if new.warmup_iters != old.warmup_iters:
        shape += f", warm-up {old.warmup_iters} -> {new.warmup_iters} iterations"
    base = new.base_lrs[0]
    msg = (f"{shape}; lr at resume (iteration {iteration}) {base * new.factor(iteration):.4g}, "
           f"{base * old.factor(iteration):.4g} under the old schedule")
    if iteration >= new.max_iter:
        msg += "; the checkpoint is at or past max_iter, so no step is left to train"
    return msg
