"""Export to an AOTInductor package: the package, run in a fresh process that never imports segdet, gives the eager
model's detections (issue 11, sections 1 and 3). One export per module (AOTInductor compiles for minutes)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests_export_helpers import ROOT, assert_same_detections, export_env, export_test_images, run_package_fresh

KEYS = ("boxes", "scores", "labels", "masks")


_images = export_test_images


@pytest.fixture(scope="module")
def exported(small_package):
    model, package, tmp = small_package["model"], small_package["package"], small_package["package"].parent
    images = _images()
    result = run_package_fresh(package, images, tmp)
    with torch.no_grad():
        refs = [model([img])[0] for img in images]
    return {"result": result, "refs": refs, "images": images, "names": small_package["names"],
            "mapping": small_package["mapping"], "tmp": tmp, "ckpt": small_package["ckpt"], "package": package}


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
                          env=export_env(), timeout=600, cwd=str(tmp))


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
