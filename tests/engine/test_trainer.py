import json
import signal

import pytest
import torch

from segdet.engine.checkpoint import find_last_checkpoint, list_checkpoints, read_checkpoint
from segdet.engine.lr_scheduler import build_lr_scheduler
from segdet.engine.optim import build_sgd
from segdet.engine.rng import seed_all
from segdet.engine.trainer import NonFiniteLossError, Trainer

from .dummy import DummyDetector, make_loader


def make_trainer(run_dir, *, max_iter=6, checkpoint_period=3, evaluate_fn=None, model_kwargs=None, **kwargs):
    seed_all(0)
    model = DummyDetector(**(model_kwargs or {}))
    optimizer = build_sgd(model, lr=0.05, momentum=0.9, weight_decay=1e-4)
    scheduler = build_lr_scheduler(optimizer, max_iter=max_iter, policy="step", steps=(0.5,), warmup_iters=2)
    loader, sampler = make_loader()
    return Trainer(model=model, optimizer=optimizer, scheduler=scheduler, data_loader=loader, sampler=sampler,
                   run_dir=run_dir, max_iter=max_iter, checkpoint_period=checkpoint_period, log_period=1,
                   evaluate_fn=evaluate_fn, progress_bar=False, tensorboard=False, **kwargs)


def test_trains_logs_checkpoints_and_writes_metrics(tmp_path):
    trainer = make_trainer(tmp_path, evaluate_fn=lambda m: {"bbox/AP": 12.5, "segm/AP": 10.0})
    before = [p.detach().clone() for p in trainer.model.parameters()]
    result = trainer.train()
    assert result.iteration == 6 and result.exit_code == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "loss" in r]
    assert [r["iteration"] for r in train_records] == [1, 2, 3, 4, 5, 6]
    for key in ("loss_cls", "loss_box", "lr", "time", "data_time", "memory_mb"):
        assert key in train_records[0]
    assert train_records[0]["lr"] < train_records[2]["lr"]  # warm-up
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"iteration": 6, "bbox/AP": 12.5, "segm/AP": 10.0}
    assert [p.name for p in list_checkpoints(tmp_path)] == ["model_0000006.pt", "model_0000003.pt"]
    assert (tmp_path / "checkpoints" / "last_checkpoint").read_text().strip() == "model_0000006.pt"


def test_resume_continues_exactly(tmp_path):
    straight = make_trainer(tmp_path / "a")
    straight.train()

    first = make_trainer(tmp_path / "b", max_iter=6, checkpoint_period=3)
    first.max_iter = 3  # stop after the first checkpoint, as if killed right after it
    first.train()
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


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, max_iter=10, checkpoint_period=2, model_kwargs={"nan_at_call": 4})
    with pytest.raises(NonFiniteLossError, match=r"loss_box at iteration 4"):
        trainer.train()
    last = find_last_checkpoint(tmp_path)
    assert last.name == "model_0000002.pt"
    ckpt = read_checkpoint(last)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_skip_nonfinite_up_to_limit(tmp_path):
    trainer = make_trainer(tmp_path, max_iter=10, checkpoint_period=0, model_kwargs={"nan_at_call": 4},
                           skip_nonfinite=True, max_nonfinite_skips=3)
    with pytest.raises(NonFiniteLossError, match="after 3 skipped steps"):
        trainer.train()
    assert trainer.nonfinite_skips == 3
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_sigterm_saves_checkpoint_and_reports_exit_code(tmp_path):
    trainer = make_trainer(tmp_path, max_iter=10, checkpoint_period=0, model_kwargs={"signal_at_call": 4})
    result = trainer.train()
    assert result.signum == signal.SIGTERM and result.exit_code == 143
    assert result.iteration == 4
    assert find_last_checkpoint(tmp_path).name == "model_0000004.pt"
    assert not (tmp_path / "metrics.json").exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_corrupt_newest_checkpoint_falls_back_to_previous(tmp_path):
    make_trainer(tmp_path).train()
    newest = find_last_checkpoint(tmp_path)
    newest.write_bytes(newest.read_bytes()[:100])
    trainer = make_trainer(tmp_path)
    assert trainer.resume_or_start(resume=True) == 3


def test_nonfinite_parameters_are_never_saved(tmp_path):
    trainer = make_trainer(tmp_path, max_iter=4, checkpoint_period=2)
    trainer.train()
    with torch.no_grad():
        trainer.model.cls.weight[0, 0] = float("inf")
    trainer.iteration = 5
    with pytest.raises(NonFiniteLossError, match=r"Non-finite parameters at iteration 5 \(cls.weight\)"):
        trainer.save()
    assert find_last_checkpoint(tmp_path).name == "model_0000004.pt"


class _LoaderKilledBySigint:
    """What a DataLoader does on Ctrl-C: its workers get the SIGINT too and die, so the next fetch fails."""

    def __init__(self, loader, fail_at):
        self.loader, self.fail_at = loader, fail_at

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i == self.fail_at:
                signal.raise_signal(signal.SIGINT)
                raise RuntimeError("DataLoader worker (pid 1234) exited unexpectedly")
            yield batch


def test_sigint_that_kills_the_loader_still_saves(tmp_path):
    trainer = make_trainer(tmp_path, max_iter=10, checkpoint_period=0)
    trainer.data_loader = _LoaderKilledBySigint(trainer.data_loader, fail_at=3)
    result = trainer.train()
    assert result.exit_code == 130 and result.iteration == 3
    assert read_checkpoint(find_last_checkpoint(tmp_path))["iteration"] == 3
