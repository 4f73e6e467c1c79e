"""NonFiniteHook: a NaN/Inf loss or gradient norm stops the run naming term and iteration, or is skipped."""
import math

import pytest
import torch

from segdet.engine.checkpoint import find_last_checkpoint, read_checkpoint
from segdet.engine.hooks import HookBase, NonFiniteHook
from segdet.engine.trainer import NonFiniteLossError

from .dummy import DummyDetector, make_trainer


def _hook(trainer) -> NonFiniteHook:
    (hook,) = [h for h in trainer.hooks if isinstance(h, NonFiniteHook)]
    return hook


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, max_iter=10, checkpoint_period=2, model_kwargs={"nan_at_call": 4})
    with pytest.raises(NonFiniteLossError, match=r"loss_box at iteration 4 \(loss_box=nan\); stopping; set "
                                                 r"train.skip_nonfinite=true .* checkpoint \(iteration 2\) is kept"):
        trainer.train()
    last = find_last_checkpoint(tmp_path)
    assert last.name == "model_0000002.pt"
    ckpt = read_checkpoint(last)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_skip_nonfinite_up_to_limit(tmp_path):
    trainer = make_trainer(tmp_path, max_iter=10, checkpoint_period=0, model_kwargs={"nan_at_call": 4},
                           skip_nonfinite=True, max_nonfinite_skips=3)
    with pytest.raises(NonFiniteLossError, match="at iteration 7 .* after 3 skipped steps"):
        trainer.train()
    assert _hook(trainer).skips == 3 and trainer.iteration == 6
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_a_skipped_step_leaves_the_weights_alone(tmp_path):
    trainer = make_trainer(tmp_path, max_iter=5, checkpoint_period=0, model_kwargs={"nan_at_call": 5},
                           skip_nonfinite=True, max_nonfinite_skips=1)
    snapshots = []

    class Snapshot(HookBase):
        def after_step(self, trainer):
            snapshots.append([p.detach().clone() for p in trainer.model.parameters()])

    trainer.hooks.append(Snapshot())
    assert trainer.train().iteration == 5
    assert not trainer.last_step.stepped and math.isnan(trainer.last_step.losses["loss_box"])
    assert all(torch.equal(a, b) for a, b in zip(snapshots[3], snapshots[4]))
    assert any(not torch.equal(a, b) for a, b in zip(snapshots[2], snapshots[3]))


class _NaNGradient(DummyDetector):
    """A finite loss whose gradient is NaN from the 3rd call: d/dw sqrt(0 * w) = inf * 0."""

    def forward(self, images, targets=None):
        out = super().forward(images, targets)
        if self.training and self.calls >= 3:
            out["loss_box"] = out["loss_box"] + torch.sqrt(self.box.weight.sum() * 0)
        return out


def test_nonfinite_gradient_norm_is_caught_after_clipping(tmp_path):
    trainer = make_trainer(tmp_path, max_iter=6, checkpoint_period=0, grad_clip_norm=1.0, model_cls=_NaNGradient)
    with pytest.raises(NonFiniteLossError, match=r"grad_norm at iteration 3 \(grad_norm=nan\)"):
        trainer.train()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
