"""Export to an AOTInductor package: the package, run in a fresh process that never imports segdet, gives the eager
model's detections (issue 11, sections 1 and 3). One export per module (AOTInductor compiles for minutes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests_export_helpers import assert_same_detections

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("_run_package.py")
KEYS = ("boxes", "scores", "labels", "masks")


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    return env


def _model_cfg(name="maskrcnn_small"):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("export", [f"model={name}", "checkpoint=x", "output=y.pt2"]).model


def _images():
    from segdet.data.shapes import ShapesParams, render_image

    params = ShapesParams()
    val = [torch.from_numpy(np.ascontiguousarray(render_image(params, "val", i)[0])).permute(2, 0, 1).contiguous()
           for i in range(2)]
    # Two sizes never seen at export (the export example is 115 x 160): a crop and a tiled, cropped image.
    other = [val[0][:, 10:106, 3:179 - 51].contiguous(), torch.cat([val[1], val[0]], 1)[:, 20:220, 5:125].contiguous()]
    return val + other


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from segdet.modeling import build_model

    tmp = tmp_path_factory.mktemp("export")
    cfg = _model_cfg()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    # A random model's class scores are near uniform: with score_thresh 0.05 and 4 classes every RoI
    # passes, so it detects (D > 0 is asserted). Its mask predictor starts at std 0.001, so every mask
    # probability is 0.5 +- 1e-4 and float rounding decides each pixel against the 0.5 threshold: trained
    # models' logits are spread, so the predictor is re-drawn with a trained-like spread.
    with torch.no_grad():
        torch.nn.init.normal_(model.roi_heads.mask_head.predictor.weight, std=0.5)
    names = ["circle", "square", "triangle", "star"]
    mapping = {1: 11, 2: 12, 3: 13, 4: 14}
    ckpt = tmp / "model_0000001.pt"
    torch.save({"model": model.state_dict(), "model_config": OmegaConf.to_container(cfg, resolve=True),
                "class_names": names, "label_to_category_id": mapping, "iteration": 1}, ckpt)
    run_dir = tmp / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    os.link(ckpt, run_dir / "checkpoints" / ckpt.name)
    package = tmp / "model.pt2"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/export.py"), "model=maskrcnn_small",
                           f"checkpoint={run_dir}", f"output={package}", "min_side=32", "max_side=1024"],
                          capture_output=True, text=True, env=_env(), timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    images = _images()
    torch.save(images, tmp / "inputs.pt")
    import segdet.ops

    run = subprocess.run([sys.executable, str(RUNNER), segdet.ops.library_path(), str(package), str(tmp / "inputs.pt"),
                          str(tmp / "outputs.pt")], capture_output=True, text=True, timeout=600,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, cwd=str(tmp))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with torch.no_grad():
        refs = [model([img])[0] for img in images]
    return {"result": torch.load(tmp / "outputs.pt"), "refs": refs, "images": images, "names": names,
            "mapping": mapping, "tmp": tmp, "ckpt": ckpt, "package": package}


def test_package_runs_without_segdet_python(exported):
    assert exported["result"]["segdet_imported"] is False


@pytest.mark.parametrize("index", [0, 1, 2, 3], ids=["val0_128", "val1_128", "crop_96x125", "tile_200x120"])
def test_package_equals_eager(exported, index):
    got = exported["result"]["outputs"][index]
    ref = exported["refs"][index]
    assert got[3].shape[1:] == exported["images"][index].shape[1:]
    assert_same_detections(got, ref)


def test_package_metadata(exported):
    meta = exported["result"]["metadata"]
    assert json.loads(meta["segdet.class_names"]) == exported["names"]
    assert {int(k): v for k, v in json.loads(meta["segdet.label_to_category_id"]).items()} == exported["mapping"]
    assert meta["segdet.num_classes"] == "4"
    assert meta["segdet.torch_version"] == torch.__version__


def test_package_checks_its_input(exported):
    (kind0, msg0), (kind1, msg1), (kind2, msg2) = exported["result"]["errors"]
    assert kind0 != "none" and "uint8" in msg0 and "Float" in msg0
    assert kind1 != "none" and "Tensor[3, H, W]" in msg1
    assert kind2 != "none" and "[32, 1024]" in msg2


def _export_cli(*args, tmp):
    return subprocess.run([sys.executable, str(ROOT / "scripts/export.py"), *args], capture_output=True, text=True,
                          env=_env(), timeout=600, cwd=str(tmp))


def test_missing_checkpoint_fails_clearly(tmp_path):
    proc = _export_cli("checkpoint=" + str(tmp_path / "nope.pt"), "output=" + str(tmp_path / "m.pt2"), tmp=tmp_path)
    assert proc.returncode == 1
    assert "nope.pt" in proc.stdout + proc.stderr
    assert not (tmp_path / "m.pt2").exists()


def test_wrong_model_config_fails_clearly(exported, tmp_path):
    out = tmp_path / "m.pt2"
    proc = _export_cli("model=maskrcnn_r50_fpn", f"checkpoint={exported['ckpt']}", f"output={out}", tmp=tmp_path)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert str(exported["ckpt"]) in proc.stdout + proc.stderr
    assert not out.exists()
