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
