"""The loop itself with the standard hooks (segdet.engine.defaults.build_trainer) on a tiny dummy detector."""
import functools
import json
import logging

import pytest
import torch

from segdet.engine.checkpoint import find_last_checkpoint, list_checkpoints, read_checkpoint
from segdet.engine.hooks import HookBase
from segdet.engine.lr_scheduler import build_lr_scheduler
from segdet.engine.trainer import NonFiniteLossError

from .dummy import make_trainer


def test_trains_logs_checkpoints_and_writes_metrics(tmp_path):
    trainer = make_trainer(tmp_path, evaluate_fn=lambda m: {"bbox/AP": 12.5, "segm/AP": 10.0})
    before = [p.detach().clone() for p in trainer.model.parameters()]
    result = trainer.train()
    assert result.iteration == 6 and result.exit_code == 0
    assert result.metrics == {"bbox/AP": 12.5, "segm/AP": 10.0}
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "loss" in r]
    assert [r["iteration"] for r in train_records] == [1, 2, 3, 4, 5, 6]
    for key in ("loss_cls", "loss_box", "lr", "time", "data_time", "memory_mb"):
        assert key in train_records[0]
    assert train_records[0]["lr"] < train_records[2]["lr"]  # warm-up
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"iteration": 6, "bbox/AP": 12.5, "segm/AP": 10.0}
    assert [p.name for p in list_checkpoints(tmp_path)] == ["model_0000006.pt", "model_0000003.pt"]
    # Only checkpoint files: the newest is found by listing, there is no pointer file.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["model_0000003.pt", "model_0000006.pt"]
    ckpt = read_checkpoint(find_last_checkpoint(tmp_path))
    assert ckpt["iteration"] == 6 and ckpt["max_iter"] == 6


class _CrashAfter(HookBase):
    """Raises after ``iteration``'s other hooks ran (registered last): a process killed right after a checkpoint."""

    def __init__(self, iteration):
        self.iteration = iteration

    def after_step(self, trainer):
        if trainer.iteration == self.iteration:
            raise KeyboardInterrupt("killed")


def test_resume_continues_exactly(tmp_path):
    straight = make_trainer(tmp_path / "a")
    straight.train()

    first = make_trainer(tmp_path / "b", hooks=[_CrashAfter(3)])
    with pytest.raises(KeyboardInterrupt):
        first.train()
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["model_0000003.pt"]
    resumed = make_trainer(tmp_path / "b")
    assert resumed.resume_or_start(resume=True) == 3
    saved_state, loaded_state = first.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert saved_state.keys() == loaded_state.keys()
    assert all(torch.equal(saved_state[k]["momentum_buffer"], loaded_state[k]["momentum_buffer"]) for k in saved_state)
    assert resumed.scheduler.last_epoch == 3
    resumed.train()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_resume_false_starts_afresh(tmp_path):
    make_trainer(tmp_path).train()
    again = make_trainer(tmp_path)
    assert again.resume_or_start(resume=False) == 0
    assert list_checkpoints(tmp_path) == []
    assert list((tmp_path).glob("checkpoints.replaced-*"))


def test_corrupt_newest_checkpoint_falls_back_to_previous(tmp_path):
    make_trainer(tmp_path).train()
    newest = find_last_checkpoint(tmp_path)
    newest.write_bytes(newest.read_bytes()[:100])
    trainer = make_trainer(tmp_path)
    assert trainer.resume_or_start(resume=True) == 3


def test_checkpoint_without_max_iter_still_resumes(tmp_path):
    """Checkpoints written before the trainer stored max_iter load as before, without a schedule message."""
    make_trainer(tmp_path, max_iter=4, checkpoint_period=0).train()
    path = find_last_checkpoint(tmp_path)
    ckpt = read_checkpoint(path)
    del ckpt["max_iter"]
    torch.save(ckpt, path)
    trainer = make_trainer(tmp_path, max_iter=6)
    assert trainer.resume_or_start() == 4
    assert trainer.train().iteration == 6


def test_nonfinite_parameters_are_never_saved(tmp_path):
    trainer = make_trainer(tmp_path, max_iter=4, checkpoint_period=2)
    trainer.train()
    with torch.no_grad():
        trainer.model.cls.weight[0, 0] = float("inf")
    trainer.iteration = 5
    with pytest.raises(NonFiniteLossError, match=r"Non-finite parameters at iteration 5 \(cls.weight\)"):
        trainer.save()
    assert find_last_checkpoint(tmp_path).name == "model_0000004.pt"


# ------------------------------------------------------------------------------------------------- max_iter
def test_scheduler_is_built_with_the_trainers_max_iter(tmp_path):
    seen = []

    def schedule(optimizer, *, max_iter):
        seen.append(max_iter)
        return build_lr_scheduler(optimizer, max_iter=max_iter, policy="cosine", warmup_iters=0)

    trainer = make_trainer(tmp_path, max_iter=7, schedule=schedule)
    assert seen == [7] and trainer.scheduler.max_iter == 7
    with pytest.raises(AttributeError):
        trainer.max_iter = 3  # one owner: fixed when the scheduler was built from it
    with pytest.raises(ValueError, match="max_iter must be a positive"):
        make_trainer(tmp_path, max_iter=0)


@pytest.mark.parametrize("new_max_iter, words", [(8, "stretched from 4 to 8"), (3, "compressed from 4 to 3")])
def test_resume_with_other_max_iter_says_what_it_does_to_the_schedule(tmp_path, caplog, new_max_iter, words):
    cosine = functools.partial(build_lr_scheduler, policy="cosine", warmup_iters=0)
    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path, max_iter=4, checkpoint_period=2, schedule=cosine, hooks=[_CrashAfter(2)]).train()
    resumed = make_trainer(tmp_path, max_iter=new_max_iter, checkpoint_period=0, schedule=cosine)
    with caplog.at_level(logging.WARNING, logger="segdet.train"):
        assert resumed.resume_or_start() == 2
    new_lr = 0.05 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 2 / new_max_iter))).item()
    old_lr = 0.05 * 0.5  # cosine at half-way of the 4-iteration run
    message = (f"train.max_iter is {new_max_iter}, the checkpoint's run had 4: cosine schedule {words} iterations; "
               f"lr at resume (iteration 2) {new_lr:.4g}, {old_lr:.4g} under the old schedule")
    assert message in caplog.text
    # The message tells the truth: the resumed run's next step uses that lr.
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(new_lr)
    assert resumed.train().iteration == new_max_iter


def test_resume_past_a_smaller_max_iter_says_nothing_is_left(tmp_path, caplog):
    make_trainer(tmp_path, max_iter=4, checkpoint_period=0).train()
    resumed = make_trainer(tmp_path, max_iter=2)
    with caplog.at_level(logging.WARNING, logger="segdet.train"):
        assert resumed.resume_or_start() == 4
    assert "step schedule compressed: lr drops moved from iterations [2] to [1]" in caplog.text
    assert "no step is left to train" in caplog.text


# ---------------------------------------------------------------------------------------------- loss weights
def _one_step_grads(tmp_path, **kwargs):
    trainer = make_trainer(tmp_path, max_iter=1, checkpoint_period=0, **kwargs)
    grads = {}
    trainer.model.box.weight.register_hook(lambda g: grads.setdefault("box", g.clone()))
    trainer.model.cls.weight.register_hook(lambda g: grads.setdefault("cls", g.clone()))
    trainer.train()
    return trainer, grads


def test_loss_weights_scale_each_term_and_logged_terms_stay_unweighted(tmp_path):
    plain, g1 = _one_step_grads(tmp_path / "a")
    weighted, g2 = _one_step_grads(tmp_path / "b", loss_weights={"loss_box": 3.0, "loss_cls": 1.0})
    torch.testing.assert_close(g2["box"], 3.0 * g1["box"])
    assert torch.equal(g2["cls"], g1["cls"])
    a, b = plain.last_step, weighted.last_step
    assert a.losses == b.losses  # unweighted terms
    assert b.loss == pytest.approx(b.losses["loss_cls"] + 3.0 * b.losses["loss_box"])
    assert a.loss == sum(a.losses.values())
    record = json.loads((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["loss_box"] == b.losses["loss_box"] and record["loss"] == pytest.approx(b.loss)


def test_unknown_loss_weight_fails_at_the_first_step_naming_it(tmp_path):
    trainer = make_trainer(tmp_path, loss_weights={"loss_bx": 2.0})
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with pytest.raises(ValueError, match=r"\['loss_bx'\].*\['loss_box', 'loss_cls'\]"):
        trainer.train()
    assert trainer.iteration == 0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert list_checkpoints(tmp_path) == []


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "2", True])
def test_bad_loss_weight_value_is_named(tmp_path, bad):
    with pytest.raises(ValueError, match="train.loss_weights.loss_box must be a finite number >= 0"):
        make_trainer(tmp_path, loss_weights={"loss_box": bad})
