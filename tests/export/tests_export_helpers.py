"""Shared by tests/export: the small exported package and the comparison of a package's detections with the eager
model's."""
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def _box_iou(a, b):
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area = lambda x: (x[:, 2:] - x[:, :2]).clamp(min=0).prod(1)  # noqa: E731
    return inter / (area(a) + area(b) - inter).clamp(min=1e-9)


def _mask_iou(a, b):
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def assert_same_detections(got, ref):
    """The issue's equality: same count and labels, box IoU > 0.99, scores within 1e-4, mask IoU > 0.99."""
    boxes, scores, labels, masks = got
    assert boxes.dtype == torch.float32 and scores.dtype == torch.float32
    assert labels.dtype == torch.int64 and masks.dtype == torch.bool
    assert boxes.shape[0] == ref["boxes"].shape[0] > 0
    assert torch.equal(labels, ref["labels"])
    assert _box_iou(boxes, ref["boxes"]).min() > 0.99
    assert (scores - ref["scores"]).abs().max() <= 1e-4
    assert masks.shape == ref["masks"].shape
    assert _mask_iou(masks, ref["masks"]).min() > 0.99


def export_test_images() -> list:
    """uint8 [3, H, W] images: two shapes val images at their size and two sizes never seen at export (the export
    example is 115 x 160): a crop and a tiled, cropped image."""
    import numpy as np

    from segdet.data.shapes import ShapesParams, render_image

    params = ShapesParams()
    val = [torch.from_numpy(np.ascontiguousarray(render_image(params, "val", i)[0])).permute(2, 0, 1).contiguous()
           for i in range(2)]
    other = [val[0][:, 10:106, 3:179 - 51].contiguous(), torch.cat([val[1], val[0]], 1)[:, 20:220, 5:125].contiguous()]
    return val + other


def export_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    return env


def model_cfg(name="maskrcnn_small"):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("export", [f"model={name}", "checkpoint=x", "output=y.pt2"]).model


def export_small_package(tmp: Path) -> dict:
    """A maskrcnn_small checkpoint with a trained-like mask predictor, saved as training saves it (with class names
    and a label -> category mapping) in a run directory, exported by scripts/export.py (min_side 32, max_side 1024).
    Returns {"model" (eval), "ckpt", "run_dir", "package", "names", "mapping"}."""
    from omegaconf import OmegaConf

    from segdet.modeling import build_model

    cfg = model_cfg()
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
    export_package(run_dir, package)
    return {"model": model, "ckpt": ckpt, "run_dir": run_dir, "package": package, "names": names,
            "mapping": mapping}


def export_package(checkpoint, package: Path, *overrides: str) -> None:
    """scripts/export.py model=maskrcnn_small checkpoint=... output=package min_side=32 max_side=1024 [overrides]."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/export.py"), "model=maskrcnn_small",
                           f"checkpoint={checkpoint}", f"output={package}", "min_side=32", "max_side=1024", *overrides],
                          capture_output=True, text=True, env=export_env(), timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def run_package_fresh(package: Path, images: list, tmp: Path) -> dict:
    """The package run on ``images`` by _run_package.py in a process without PYTHONPATH (it never imports segdet):
    {"outputs", "metadata", "errors", "segdet_imported"} (see _run_package.py)."""
    import segdet.ops

    torch.save(images, tmp / "inputs.pt")
    run = subprocess.run([sys.executable, str(Path(__file__).with_name("_run_package.py")), segdet.ops.library_path(),
                          str(package), str(tmp / "inputs.pt"), str(tmp / "outputs.pt")], capture_output=True,
                         text=True, timeout=600, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                         cwd=str(tmp))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return torch.load(tmp / "outputs.pt")
