"""train.loss_weights through scripts/train.py with the real model: weights reach the total, names are checked."""
import json

import pytest

from .train_script import run_train

_run = run_train


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
