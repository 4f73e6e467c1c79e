"""segdet.utils.benchmark: timing helpers behind scripts/bench_ops.py, and the script itself."""
import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch

from segdet.utils.benchmark import format_table, proposal_boxes, summarize, time_interleaved

REPO = Path(__file__).resolve().parents[2]


def test_proposal_boxes_are_valid_and_inside_the_image():
    boxes = proposal_boxes(5000, 100, 200, generator=torch.Generator().manual_seed(0), min_size=4, max_size=50)
    assert boxes.shape == (5000, 4) and boxes.dtype == torch.float32
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    assert boxes[:, 0::2].min() >= 0 and boxes[:, 0::2].max() <= 200
    assert boxes[:, 1::2].min() >= 0 and boxes[:, 1::2].max() <= 100
    widths = boxes[:, 2] - boxes[:, 0]
    assert widths.max() <= 50 + 1e-4 and widths.median() > 4


def test_time_interleaved_alternates_and_measures():
    calls = []
    candidates = {
        "fast": lambda: calls.append("fast"),
        "slow": lambda: (calls.append("slow"), time.sleep(0.004)),
    }
    times = time_interleaved(candidates, warmup=1, min_reps=4, max_reps=4, budget_s=10.0)
    assert calls == ["fast", "slow"] * 5  # one warm-up each (in order), then strict alternation
    assert len(times["fast"]) == len(times["slow"]) == 4
    assert min(times["slow"]) >= 4.0 > max(times["fast"])


def test_time_interleaved_budget_stops_after_min_reps():
    times = time_interleaved({"a": lambda: time.sleep(0.01)}, warmup=0, min_reps=2, max_reps=1000, budget_s=0.0)
    assert len(times["a"]) == 2


def test_time_interleaved_hard_budget_allows_a_single_round():
    times = time_interleaved({"a": lambda: time.sleep(0.01)}, warmup=0, min_reps=3, budget_s=0.0, hard_budget_s=0.0)
    assert len(times["a"]) == 1


def test_time_interleaved_rejects_bad_arguments():
    with pytest.raises(ValueError, match="candidates"):
        time_interleaved({})
    with pytest.raises(ValueError, match="min_reps"):
        time_interleaved({"a": lambda: None}, min_reps=5, max_reps=2)


def test_summarize():
    s = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert s == {"median_ms": 3.0, "q1_ms": 2.0, "q3_ms": 4.0, "min_ms": 1.0, "max_ms": 5.0, "reps": 5}
    assert summarize([7.0])["median_ms"] == 7.0
    with pytest.raises(ValueError, match="empty"):
        summarize([])


def test_format_table():
    text = format_table([{"a": "x", "b": 1.23456}, {"a": "longer", "b": None}], [("a", "name"), ("b", "ms")])
    lines = text.splitlines()
    assert lines[0].split() == ["name", "ms"] and lines[2].split() == ["x", "1.235"] and lines[3].split() == ["longer", "-"]


def test_bench_ops_quick_run_writes_json(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_ops", REPO / "scripts" / "bench_ops.py")
    bench_ops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_ops)
    out = tmp_path / "bench.json"
    code = bench_ops.main(["--quick", "--scale", "0.002", "--budget", "0", "--json", str(out)])
    result = json.loads(out.read_text())
    assert code == 0, [r.get("error") for r in result["results"]]
    assert set(result) == {"machine", "quick", "scale", "results"}
    assert result["machine"]["device"] == "cpu" and result["machine"]["torch_threads"] >= 1
    names = [r["name"] for r in result["results"]]
    assert {r["op"] for r in result["results"]} == {"roi_align", "nms", "batched_nms", "decode_boxes", "paste_masks"}
    assert len(names) == 15
    for row in result["results"]:
        assert {"median_ms", "q1_ms", "q3_ms", "min_ms", "max_ms", "reps"} <= set(row["segdet"])
        if result["machine"]["torchvision"]:
            assert row["outputs_match"] is True
            assert row["speedup"] == pytest.approx(row["torchvision"]["median_ms"] / row["segdet"]["median_ms"])
    assert "speedup" in capsys.readouterr().out


def test_bench_bf16_ops_quick_run_writes_json(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_bf16_ops", REPO / "scripts" / "bench_bf16_ops.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    code = bench.main(["--quick", "--workloads", "small", "--layouts", "channels_last", "--budget", "0",
                       "--json", str(out)])
    result = json.loads(out.read_text())
    # Native bf16 and cast-to-float32 give bitwise equal results on every case (exit code 1 otherwise).
    assert code == 0 and all(r["same"] for r in result["results"])
    names = [r["name"] for r in result["results"]]
    assert len(names) == 5 and names[-1] == "paste_masks small"
    for row in result["results"]:
        assert {"median_ms", "min_ms", "reps"} <= set(row["native"]) and row["speedup"] > 0
