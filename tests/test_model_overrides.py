"""One override changes one thing and everything that depends on it follows: each override below, applied to the
small model, builds, trains two iterations with scripts/train.py and evaluates with scripts/eval.py.

Tiny data as in tests/engine/test_train_script.py (64 px shapes, 4 train / 2 val images), one thread per process.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from segdet.engine.checkpoint import find_last_checkpoint, read_checkpoint
from segdet.modeling import build_model
from segdet.modeling.build import ModelConfigError

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = [
    "model.backbone.fpn_channels=32",
    "model.backbone.depth=34",
    "model.backbone.depth=50",
    "model.roi_heads.box_pooler.output_size=5",
    "model.roi_heads.mask_pooler.output_size=7",
]
TINY = ["optim=sgd", "optim.lr=0.005", "data.generator.image_size=64", "data.generator.num_train=4",
        "data.generator.num_val=2", "data.num_workers=0", "data.val_batch_size=2", "model.min_size=64",
        "model.max_size=64", "train.batch_size=2", "train.max_iter=2", "train.checkpoint_period=0",
        "train.log_period=1", "schedule.warmup_iters=1", "eval.num_overlays=0"]


def _small(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", list(overrides))
    torch.manual_seed(0)
    return build_model(cfg.model)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_each_override_reaches_every_part_that_depends_on_it():
    model = _small("model.backbone.fpn_channels=32")
    assert model.rpn.head.conv.in_channels == 32
    assert model.roi_heads.box_head.fcs[0].in_features == 32 * 7 * 7
    assert model.roi_heads.mask_head.convs[0].in_channels == 32
    model = _small("model.roi_heads.box_pooler.output_size=5")
    assert model.roi_heads.box_pooler.output_size == (5, 5)
    assert model.roi_heads.box_head.fcs[0].in_features == 64 * 5 * 5
    model = _small("model.roi_heads.mask_pooler.output_size=7")
    assert model.roi_heads.mask_pooler.output_size == (7, 7)
    model = _small("model.backbone.depth=50")
    assert [b[0].in_channels for b in model.backbone.fpn.inner_blocks] == [256, 512, 1024, 2048]
    model = _small("model.rpn.in_features=[p3,p4,p5,p6]", "model.rpn.anchor_generator.sizes=[[32],[64],[128],[256]]")
    assert model.rpn.anchor_generator.strides == [8, 16, 32, 64]
    model = _small("model.roi_heads.box_in_features=[p3,p4,p5]")
    assert model.roi_heads.box_pooler.scales == [1 / 8, 1 / 16, 1 / 32]
    assert model.roi_heads.mask_pooler.scales == [1 / 8, 1 / 16, 1 / 32]  # the mask branch follows the box's


@pytest.mark.parametrize("overrides, match", [
    (["+model.rpn.head.in_channels=32"], r"model.rpn.head.in_channels=32 does not match model.backbone.fpn_channels"),
    (["+model.roi_heads.box_head.input_shape=[64,7,7]", "model.roi_heads.box_pooler.output_size=5"],
     r"model.roi_heads.box_head.input_shape=\[64, 7, 7\] does not match .*model.roi_heads.box_pooler.output_size"),
    (["+model.roi_heads.mask_head.num_classes=3"], r"model.roi_heads.mask_head.num_classes=3 does not match model.num_classes"),
    (["+model.rpn.anchor_generator.strides=[4,8,16,32,32]"], r"model.rpn.anchor_generator.strides=.*model.rpn.in_features"),
    (["model.rpn.in_features=[p2,p3,p4]"], r"model.rpn.anchor_generator.sizes has 5 entries but model.rpn.in_features"),
    (["model.roi_heads.box_in_features=[p2,p7]"], r"model.roi_heads.box_in_features=\['p2', 'p7'\] names \['p7'\]"),
    (["model.roi_heads.box_in_features=[p2,p4]"], r"model.roi_heads.box_pooler over model.roi_heads.box_in_features"),
])
def test_a_remaining_mismatch_fails_at_build_naming_both_keys(overrides, match):
    with pytest.raises(ModelConfigError, match=match):
        _small(*overrides)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = dict(os.environ)
    e.update(SEGDET_CACHE=str(tmp_path_factory.mktemp("cache")), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


@pytest.mark.slow
@pytest.mark.parametrize("override", OVERRIDES)
def test_override_trains_and_evaluates(override, tmp_path, env):
    run_dir = tmp_path / "run"
    train = subprocess.run([sys.executable, str(ROOT / "scripts/train.py"), f"hydra.run.dir={run_dir}", *TINY,
                            override], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, (train.stdout + train.stderr)[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["iteration"] == 2
    ckpt = read_checkpoint(find_last_checkpoint(run_dir))
    key, value = override.split("=")
    node = ckpt["model_config"]
    for part in key.split(".")[1:]:
        node = node[part]
    assert str(node) == value  # the checkpoint stores the overridden config, which eval rebuilds

    evaluate = subprocess.run([sys.executable, str(ROOT / "scripts/eval.py"), f"checkpoint={run_dir}",
                               *[o for o in TINY if o.startswith("data.")]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
    assert evaluate.returncode == 0, (evaluate.stdout + evaluate.stderr)[-3000:]
    metrics = json.loads((run_dir / "eval_model_0000002" / "metrics.json").read_text())
    assert metrics["iteration"] == 2 and "segm/AP" in metrics and "bbox/AP" in metrics


@pytest.mark.slow
def test_checkpoint_of_the_old_config_layout_evaluates(tmp_path, env):
    from omegaconf import OmegaConf

    from segdet.engine.checkpoint import save_checkpoint

    old = OmegaConf.load(ROOT / "tests" / "modeling" / "fixtures" / "maskrcnn_small_before_named_levels.yaml")
    old.min_size, old.max_size = 64, 64
    model_config = OmegaConf.to_container(old, resolve=True)  # what train.py stored then
    torch.manual_seed(0)
    state = build_model(model_config).state_dict()
    save_checkpoint(tmp_path / "old", {"model": state, "model_config": model_config, "iteration": 5}, iteration=5)
    done = subprocess.run([sys.executable, str(ROOT / "scripts/eval.py"), f"checkpoint={tmp_path / 'old'}",
                           *[o for o in TINY if o.startswith("data.")]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert json.loads((tmp_path / "old" / "eval_model_0000005" / "metrics.json").read_text())["iteration"] == 5
