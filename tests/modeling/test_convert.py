import importlib.util
from pathlib import Path

import pytest
import torch
import torchvision

from segdet.modeling.convert import convert_torchvision_maskrcnn

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "convert_weights.py"


def _script():
    spec = importlib.util.spec_from_file_location("convert_weights", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_torchvision_heads(old_layout: bool):
    sd = {"backbone.body.conv1.weight": torch.zeros(64, 3, 7, 7)}
    rpn_conv = "rpn.head.conv" if old_layout else "rpn.head.conv.0.0"
    for name, shape in [(rpn_conv, (256, 256, 3, 3)), ("rpn.head.cls_logits", (3, 256, 1, 1)),
                        ("rpn.head.bbox_pred", (12, 256, 1, 1)), ("roi_heads.box_head.fc6", (1024, 12544)),
                        ("roi_heads.box_head.fc7", (1024, 1024)), ("roi_heads.box_predictor.cls_score", (91, 1024)),
                        ("roi_heads.box_predictor.bbox_pred", (364, 1024)),
                        ("roi_heads.mask_predictor.conv5_mask", (256, 256, 2, 2)),
                        ("roi_heads.mask_predictor.mask_fcn_logits", (91, 256, 1, 1))]:
        sd[name + ".weight"] = torch.randn(shape)
        sd[name + ".bias"] = torch.arange(shape[0], dtype=torch.float32)
    for i in range(4):
        name = f"roi_heads.mask_head.mask_fcn{i + 1}" if old_layout else f"roi_heads.mask_head.{i}.0"
        sd[name + ".weight"] = torch.full((256, 256, 3, 3), float(i))
        sd[name + ".bias"] = torch.zeros(256)
    return sd


@pytest.mark.parametrize("old_layout", [False, True])
def test_head_keys_map_in_both_torchvision_layouts(old_layout):
    sd = _fake_torchvision_heads(old_layout)
    out = convert_torchvision_maskrcnn(sd)
    assert out["backbone.body.conv1.weight"].shape == (64, 3, 7, 7)
    assert torch.equal(out["rpn.head.objectness_logits.weight"], sd["rpn.head.cls_logits.weight"])
    assert out["rpn.head.conv.weight"].shape == (256, 256, 3, 3)
    assert out["roi_heads.box_head.fcs.2.weight"].shape == (1024, 1024)
    for i in range(4):
        assert (out[f"roi_heads.mask_head.convs.{2 * i}.weight"] == i).all()
    # the background mask channel is dropped: channel c - 1 of segdet is torchvision's channel c
    assert out["roi_heads.mask_head.predictor.bias"].tolist() == list(range(1, 91))
    assert out["roi_heads.box_predictor.cls_score.weight"].shape == (91, 1024)


def test_cli_rejects_non_maskrcnn_checkpoints(tmp_path, capsys):
    src = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), src)
    assert _script().main(["--from", "torchvision", str(src), str(tmp_path / "out.pth")]) == 2
    assert "does not look like a torchvision Mask R-CNN" in capsys.readouterr().err
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    assert _script().main(["--from", "torchvision", str(tmp_path / "junk.pth"), str(tmp_path / "o.pth")]) == 2
    assert "junk.pth" in capsys.readouterr().err
    assert not (tmp_path / "out.pth").exists()


def test_cli_imagenet_trunk(tmp_path, capsys):
    src, dst = tmp_path / "resnet18.pth", tmp_path / "trunk.pth"
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), src)
    assert _script().main(["--from", "torchvision-imagenet", str(src), str(dst), "--arch", "resnet18"]) == 0
    ckpt = torch.load(dst, weights_only=True)
    assert torch.equal(ckpt["model"]["backbone.body.layer4.1.conv2.weight"], tv.layer4[1].conv2.weight)
    assert not any(k.startswith("backbone.body.fc") for k in ckpt["model"])
    assert _script().main(["--from", "torchvision-imagenet", str(src), str(dst), "--arch", "resnet50"]) == 2
    assert "resnet50" in capsys.readouterr().err
