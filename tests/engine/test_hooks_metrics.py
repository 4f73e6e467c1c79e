"""MetricsHook: what goes into metrics.jsonl, and that a resumed run continues the file."""
import json

import torch

from segdet.engine.distributed import DistInfo
from segdet.engine.hooks import HookBase

from .dummy import make_trainer


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_records_hold_the_steps_scalars(tmp_path):
    trainer = make_trainer(tmp_path, max_iter=3, checkpoint_period=0, grad_clip_norm=10.0,
                           loss_weights={"loss_cls": 0.5})
    steps = []

    class Keep(HookBase):
        def after_step(self, trainer):
            steps.append(trainer.last_step)

    trainer.hooks.append(Keep())
    trainer.train()
    records = _records(tmp_path)
    assert [r["iteration"] for r in records] == [1, 2, 3]
    for r, step in zip(records, steps):
        assert set(r) == {"iteration", "loss_box", "loss_cls", "loss", "lr", "time", "data_time", "memory_mb",
                          "grad_norm"}
        assert r["loss_cls"] == step.losses["loss_cls"]  # as the model returned it
        assert r["loss"] == step.loss == step.losses["loss_box"] + 0.5 * step.losses["loss_cls"]
        assert r["lr"] == step.lr and r["grad_norm"] == step.grad_norm
        assert r["time"] >= r["data_time"] >= 0 and r["memory_mb"] > 0


def test_evaluation_results_are_logged_as_val(tmp_path):
    trainer = make_trainer(tmp_path, max_iter=2, checkpoint_period=0, evaluate_fn=lambda m: {"bbox/AP": 1.5})
    trainer.train()
    assert _records(tmp_path)[-1] == {"iteration": 2, "val/bbox/AP": 1.5}


def test_resumed_run_drops_records_past_its_checkpoint(tmp_path):
    make_trainer(tmp_path, max_iter=4, checkpoint_period=2).train()
    # As if the process had been killed after logging iteration 4 but before checkpoint 4 was written.
    (tmp_path / "checkpoints" / "model_0000004.pt").unlink()
    trainer = make_trainer(tmp_path, max_iter=4, checkpoint_period=2)
    assert trainer.resume_or_start() == 2
    trainer.train()
    assert [r["iteration"] for r in _records(tmp_path) if "loss" in r] == [1, 2, 3, 4]


def test_nothing_is_written_off_the_main_process(tmp_path):
    trainer = make_trainer(tmp_path, max_iter=2, checkpoint_period=0,
                           dist=DistInfo(rank=1, world_size=1, local_rank=1, device=torch.device("cpu")))
    trainer.train()
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "metrics.json").exists()
