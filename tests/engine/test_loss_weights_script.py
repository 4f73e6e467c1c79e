"""train.loss_weights through scripts/train.py with the real model: weights reach the total, names are checked."""
import importlib.util
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[2]
TINY = ["data.generator.image_size=64", "data.generator.num_train=4", "data.generator.num_val=2",
        "data.num_workers=0", "model.min_size=64", "model.max_size=64", "train.batch_size=2", "train.log_period=1",
        "eval.num_overlays=0", "train.checkpoint_period=0", "train.max_iter=2", "cpu_threads=1"]


def _run(tmp_path, monkeypatch, *overrides) -> int:
    monkeypatch.setenv("SEGDET_CACHE", str(tmp_path / "cache"))
    spec = importlib.util.spec_from_file_location("segdet_train_script", ROOT / "scripts" / "train.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", [*TINY, *overrides])
    return script.run(cfg, str(tmp_path / "run"))


def test_weighted_total_is_logged_next_to_unweighted_terms(tmp_path, monkeypatch):
    # ++ adds the key or overrides it, whether or not conf/train.yaml lists it.
    assert _run(tmp_path, monkeypatch, "++train.loss_weights.loss_mask=2.0", "++train.loss_weights.loss_box=0.5") == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for r in (r for r in records if "loss" in r):
        terms = {k: v for k, v in r.items() if k.startswith("loss_")}
        assert set(terms) == {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "loss_mask"}
        expected = sum(v * {"loss_mask": 2.0, "loss_box": 0.5}.get(k, 1.0) for k, v in terms.items())
        assert r["loss"] == pytest.approx(expected, rel=1e-6)
        assert r["loss"] != pytest.approx(sum(terms.values()), rel=1e-3)


def test_unknown_loss_name_fails_naming_it(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="loss_maks"):
        _run(tmp_path, monkeypatch, "++train.loss_weights.loss_maks=2.0")
    assert not list((tmp_path / "run").glob("checkpoints/*.pt"))
