import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from segdet.engine.predictor import (
    JOURNAL_NAME,
    PredictionInterrupted,
    assign_image_ids,
    default_class_names,
    encode_mask_rle,
    list_images,
    load_model,
    predict,
    predict_files,
    read_image,
    resolve_class_names,
    to_coco_results,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """A randomly initialised maskrcnn_small with 3 classes, saved like training saves it."""
    from omegaconf import OmegaConf

    from segdet.modeling import build_model

    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / "maskrcnn_small.yaml"), resolve=False)
    cfg["num_classes"] = 3
    torch.manual_seed(0)
    model = build_model(cfg)
    resolved = OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.save({"model": model.state_dict(), "model_config": resolved, "label_to_category_id": {1: 11, 2: 22, 3: 33},
                "class_names": ["circle", "square", "triangle"]}, path)
    return path


@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    rng = np.random.RandomState(0)
    Image.fromarray(rng.randint(0, 255, (96, 128, 3), dtype=np.uint8)).save(d / "000139.jpg")
    Image.fromarray(rng.randint(0, 255, (80, 64), dtype=np.uint8)).save(d / "street.png")  # greyscale
    (d / "readme.txt").write_text("not an image")
    return d


def test_list_images(image_dir):
    assert [p.name for p in list_images(image_dir)] == ["000139.jpg", "street.png"]
    assert list_images(image_dir / "street.png") == [image_dir / "street.png"]
    with pytest.raises(FileNotFoundError, match="nope"):
        list_images(image_dir / "nope")
    empty = image_dir / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="contains no images"):
        list_images(empty)


def test_read_image(image_dir):
    img = read_image(image_dir / "street.png")
    assert img.dtype == torch.uint8 and img.shape == (3, 80, 64)
    assert torch.equal(img[0], img[1])  # greyscale expanded to RGB
    bad = image_dir / "broken.jpg"
    bad.write_bytes(b"not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        read_image(bad)


def test_assign_image_ids():
    paths = [Path("b.jpg"), Path("000007.jpg"), Path("a.png"), Path("3.png")]
    assert assign_image_ids(paths) == [8, 7, 9, 3]
    assert assign_image_ids([Path("x.jpg"), Path("y.jpg")]) == [0, 1]
    with pytest.raises(ValueError, match="same numeric stem"):
        assign_image_ids([Path("1.jpg"), Path("001.png")])


def test_coco_results_and_rle_roundtrip():
    masks = torch.zeros(2, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 7:, :2] = True
    pred = {"boxes": torch.tensor([[3.0, 2.0, 9.0, 5.0], [0.0, 7.0, 2.0, 10.0]]), "scores": torch.tensor([0.9, 0.4]),
            "labels": torch.tensor([2, 1]), "masks": masks}
    results = to_coco_results(pred, 5, {1: 10, 2: 20})
    assert [r["category_id"] for r in results] == [20, 10]
    assert results[0]["bbox"] == pytest.approx([3.0, 2.0, 6.0, 3.0]) and results[0]["image_id"] == 5
    assert results[1]["score"] == pytest.approx(0.4)
    json.dumps(results)  # counts must be str, not bytes
    for r, m in zip(results, masks):
        rle = dict(r["segmentation"], counts=r["segmentation"]["counts"].encode())
        assert np.array_equal(mask_utils.decode(rle).astype(bool), m.numpy())
    assert [r["category_id"] for r in to_coco_results(pred, 5)] == [2, 1]
    assert encode_mask_rle(torch.zeros(4, 4, dtype=torch.bool))["size"] == [4, 4]


def test_class_names():
    assert default_class_names(80)[0] == "person" and default_class_names(80)[-1] == "toothbrush"
    coco90 = default_class_names(90)
    assert len(coco90) == 90 and coco90[0] == "person" and coco90[11] == "N/A" and coco90[12] == "stop sign"
    assert default_class_names(2) == ["class_1", "class_2"]
    assert resolve_class_names(["x", "y"], {"class_names": ["a", "b"]}, 2) == ["x", "y"]
    assert resolve_class_names(None, {"class_names": ["a", "b"]}, 2) == ["a", "b"]
    assert resolve_class_names(None, {}, 2) == ["class_1", "class_2"]
    with pytest.raises(ValueError, match="num_classes=2"):
        resolve_class_names(["x"], {}, 2)


def test_predict_in_process_writes_results(small_checkpoint, image_dir, tmp_path):
    from omegaconf import OmegaConf

    cfg_model = OmegaConf.load(REPO / "conf" / "model" / "maskrcnn_small.yaml")  # num_classes 4: checkpoint's 3 wins
    out = tmp_path / "out"
    results = predict(cfg_model=cfg_model, checkpoint=small_checkpoint, input=image_dir, output=out,
                      score_threshold=0.0)
    written = json.loads((out / "predictions.json").read_text())
    assert written == json.loads(json.dumps(results))
    assert len(written) > 0  # threshold 0 keeps the random model's detections
    assert {r["image_id"] for r in written} <= {139, 140}
    assert {r["category_id"] for r in written} <= {11, 22, 33}
    ids = json.loads((out / "image_ids.json").read_text())
    assert ids == {"000139.jpg": 139, "street.png": 140}
    for r in written:
        h, w = r["segmentation"]["size"]
        assert (h, w) == ((96, 128) if r["image_id"] == 139 else (80, 64))
        x, y, bw, bh = r["bbox"]
        assert bw >= 0 and bh >= 0 and x >= 0 and x + bw <= w + 1e-3 and y + bh <= h + 1e-3
    # Small images are drawn upscaled (shorter side >= 512 px) so captions do not hide the objects.
    assert Image.open(out / "000139.png").size == (128 * 6, 96 * 6)
    assert Image.open(out / "street.png").size == (64 * 8, 80 * 8)

    high = predict(cfg_model=cfg_model, checkpoint=small_checkpoint, input=image_dir / "street.png",
                   output=tmp_path / "out2", score_threshold=1.0)
    assert all(r["score"] >= 1.0 for r in high)


def test_predict_bad_inputs(small_checkpoint, image_dir, tmp_path):
    from omegaconf import OmegaConf

    from segdet.engine.checkpoint import CheckpointError

    cfg_model = OmegaConf.load(REPO / "conf" / "model" / "maskrcnn_small.yaml")
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        predict(cfg_model=cfg_model, checkpoint=small_checkpoint, input=tmp_path / "missing_dir", output=tmp_path)
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        predict(cfg_model=cfg_model, checkpoint=tmp_path / "nothing.pt", input=image_dir, output=tmp_path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"123")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        predict(cfg_model=cfg_model, checkpoint=garbage, input=image_dir, output=tmp_path)
    with pytest.raises(ValueError, match="score_threshold"):
        predict(cfg_model=cfg_model, checkpoint=small_checkpoint, input=image_dir, output=tmp_path, score_threshold=2)


@pytest.mark.slow  # two interpreter starts with torch + hydra: ~10 s CPU, often > 20 s on a shared machine
def test_predict_script_end_to_end(small_checkpoint, image_dir, tmp_path):
    out = tmp_path / "script_out"
    cmd = [sys.executable, str(REPO / "scripts" / "predict.py"), "model=maskrcnn_small",
           f"checkpoint={small_checkpoint}", f"input={image_dir}", f"output={out}", "device=cpu",
           "score_threshold=0.0", "class_names=[c1,c2,c3]"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "predictions.json").read_text())
    assert len(results) > 0 and set(results[0]) == {"image_id", "category_id", "bbox", "score", "segmentation"}
    assert (out / "000139.png").is_file() and (out / "street.png").is_file()
    assert not (tmp_path / "outputs").exists()  # hydra writes into the output directory only

    bad = subprocess.run(cmd[:4] + [f"input={tmp_path / 'no_such_images'}", f"output={tmp_path / 'o'}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    assert "no_such_images" in bad.stdout + bad.stderr

    unset = subprocess.run(cmd[:2] + [f"input={image_dir}", f"output={tmp_path / 'o'}"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert unset.returncode == 1 and "checkpoint" in unset.stdout + unset.stderr
    assert "Traceback" not in unset.stdout + unset.stderr
