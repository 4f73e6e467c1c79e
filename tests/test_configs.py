"""Every train/eval config composes with every option of its groups; bad keys and options fail early."""
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=overrides, return_hydra_config=True)


def test_groups_have_options():
    for group in ("model", "data", "optim", "schedule", "experiment"):
        assert _options(group), group


@pytest.mark.parametrize("group", ["model", "data", "optim", "schedule", "experiment"])
def test_train_composes_with_every_option(group):
    for option in _options(group):
        cfg = _compose("train", [f"{group}={option}"])
        OmegaConf.resolve(cfg)  # every interpolation resolves
        assert cfg.model._target_ and cfg.optim._target_ and cfg.schedule._target_
        assert cfg.model.num_classes == cfg.data.num_classes
        assert cfg.train.max_iter > 0 and cfg.train.batch_size > 0
        assert cfg.hydra.run.dir == f"runs/{cfg.name}"


def test_train_defaults():
    cfg = _compose("train", [])
    assert cfg.hydra.runtime.choices.model == "maskrcnn_small"
    assert cfg.hydra.runtime.choices.data == "shapes"
    assert cfg.hydra.runtime.choices.optim == "adamw" and cfg.hydra.runtime.choices.schedule == "cosine"
    assert cfg.resume is True and cfg.device == "auto" and cfg.name == "default"


def test_experiment_overrides_groups_and_values():
    cfg = _compose("train", ["experiment=coco_r50_fpn_1x"])
    assert cfg.hydra.runtime.choices.model == "maskrcnn_r50_fpn"
    assert cfg.data.name == "coco" and cfg.model.num_classes is None  # from the annotation file at run time
    assert cfg.train.max_iter == 90000 and cfg.hydra.run.dir == "runs/coco_r50_fpn_1x"
    assert cfg.hydra.runtime.choices.optim == "sgd" and cfg.schedule.policy == "step"


@pytest.mark.parametrize("data", _options("data"))
@pytest.mark.parametrize("model", [None] + _options("model"))
def test_eval_composes(data, model):
    overrides = ["checkpoint=some.pt", f"data={data}"] + ([f"model={model}"] if model else [])
    cfg = _compose("eval", overrides)
    OmegaConf.resolve(cfg)
    assert ("_target_" in cfg.model) == (model is not None)


@pytest.mark.parametrize("overrides, match", [
    (["train.max_itr=5"], "max_itr"),
    (["optim=adam_typo"], "adam_typo"),
    (["schedule=nope"], "nope"),
])
def test_bad_overrides_fail_composition(overrides, match):
    with pytest.raises(ConfigCompositionException, match=match):
        _compose("train", overrides)


def test_train_script_rejects_bad_config_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    for bad in (["train.max_itr=5"], ["model=no_such_model"]):
        proc = subprocess.run(
            [sys.executable, str(ROOT / "scripts/train.py"), f"hydra.run.dir={run_dir}", *bad],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode != 0
        assert bad[0].split("=")[0].split(".")[-1] in proc.stderr or bad[0].split("=")[1] in proc.stderr, proc.stderr
        assert not run_dir.exists()


# ---- unknown keys: segdet.config.check_config, run by every entry point before any work ---------------------

from segdet.config import ConfigKeyError, check_config  # noqa: E402


@pytest.mark.parametrize("name, overrides, match", [
    ("train", ["+train.max_itr=5"], r"unknown config key 'train.max_itr'.*did you mean 'max_iter'"),
    ("train", ["+train.loss_weights.loss_msk=2"], r"'train.loss_weights.loss_msk'.*did you mean 'loss_mask'"),
    ("train", ["+eval.num_overlay=3"], r"'eval.num_overlay'"),
    ("train", ["+seeed=1"], r"unknown config key 'seeed': the top level has .*did you mean 'seed'"),
    ("train", ["+data.num_worker=1"], r"'data.num_worker': segdet.data.DetectionData takes .*num_workers"),
    ("train", ["+data.generator.image_sise=64"], r"'data.generator.image_sise'"),
    ("train", ["+data.transforms.flip=0.5"], r"'data.transforms.flip'"),
    ("train", ["+model.rpn.nms_thres=0.5"], r"'model.rpn.nms_thres': segdet.modeling.proposal_generator.RPN"),
    ("train", ["+model.roi_heads.box_head.fc_dim=[5]"], r"'model.roi_heads.box_head.fc_dim'"),
    ("train", ["+optim.momentun=0.9"], r"'optim.momentun'"),
    ("train", ["experiment=coco_r50_fpn_1x", "+schedule.stepz=[1]"], r"'schedule.stepz'"),
    ("eval", ["checkpoint=x.pt", "+num_overlay=1"], r"unknown config key 'num_overlay'"),
    ("eval", ["checkpoint=x.pt", "+data.val.ann=x"], r"'data.val.ann': segdet.data.SplitFiles takes ann_file, img_dir"),
    ("eval", ["checkpoint=x.pt", "+model.depth=5"], r"'model.depth'"),
    ("predict", ["checkpoint=x.pt", "input=y", "+score_treshold=0.2"], r"'score_treshold'"),
    ("predict", ["checkpoint=x.pt", "input=y", "model=maskrcnn_small", "+model.backbone.dept=5"],
     r"'model.backbone.dept'"),
    ("predict", ["checkpoint=x.pt", "input=y", "+recursiv=true"], r"'recursiv'.*did you mean 'recursive'"),
])
def test_unknown_key_is_named(name, overrides, match):
    cfg = _compose(name, overrides)
    with pytest.raises(ConfigKeyError, match=match):
        check_config(cfg, name)


@pytest.mark.parametrize("name, overrides", [
    ("train", []), ("train", ["experiment=coco_r50_fpn_1x"]), ("train", ["experiment=smoke", "data=coco"]),
    ("eval", ["checkpoint=x.pt"]), ("eval", ["checkpoint=x.pt", "model=maskrcnn_r50_fpn_torchvision"]),
    ("predict", ["checkpoint=x.pt", "input=y"]), ("predict", ["checkpoint=x.pt", "input=y", "model=maskrcnn_small"]),
] + [("train", [f"model={m}"]) for m in _options("model")] + [("train", [f"optim={o}"]) for o in _options("optim")]
  + [("train", [f"schedule={s}"]) for s in _options("schedule")])
def test_shipped_configs_pass_the_check(name, overrides):
    check_config(_compose(name, overrides), name)


def test_train_script_names_an_added_unknown_key_before_training(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/train.py"), f"hydra.run.dir={run_dir}", "+data.num_worker=1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "unknown config key 'data.num_worker'" in proc.stderr
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "train.log").read_text().count("Run directory")


def test_model_num_classes_comes_from_the_dataset_or_must_agree_with_it():
    from types import SimpleNamespace

    from segdet.config import resolve_num_classes

    dataset = SimpleNamespace(num_classes=80, ann_file="instances_train2017.json")
    assert resolve_num_classes(None, dataset) == 80
    assert resolve_num_classes(80, dataset) == 80
    with pytest.raises(ValueError, match=r"model.num_classes=81 but instances_train2017.json has 80 categories"):
        resolve_num_classes(81, dataset)
