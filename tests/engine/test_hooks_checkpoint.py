"""CheckpointHook: when checkpoints are written."""
import json

import pytest

from segdet.engine.checkpoint import list_checkpoints, read_checkpoint
from segdet.engine.hooks import CheckpointHook, HookBase

from .dummy import make_trainer


class _SaveLog(HookBase):
    """Records the iterations at which a save happened, by wrapping the trainer's save()."""

    def __init__(self):
        self.saved = []

    def before_train(self, trainer):
        save = trainer.save

        def logged():
            self.saved.append(trainer.iteration)
            save()

        trainer.save = logged


def test_saves_every_period_and_once_at_the_end(tmp_path):
    log = _SaveLog()
    trainer = make_trainer(tmp_path, max_iter=7, checkpoint_period=3, keep_checkpoints=0)
    trainer.hooks.insert(0, log)
    trainer.train()
    assert log.saved == [3, 6, 7]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["model_0000007.pt", "model_0000006.pt",
                                                             "model_0000003.pt"]


def test_period_dividing_max_iter_saves_the_last_iteration_once(tmp_path):
    log = _SaveLog()
    trainer = make_trainer(tmp_path, max_iter=6, checkpoint_period=3)
    trainer.hooks.insert(0, log)
    trainer.train()
    assert log.saved == [3, 6]


def test_period_zero_saves_only_at_the_end_and_keep_limits_files(tmp_path):
    log = _SaveLog()
    trainer = make_trainer(tmp_path, max_iter=5, checkpoint_period=0)
    trainer.hooks.insert(0, log)
    trainer.train()
    assert log.saved == [5]
    trainer = make_trainer(tmp_path / "keep", max_iter=8, checkpoint_period=2, keep_checkpoints=2)
    trainer.train()
    assert [p.name for p in list_checkpoints(tmp_path / "keep")] == ["model_0000008.pt", "model_0000006.pt"]


def test_a_stopped_run_saves_the_iteration_it_stopped_at(tmp_path):
    class StopAt(HookBase):
        def after_step(self, trainer):
            if trainer.iteration == 4:
                trainer.request_stop(2)

    log = _SaveLog()
    trainer = make_trainer(tmp_path, max_iter=10, checkpoint_period=3, hooks=[StopAt()])
    trainer.hooks.insert(0, log)
    assert trainer.train().exit_code == 130
    assert log.saved == [3, 4]
    assert read_checkpoint(list_checkpoints(tmp_path)[0])["iteration"] == 4


def test_resumed_run_does_not_save_its_start_again(tmp_path):
    make_trainer(tmp_path, max_iter=4, checkpoint_period=0).train()
    log = _SaveLog()
    trainer = make_trainer(tmp_path, max_iter=4, checkpoint_period=0)
    trainer.hooks.insert(0, log)
    trainer.resume_or_start()
    trainer.train()
    assert log.saved == []


def test_negative_period_is_named():
    with pytest.raises(ValueError, match="train.checkpoint_period must be >= 0"):
        CheckpointHook(-1)


def test_an_iteration_is_logged_before_its_checkpoint_is_written(tmp_path):
    """build_trainer's order: a run killed right after a save has the saved iteration's record, so the resumed
    run (which drops records past its checkpoint) keeps a complete metrics.jsonl."""
    logged_at_save = []

    class Probe(HookBase):
        def before_train(self, trainer):
            save = trainer.save

            def probed():
                lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
                logged_at_save.append(max((json.loads(line)["iteration"] for line in lines), default=0))
                save()

            trainer.save = probed

    trainer = make_trainer(tmp_path, max_iter=4, checkpoint_period=2)
    trainer.hooks.insert(0, Probe())
    trainer.train()
    assert logged_at_save == [2, 4]
