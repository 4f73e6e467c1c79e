"""EvalHook: evaluation every eval_period iterations and at the end; metrics.json."""
import json

import pytest

from segdet.engine.hooks import EvalHook, HookBase

from .dummy import make_trainer


class _Evaluator:
    def __init__(self):
        self.at = []

    def __call__(self, trainer_model):
        assert not hasattr(trainer_model, "module")  # the bare model, also under DDP
        self.at.append(self.trainer.iteration)
        trainer_model.eval()  # an evaluator that leaves eval mode behind
        return {"bbox/AP": float(len(self.at))}


def _trainer(tmp_path, evaluator, **kwargs):
    trainer = make_trainer(tmp_path, checkpoint_period=0, evaluate_fn=evaluator, **kwargs)
    evaluator.trainer = trainer
    return trainer


def test_evaluates_every_period_and_at_the_end(tmp_path):
    evaluator = _Evaluator()
    modes = []

    class Mode(HookBase):
        def before_step(self, trainer):
            modes.append(trainer.model.training)

    trainer = _trainer(tmp_path, evaluator, max_iter=6, eval_period=2, hooks=[Mode()])
    result = trainer.train()
    assert evaluator.at == [2, 4, 6]  # iteration 6 once: the final evaluation
    assert all(modes)  # training resumed in train mode after each evaluation
    assert result.metrics == {"bbox/AP": 3.0}
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"iteration": 6, "bbox/AP": 3.0}


def test_without_evaluate_fn_metrics_json_holds_the_iteration(tmp_path):
    make_trainer(tmp_path, max_iter=2, checkpoint_period=0).train()
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"iteration": 2}


def test_a_stopped_run_does_not_evaluate(tmp_path):
    class StopAt(HookBase):
        def after_step(self, trainer):
            if trainer.iteration == 2:
                trainer.request_stop(15)

    evaluator = _Evaluator()
    # StopAt runs before the EvalHook here, as SignalHook does in build_trainer.
    trainer = _trainer(tmp_path, evaluator, max_iter=6, eval_period=2)
    trainer.hooks.insert(0, StopAt())
    assert trainer.train().exit_code == 143
    assert evaluator.at == []
    assert not (tmp_path / "metrics.json").exists()


def test_negative_period_is_named():
    with pytest.raises(ValueError, match="train.eval_period must be >= 0"):
        EvalHook(None, period=-2)
