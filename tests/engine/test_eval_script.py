"""scripts/eval.py on a (randomly initialised) small-model checkpoint and tiny shapes data, in a subprocess."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from segdet.engine.checkpoint import save_checkpoint
from segdet.modeling import build_model

ROOT = Path(__file__).resolve().parents[2]
TINY = ["data.generator.image_size=64", "data.generator.num_train=4", "data.generator.num_val=4",
        "data.num_workers=0"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", ["model.min_size=64", "model.max_size=64"])
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    torch.manual_seed(0)
    model = build_model(model_config)
    out = tmp_path_factory.mktemp("run")
    save_checkpoint(out, {"model": model.state_dict(), "model_config": model_config, "iteration": 7}, iteration=7)
    return out


def _eval(args, cwd, cache):
    env = dict(os.environ, SEGDET_CACHE=str(cache), OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, str(ROOT / "scripts/eval.py"), *TINY, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_eval_writes_metrics_next_to_the_run(run_dir, tmp_path):
    done = _eval([f"checkpoint={run_dir}"], tmp_path, tmp_path / "cache")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    metrics = json.loads((run_dir / "eval_model_0000007" / "metrics.json").read_text())
    assert metrics["iteration"] == 7 and metrics["checkpoint"].endswith("model_0000007.pt")
    for key in ("bbox/AP", "bbox/AP50", "segm/AP", "segm/AP75"):
        assert key in metrics
    assert "COCO segm metrics over 4 images" in done.stdout
    assert not list(tmp_path.glob("*.log"))  # nothing written into the working directory


def test_eval_with_other_model_config_names_the_mismatch(run_dir, tmp_path):
    ckpt = run_dir / "checkpoints" / "model_0000007.pt"
    done = _eval([f"checkpoint={ckpt}", "model=maskrcnn_small", "model.backbone.fpn_channels=32",
                  f"output_dir={tmp_path / 'out'}"], tmp_path, tmp_path / "cache")
    assert done.returncode != 0
    err = done.stdout + done.stderr
    assert "does not fit the model" in err and "backbone.fpn_channels: checkpoint 64, model 32" in err
    assert not (tmp_path / "out").exists()


def test_eval_missing_checkpoint_is_named(tmp_path):
    done = _eval([f"checkpoint={tmp_path / 'missing.pt'}"], tmp_path, tmp_path / "cache")
    assert done.returncode != 0 and "missing.pt" in done.stdout + done.stderr
