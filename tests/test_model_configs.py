"""Every conf/model/*.yaml composes (standalone and as the `model` group of a primary config) and
instantiates; the small one also runs a forward pass."""
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from segdet.modeling import MaskRCNN, build_model

CONF = Path(__file__).resolve().parents[1] / "conf"
MODEL_NAMES = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


def test_expected_configs_exist():
    assert {"maskrcnn_r50_fpn", "maskrcnn_r50_fpn_torchvision", "maskrcnn_small", "maskrcnn_r101_fpn",
            "maskrcnn_x101_32x8d_fpn"} <= set(MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_config_instantiates(name):
    with initialize_config_dir(config_dir=str(CONF / "model"), version_base=None):
        cfg = compose(config_name=name)
    assert isinstance(cfg.num_classes, int)
    model = build_model(cfg)
    assert isinstance(model, MaskRCNN)
    assert model.num_classes == cfg.num_classes
    assert model.roi_heads.box_predictor.cls_score.out_features == cfg.num_classes + 1
    assert model.roi_heads.mask_head.num_classes == cfg.num_classes


def test_model_group_composes_under_a_primary_config(tmp_path):
    (tmp_path / "model").symlink_to(CONF / "model")
    (tmp_path / "main.yaml").write_text("defaults:\n  - model: maskrcnn_r101_fpn\n  - _self_\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        cfg = compose(config_name="main", overrides=["model.num_classes=3"])
    assert cfg.model.backbone.depth == 101 and cfg.model.rpn.nms_thresh == 0.7
    container = OmegaConf.to_container(cfg.model, resolve=False)  # what a checkpoint stores
    model = build_model(container)
    assert model.roi_heads.mask_head.num_classes == 3 and model.roi_heads.box_predictor.num_classes == 3


def test_torchvision_config_values():
    with initialize_config_dir(config_dir=str(CONF / "model"), version_base=None):
        cfg = compose(config_name="maskrcnn_r50_fpn_torchvision")
    assert (cfg.min_size, cfg.max_size, cfg.num_classes + 1) == (800, 1333, 91)
    assert list(cfg.rpn.pre_nms_topk) == [2000, 1000] and list(cfg.rpn.post_nms_topk) == [2000, 1000]
    assert cfg.roi_heads.box_pooler.aligned is False and cfg.roi_heads.box_pooler.sampling_ratio == 2
    assert (cfg.roi_heads.score_thresh, cfg.roi_heads.nms_thresh, cfg.roi_heads.detections_per_image) == (0.05, 0.5, 100)
    assert cfg.backbone.norm == "FrozenBN"


def test_small_forward_and_num_classes_override():
    with initialize_config_dir(config_dir=str(CONF / "model"), version_base=None):
        cfg = compose(config_name="maskrcnn_small")
    model = build_model(cfg, num_classes=7).eval()
    # the override reaches the heads through interpolation
    assert model.roi_heads.box_predictor.cls_score.out_features == 8 and model.roi_heads.mask_head.num_classes == 7
    with torch.no_grad():
        out = model([torch.randint(0, 255, (3, 128, 128), dtype=torch.uint8)])
    assert set(out[0]) == {"boxes", "scores", "labels", "masks"}
    assert out[0]["masks"].shape[1:] == (128, 128)


def test_build_model_errors():
    with pytest.raises(ValueError, match="_target_"):
        build_model({"num_classes": 3})
    with pytest.raises(ValueError, match="num_classes"):
        build_model({"_target_": "segdet.modeling.MaskRCNN"})
    with pytest.raises(TypeError, match="cfg_model"):
        build_model("maskrcnn_small")


# ---- checkpoints written before the heads derived their widths ------------------------------------------------

OLD_SMALL = Path(__file__).resolve().parent / "modeling" / "fixtures" / "maskrcnn_small_before_named_levels.yaml"


def _old_small_config() -> dict:
    """The model_config a checkpoint of the old layout stores: the old file resolved (heads' num_classes typed)."""
    cfg = OmegaConf.to_container(OmegaConf.load(OLD_SMALL), resolve=True)
    assert cfg["roi_heads"]["box_in_features"] == [0, 1, 2, 3] and cfg["roi_heads"]["box_head"]["input_shape"]
    return cfg


def test_old_layout_config_builds_the_same_model():
    torch.manual_seed(0)
    old = build_model(_old_small_config())
    with initialize_config_dir(config_dir=str(CONF / "model"), version_base=None):
        cfg = compose(config_name="maskrcnn_small")
    torch.manual_seed(0)
    new = build_model(cfg)
    assert old.roi_heads.box_in_features == ["p2", "p3", "p4", "p5"]
    old_sd, new_sd = old.state_dict(), new.state_dict()
    assert list(old_sd) == list(new_sd)
    assert all(torch.equal(old_sd[k], new_sd[k]) for k in old_sd)
    # the heads' typed-out num_classes does not pin them: an override reaches them as before
    seven = build_model(_old_small_config(), num_classes=7)
    assert seven.roi_heads.box_predictor.num_classes == 7 and seven.roi_heads.mask_head.num_classes == 7


def test_old_layout_config_with_a_wrong_width_names_both_keys():
    cfg = _old_small_config()
    cfg["roi_heads"]["box_head"]["input_shape"] = [32, 7, 7]
    with pytest.raises(ValueError, match=r"model.roi_heads.box_head.input_shape=\[32, 7, 7\] does not match "
                                         r"\(model.backbone.fpn_channels, model.roi_heads.box_pooler.output_size\)"):
        build_model(cfg)
    cfg = _old_small_config()
    cfg["roi_heads"]["box_in_features"] = [0, 1, 9]
    with pytest.raises(ValueError, match=r"roi_heads.box_in_features=\[0, 1, 9\] uses level indices .* level names"):
        build_model(cfg)


def test_old_checkpoint_loads_in_load_model(tmp_path):
    from segdet.engine.checkpoint import save_checkpoint
    from segdet.engine.predictor import load_model

    torch.manual_seed(0)
    model = build_model(_old_small_config())
    path = save_checkpoint(tmp_path, {"model": model.state_dict(), "model_config": _old_small_config(),
                                      "iteration": 3}, iteration=3)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("predict", ["checkpoint=x", "input=y"])
    loaded, info = load_model(cfg.model, path, "cpu")
    assert info["iteration"] == 3 and loaded.num_classes == 4
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
