"""With the real model and data pipeline: 6 iterations straight == 3 iterations, then resume to 6 (CPU)."""
import importlib.util
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from segdet.engine.checkpoint import find_last_checkpoint, read_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TINY = ["data.generator.image_size=64", "data.generator.num_train=8", "data.generator.num_val=2",
        "data.num_workers=0", "model.min_size=64", "model.max_size=64", "train.batch_size=2",
        "eval.num_overlays=0", "train.checkpoint_period=0", "optim.lr=0.005",
        # constant lr: a 3-iteration run then has the same schedule as the first half of a 6-iteration one
        "schedule=constant", "schedule.warmup_iters=2", "schedule.warmup_factor=0.1"]


def _train_script():
    spec = importlib.util.spec_from_file_location("segdet_train_script", ROOT / "scripts" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _train(script, run_dir: Path, max_iter: int) -> dict:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", [*TINY, f"train.max_iter={max_iter}"])
    assert script.run(cfg, str(run_dir)) == 0
    return read_checkpoint(find_last_checkpoint(run_dir))


@pytest.mark.slow
def test_three_plus_three_equals_six(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGDET_CACHE", str(tmp_path / "cache"))
    script = _train_script()
    straight = _train(script, tmp_path / "straight", 6)
    first = _train(script, tmp_path / "split", 3)
    assert first["iteration"] == 3 and first["data"][0]["num_batches"] == 3
    resumed = _train(script, tmp_path / "split", 6)
    assert resumed["iteration"] == straight["iteration"] == 6
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    assert straight["optimizer"]["state"].keys() == resumed["optimizer"]["state"].keys()
    for k, state in straight["optimizer"]["state"].items():
        # every per-parameter tensor of whichever optimizer the config uses (momentum, Adam moments, step)
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(resumed["optimizer"]["state"][k][name])), name
    assert os.path.exists(tmp_path / "split" / "metrics.json")
