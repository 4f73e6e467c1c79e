"""Smoke run of scripts/bench_model.py: both models run, detect, train, and the JSON has every key."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torchvision")  # the script's baseline

REPO = Path(__file__).resolve().parents[1]
SUMMARY_KEYS = {"median_ms", "q1_ms", "q3_ms", "min_ms", "max_ms", "reps"}


@pytest.mark.slow  # two ResNet-50 Mask R-CNNs built and trained for a step: ~30 s on 2 busy cores
def test_quick_run_writes_complete_json(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(REPO / "scripts" / "bench_model.py"), "--quick", "--size", "64x96", "--threads", "1",
           "--json", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "speedup (torchvision / segdet median)" in proc.stdout

    result = json.loads(out.read_text())
    assert {"machine", "config", "inference", "train", "wall_s"} <= set(result)
    assert result["config"]["size"] == [64, 96] and result["machine"]["torch_threads"] == 1
    for mode in ("inference", "train"):
        section = result[mode]
        for model in ("segdet", "torchvision"):
            assert set(section[model]) == SUMMARY_KEYS
            assert section[model]["reps"] == 1 and section[model]["median_ms"] > 0
        assert section["speedup"]["segdet"] == pytest.approx(
            section["torchvision"]["median_ms"] / section["segdet"]["median_ms"]
        )
    # Same weights, same image: both models detect, and the same number of objects (capped at 10).
    detections = result["inference"]["detections"]
    assert detections["segdet"] == detections["torchvision"] > 0
    assert all(n > 0 for n in result["train"]["objects"])


def test_bad_size_is_rejected():
    cmd = [sys.executable, str(REPO / "scripts" / "bench_model.py"), "--size", "800by1216"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--size must be HEIGHTxWIDTH" in proc.stderr
