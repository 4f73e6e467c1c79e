"""scripts/predict.py checkpoint=FILE.pt2 (issue 11 §2): the exported package runs through predict's pipeline and
writes what the .pt checkpoint it was exported from writes. Uses the one package of tests/export (conftest.py)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from tests_export_helpers import ROOT, export_env


def _box_iou_xywh(a, b):
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    return inter / max(a[2] * a[3] + b[2] * b[3] - inter, 1e-9)


def _rle_iou(a, b):
    a, b = (dict(r, counts=r["counts"].encode()) for r in (a, b))
    if mask_utils.area(a) == 0 and mask_utils.area(b) == 0:
        return 1.0
    return float(mask_utils.iou([a], [b], [0])[0, 0])


def _by_image(results):
    out = {}
    for r in results:
        out.setdefault(r["image_id"], []).append(r)
    return out


def assert_same_results(got, ref, image_ids):
    """The issue's equality on COCO results: per image the same count and category ids, scores within 1e-4,
    box IoU > 0.99, mask IoU > 0.99 (both lists in the model's detection order)."""
    got, ref = _by_image(got), _by_image(ref)
    assert sorted(got) == sorted(ref) == sorted(image_ids)
    for image_id in image_ids:
        g, r = got[image_id], ref[image_id]
        assert len(g) == len(r) > 0, image_id
        assert [d["category_id"] for d in g] == [d["category_id"] for d in r]
        assert max(abs(a["score"] - b["score"]) for a, b in zip(g, r)) <= 1e-4
        assert min(_box_iou_xywh(a["bbox"], b["bbox"]) for a, b in zip(g, r)) > 0.99
        assert [a["segmentation"]["size"] for a in g] == [b["segmentation"]["size"] for b in r]
        assert min(_rle_iou(a["segmentation"], b["segmentation"]) for a, b in zip(g, r)) > 0.99


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two shapes val images (128 x 128) and a 96 x 125 crop of one, as PNG (lossless: read back as written)."""
    from segdet.data.shapes import ShapesParams, render_image

    d = tmp_path_factory.mktemp("images")
    val = [np.ascontiguousarray(render_image(ShapesParams(), "val", i)[0]) for i in range(2)]
    Image.fromarray(val[0]).save(d / "000000.png")
    Image.fromarray(val[1]).save(d / "000001.png")
    Image.fromarray(np.ascontiguousarray(val[0][10:106, 3:128])).save(d / "crop.png")
    return d


@pytest.fixture(scope="module")
def both(small_package, images, tmp_path_factory):
    from segdet.engine.predictor import predict

    out = tmp_path_factory.mktemp("predict")
    common = dict(cfg_model=None, input=images, score_threshold=0.0, progress="none", num_workers=0)
    package = predict(checkpoint=small_package["package"], output=out / "pt2", **common)
    eager = predict(checkpoint=small_package["ckpt"], output=out / "pt", **common)
    return {"package": package, "eager": eager, "out": out}


def test_package_predictions_equal_the_checkpoint_s(both, small_package):
    ids = json.loads((both["out"] / "pt" / "image_ids.json").read_text())
    assert json.loads((both["out"] / "pt2" / "image_ids.json").read_text()) == ids == \
        {"000000.png": 0, "000001.png": 1, "crop.png": 2}
    written = json.loads((both["out"] / "pt2" / "predictions.json").read_text())
    assert written == json.loads(json.dumps(both["package"]))
    assert {r["category_id"] for r in written} <= set(small_package["mapping"].values())  # the package's mapping
    assert {tuple(r["segmentation"]["size"]) for r in written if r["image_id"] == 2} == {(96, 125)}
    assert_same_results(both["package"], both["eager"], ids.values())


def test_package_writes_the_same_overlays(both):
    for stem, size in (("000000", (128, 128)), ("000001", (128, 128)), ("crop", (125, 96))):
        with Image.open(both["out"] / "pt2" / f"{stem}.png") as got, \
                Image.open(both["out"] / "pt" / f"{stem}.png") as ref:
            assert got.size == ref.size and got.size[0] * size[1] == got.size[1] * size[0]  # W x H kept
            diff = np.abs(np.asarray(got.convert("RGB"), dtype=float) - np.asarray(ref.convert("RGB"), dtype=float))
            assert diff.mean() < 2.0  # same detections drawn (a mask pixel or a caption digit may differ)


def test_package_journal_resumes_and_is_not_mixed_with_the_checkpoint_s(both, small_package, images, caplog):
    from segdet.engine.predictor import JOURNAL_NAME, predict

    out = both["out"] / "pt2"
    header = json.loads((out / JOURNAL_NAME).read_text().splitlines()[0])["settings"]
    assert header["checkpoint"] == str(small_package["package"])
    assert header["model"]["segdet.num_classes"] == "4"
    common = dict(cfg_model=None, input=images, output=out, score_threshold=0.0, progress="none", num_workers=0)
    with caplog.at_level("INFO", logger="segdet.engine.predictor"):
        again = predict(checkpoint=small_package["package"], **common)
    assert "Resuming: 3 of 3 images are already in" in caplog.text
    assert again == both["package"]
    with pytest.raises(ValueError, match="other settings .*checkpoint"):
        predict(checkpoint=small_package["ckpt"], **common)


def test_image_outside_the_exported_sizes_is_skipped_or_stops_strict(small_package, images, tmp_path):
    from segdet.engine.predictor import JOURNAL_NAME, predict

    d = tmp_path / "imgs"
    d.mkdir()
    (d / "000000.png").symlink_to(images / "000000.png")
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(d / "tiny.png")
    results = predict(cfg_model=None, checkpoint=small_package["package"], input=d, output=tmp_path / "out",
                      score_threshold=0.0, progress="none", num_workers=0, overlays=False)
    assert {r["image_id"] for r in results} == {0}
    skipped = [json.loads(line) for line in (tmp_path / "out" / JOURNAL_NAME).read_text().splitlines()[2:]]
    assert len(skipped) == 1 and "tiny.png" in skipped[0]["skipped"] and "20 x 40" in skipped[0]["skipped"]
    assert "[32, 1024]" in skipped[0]["skipped"]
    with pytest.raises(ValueError, match=r"strict=true: cannot predict image .*tiny\.png.*\[32, 1024\]"):
        predict(cfg_model=None, checkpoint=small_package["package"], input=d / "tiny.png", output=tmp_path / "o2",
                strict=True, progress="none", num_workers=0)


def _bad_packages(tmp, small_package):
    garbage = tmp / "garbage.pt2"
    garbage.write_bytes(b"not a zip")
    renamed = tmp / "renamed.pt2"  # a zip file (torch.save's format), but no AOTInductor model inside
    renamed.write_bytes(small_package["ckpt"].read_bytes())
    return {"missing": tmp / "nope.pt2", "garbage": garbage, "renamed": renamed}


@pytest.mark.parametrize("case, error, words", [
    ("missing", FileNotFoundError, ["checkpoint=", "nope.pt2"]),
    ("garbage", ValueError, ["checkpoint=", "garbage.pt2", "not an AOTInductor package"]),
    ("renamed", ValueError, ["checkpoint=", "renamed.pt2", "not an AOTInductor package"]),
    ("model", ValueError, ["model=", "model.pt2"]),
    ("amp", ValueError, ["amp=bf16", "precision", "amp=none"]),
    ("device", ValueError, ["device='cuda'", "compiled for cpu"]),
])
def test_bad_requests_fail_naming_the_argument(small_package, images, tmp_path, case, error, words):
    from omegaconf import OmegaConf

    from segdet.config import compose_model_config
    from segdet.engine.predictor import predict

    bad = _bad_packages(tmp_path, small_package)
    kwargs = dict(cfg_model=None, checkpoint=bad.get(case, small_package["package"]), input=images,
                  output=tmp_path / "out", progress="none", num_workers=0)
    kwargs.update({"model": {"cfg_model": OmegaConf.create(compose_model_config("maskrcnn_small"))},
                   "amp": {"amp": "bf16"}, "device": {"device": "cuda"}}.get(case, {}))
    with pytest.raises(error) as info:
        predict(**kwargs)
    for word in words:
        assert word in str(info.value)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_script_runs_the_package_and_refuses_model(small_package, images, both, tmp_path):
    out = tmp_path / "out"
    script = [sys.executable, str(ROOT / "scripts" / "predict.py"), f"checkpoint={small_package['package']}"]
    proc = subprocess.run(script + [f"input={images / 'crop.png'}", f"output={out}", "device=cpu",
                                    "score_threshold=0.0", "num_workers=0"],
                          cwd=tmp_path, capture_output=True, text=True, env=export_env(), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = json.loads((out / "predictions.json").read_text())
    ref = [dict(r, image_id=0) for r in both["package"] if r["image_id"] == 2]  # crop.png alone has image id 0
    assert_same_results(got, ref, [0])
    assert (out / "crop.png").is_file()
    bad = subprocess.run(script + ["model=maskrcnn_small", f"input={images}", f"output={tmp_path / 'o2'}"],
                         cwd=tmp_path, capture_output=True, text=True, env=export_env(), timeout=600)
    assert bad.returncode == 1
    assert "model= cannot be combined" in bad.stdout + bad.stderr and "Traceback" not in bad.stdout + bad.stderr
