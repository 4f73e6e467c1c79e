"""The hook protocol: which events run, in which order, and what a hook can do to the loop."""
import pytest

from segdet.engine.hooks import HookBase

from .dummy import make_trainer


class Recorder(HookBase):
    def __init__(self, log, name, *, skip_at=None, stop_at=None, fail_at=None):
        self.log, self.name, self.skip_at, self.stop_at, self.fail_at = log, name, skip_at, stop_at, fail_at

    def before_train(self, trainer):
        self.log.append((self.name, "before_train", trainer.iteration))

    def before_step(self, trainer):
        self.log.append((self.name, "before_step", trainer.iteration))

    def skip_step(self, trainer, losses, grad_norm):
        self.log.append((self.name, "skip_step", trainer.iteration, sorted(losses), grad_norm is None))
        return trainer.iteration + 1 == self.skip_at and grad_norm is None

    def after_step(self, trainer):
        self.log.append((self.name, "after_step", trainer.iteration))
        if trainer.iteration == self.stop_at:
            trainer.request_stop(15)
        if trainer.iteration == self.fail_at:
            raise RuntimeError("hook failed")

    def after_train(self, trainer):
        self.log.append((self.name, "after_train", trainer.iteration))

    def close(self, trainer):
        self.log.append((self.name, "close", trainer.iteration))


def test_events_run_in_order_for_every_hook(tmp_path):
    log = []
    trainer = make_trainer(tmp_path, max_iter=2, checkpoint_period=0, grad_clip_norm=1.0,
                           hooks=[Recorder(log, "a"), Recorder(log, "b")])
    trainer.train()
    events = [e for e in log if e[0] == "a"]
    assert events == [
        ("a", "before_train", 0),
        ("a", "before_step", 0), ("a", "skip_step", 0, ["loss_box", "loss_cls"], True),
        ("a", "skip_step", 0, [], False), ("a", "after_step", 1),
        ("a", "before_step", 1), ("a", "skip_step", 1, ["loss_box", "loss_cls"], True),
        ("a", "skip_step", 1, [], False), ("a", "after_step", 2),
        ("a", "after_train", 2), ("a", "close", 2),
    ]
    # Hooks are called in registration order at every event.
    assert [e[0] for e in log if e[1] == "after_step"] == ["a", "b", "a", "b"]


def test_a_skip_vote_drops_the_update_but_counts_the_iteration(tmp_path):
    log = []
    trainer = make_trainer(tmp_path, max_iter=3, checkpoint_period=0, hooks=[Recorder(log, "a", skip_at=2)])
    params = {}

    class Snapshot(HookBase):
        def after_step(self, trainer):
            params[trainer.iteration] = [p.detach().clone() for p in trainer.model.parameters()]

    trainer.hooks.append(Snapshot())
    trainer.train()
    assert trainer.iteration == 3 and trainer.scheduler.last_epoch == 3
    trainable = [i for i, p in enumerate(trainer.model.parameters()) if p.is_floating_point()]
    assert all((params[1][i] == params[2][i]).all() for i in trainable)  # iteration 2 was skipped
    assert any((params[2][i] != params[3][i]).any() for i in trainable)


def test_request_stop_ends_the_loop_after_that_iteration(tmp_path):
    log = []
    trainer = make_trainer(tmp_path, max_iter=10, checkpoint_period=0,
                           hooks=[Recorder(log, "a", stop_at=2), Recorder(log, "b")])
    result = trainer.train()
    assert result.iteration == 2 and result.exit_code == 143 and result.metrics == {}
    # The iteration's remaining hooks still ran; then after_train and close.
    assert [e[:2] for e in log if e[2] == 2] == [("a", "after_step"), ("b", "after_step"), ("a", "after_train"),
                                                ("b", "after_train"), ("a", "close"), ("b", "close")]
    assert not (tmp_path / "metrics.json").exists()


def test_an_exception_skips_after_train_but_still_closes(tmp_path):
    log = []
    trainer = make_trainer(tmp_path, max_iter=10, checkpoint_period=0, hooks=[Recorder(log, "a", fail_at=2)])
    with pytest.raises(RuntimeError, match="hook failed"):
        trainer.train()
    assert [e[1] for e in log][-2:] == ["after_step", "close"]
    assert not list(tmp_path.glob("checkpoints/*.pt"))  # a failed run saves nothing
