"""The torchvision-layout R50-FPN with converted weights, exported and run from a process that never imports
segdet, gives the eager model's detections (issue 11 §3). Slow: one R50 AOTInductor compile."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests_export_helpers import assert_same_detections  # noqa: E402  (tests/export/conftest.py puts it on the path)

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("_run_package.py")

pytestmark = pytest.mark.slow


def _parity_module():
    spec = importlib.util.spec_from_file_location("parity", ROOT / "tests/modeling/test_parity_torchvision.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_r50_torchvision_layout_package_equals_eager(tmp_path):
    import segdet.ops
    from segdet.export import compile_package, export_model, package_metadata
    from segdet.modeling import build_model
    from segdet.modeling.convert import convert_checkpoint

    parity = _parity_module()
    tv = parity.torchvision_model()
    src, dst = tmp_path / "tv.pth", tmp_path / "segdet.pth"
    torch.save(tv.state_dict(), src)
    convert_checkpoint("torchvision", str(src), str(dst))
    ckpt = torch.load(dst, weights_only=True)
    cfg = dict(ckpt["model_config"], min_size=parity.MIN_SIZE, max_size=parity.MAX_SIZE)
    model = build_model(cfg)
    model.load_state_dict(ckpt["model"], strict=True)
    model.eval()
    image = (parity.make_image() * 255).round().to(torch.uint8)
    ep = export_model(model, min_side=64, max_side=1024)
    meta = package_metadata(num_classes=model.num_classes, class_names=[f"c{i}" for i in range(model.num_classes)],
                            label_to_category_id=None, min_side=64, max_side=1024)
    package = compile_package(ep, tmp_path / "r50.pt2", meta)
    torch.save([image], tmp_path / "inputs.pt")
    run = subprocess.run([sys.executable, str(RUNNER), segdet.ops.library_path(), str(package),
                          str(tmp_path / "inputs.pt"), str(tmp_path / "outputs.pt")], capture_output=True, text=True,
                         timeout=900, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, cwd=str(tmp_path))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = torch.load(tmp_path / "outputs.pt")
    assert result["segdet_imported"] is False
    with torch.no_grad():
        ref = model([image])[0]
    assert_same_detections(result["outputs"][0], ref)
