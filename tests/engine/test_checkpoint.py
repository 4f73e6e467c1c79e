import os

import numpy as np
import pytest
import torch
from torch import nn

from segdet.engine.checkpoint import (
    CheckpointError, find_last_checkpoint, list_checkpoints, load_checkpoint, read_checkpoint, save_checkpoint,
)
from segdet.engine.lr_scheduler import build_lr_scheduler
from segdet.engine.optim import build_sgd
from segdet.engine.rng import get_rng_state, set_rng_state

from .dummy import DummyDetector

CONFIG = {"_target_": "tests.engine.dummy.DummyDetector", "num_classes": 3, "width": 8}


def _state(model, **extra):
    return {"model": model.state_dict(), "model_config": CONFIG, **extra}


def test_save_is_atomic_keeps_last_n_and_finds_newest(tmp_path):
    model = DummyDetector()
    for it in (10, 20, 30, 40):
        save_checkpoint(tmp_path, _state(model, iteration=it), iteration=it, keep=2)
    ckpt_dir = tmp_path / "checkpoints"
    assert sorted(os.listdir(ckpt_dir)) == ["model_0000030.pt", "model_0000040.pt"]
    assert find_last_checkpoint(tmp_path) == ckpt_dir / "model_0000040.pt"


def test_half_written_temporary_file_is_ignored(tmp_path):
    model = DummyDetector()
    save_checkpoint(tmp_path, _state(model), iteration=5)
    # What a SIGKILL during torch.save leaves behind: a truncated temporary file.
    (tmp_path / "checkpoints" / ".model_0000010.pt.tmp-1234").write_bytes(b"PK\x03\x04garbage")
    assert find_last_checkpoint(tmp_path).name == "model_0000005.pt"
    assert [p.name for p in list_checkpoints(tmp_path)] == ["model_0000005.pt"]


def test_newest_file_wins_over_a_stale_pointer_from_older_runs(tmp_path):
    model = DummyDetector()
    save_checkpoint(tmp_path, _state(model), iteration=5)
    save_checkpoint(tmp_path, _state(model), iteration=10)
    # Run directories written before the pointer file was dropped may still hold one; it is never read.
    (tmp_path / "checkpoints" / "last_checkpoint").write_text("model_0000005.pt\n")
    assert find_last_checkpoint(tmp_path).name == "model_0000010.pt"
    assert find_last_checkpoint(tmp_path / "nothing-here") is None


def test_round_trip_with_optimizer_scheduler_and_rng(tmp_path):
    torch.manual_seed(0)
    model = DummyDetector()
    opt = build_sgd(model, lr=0.1)
    sched = build_lr_scheduler(opt, max_iter=100, warmup_iters=10)
    model(*_batch()).__getitem__("loss_cls").backward()
    opt.step()
    for _ in range(7):
        sched.step()
    rng = get_rng_state()
    expected = torch.rand(3)
    path = save_checkpoint(tmp_path, _state(model, optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                                             rng=[rng], iteration=7), iteration=7)
    model2 = DummyDetector(width=8)
    opt2 = build_sgd(model2, lr=0.1)
    sched2 = build_lr_scheduler(opt2, max_iter=100, warmup_iters=10)
    ckpt = load_checkpoint(path, model2, opt2, sched2, model_config=CONFIG)
    assert ckpt["iteration"] == 7
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    assert sched2.last_epoch == 7 and opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    set_rng_state(ckpt["rng"][0])
    assert torch.equal(torch.rand(3), expected)


def _batch():
    images = [torch.randint(0, 255, (3, 16, 16), dtype=torch.uint8) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[1.0, 1.0, 8.0, 8.0]]), "labels": torch.tensor([1])} for _ in range(2)]
    return images, targets


def test_key_and_shape_mismatch_are_listed(tmp_path):
    path = save_checkpoint(tmp_path, _state(DummyDetector(width=8)), iteration=1)
    other = DummyDetector(width=8)
    other.extra = nn.Linear(2, 2)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, other, model_config=CONFIG)
    assert "2 keys missing from the checkpoint: extra.weight, extra.bias" in str(err.value)

    sd = DummyDetector(width=8).state_dict()
    sd["unused.weight"] = torch.zeros(1)
    path = save_checkpoint(tmp_path / "b", {"model": sd}, iteration=1)
    with pytest.raises(CheckpointError, match=r"1 unexpected keys in the checkpoint: unused.weight"):
        load_checkpoint(path, DummyDetector(width=8))


def test_other_model_config_is_named(tmp_path):
    path = save_checkpoint(tmp_path, _state(DummyDetector(width=8)), iteration=1)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, DummyDetector(width=4), model_config={**CONFIG, "width": 4})
    msg = str(err.value)
    assert "conv.weight: checkpoint (8, 3, 3, 3) vs model (4, 3, 3, 3)" in msg
    assert "another model config" in msg and "width: checkpoint 8, model 4" in msg


def test_same_weights_other_config_loads_with_warning(tmp_path, caplog):
    path = save_checkpoint(tmp_path, _state(DummyDetector()), iteration=1)
    load_checkpoint(path, DummyDetector(), model_config={**CONFIG, "score_thresh": 0.5})
    assert "score_thresh: only in model" in caplog.text


def test_pickled_objects_are_refused_by_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": DummyDetector().state_dict(), "extra": np.arange(3).astype(object)}, path)
    with pytest.raises(CheckpointError, match=r"evil.pt with torch.load\(weights_only=True\)"):
        load_checkpoint(path, DummyDetector())


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        read_checkpoint(tmp_path / "nope.pt")
    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="must be a dict with a 'model' state_dict"):
        read_checkpoint(tmp_path / "plain.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="text.pt"):
        read_checkpoint(tmp_path / "text.pt")


def test_optimizer_state_of_other_model_is_rejected(tmp_path):
    small = DummyDetector(width=8)
    path = save_checkpoint(tmp_path, _state(small, optimizer=build_sgd(nn.Linear(2, 2), lr=0.1).state_dict()),
                           iteration=1)
    with pytest.raises(CheckpointError, match="optimizer state in checkpoint"):
        load_checkpoint(path, DummyDetector(width=8), build_sgd(DummyDetector(width=8), lr=0.1))
