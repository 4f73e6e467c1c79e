"""train.amp / eval.amp through scripts/train.py on the CPU, and the amp setting's checks."""
import json
import logging

import pytest
import torch

import segdet.utils.amp as amp_mod

from .train_script import run_train

_run = run_train


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cpu_training_and_evaluation_under_autocast(tmp_path, monkeypatch, amp):
    assert _run(tmp_path, monkeypatch, f"train.amp={amp}", "eval.amp=bf16") == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in records if "loss" in r]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in losses)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "bbox_AP" in metrics or any(k.startswith("bbox") for k in metrics)
    ckpt = torch.load(next((tmp_path / "run" / "checkpoints").glob("*.pt")), weights_only=True)
    # fp16 scales the loss (and checkpoints the scaler); bf16 has float32's exponent range and needs none.
    assert ("grad_scaler" in ckpt) == (amp == "fp16")


@pytest.mark.parametrize("override,key", [("train.amp=bf17", "train.amp"), ("eval.amp=half", "eval.amp")])
def test_bad_amp_value_fails_before_training_naming_the_key(tmp_path, monkeypatch, override, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        _run(tmp_path, monkeypatch, override)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_resolve_amp_says_when_the_cpu_cannot_serve_bf16(monkeypatch, caplog):
    monkeypatch.setattr(amp_mod, "cpu_has_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="segdet.utils.amp"):
        assert amp_mod.resolve_amp("bf16", "cpu", key="train.amp") is torch.bfloat16
    assert "no native bf16" in caplog.text and "train.amp" in caplog.text
    caplog.clear()
    monkeypatch.setattr(amp_mod, "cpu_has_bf16", lambda: True)
    with caplog.at_level(logging.WARNING, logger="segdet.utils.amp"):
        assert amp_mod.resolve_amp("bf16", "cpu") is torch.bfloat16
        assert amp_mod.resolve_amp("none", "cpu") is None
    assert caplog.text == ""


def test_amp_auto_is_bf16_only_where_the_device_runs_it_natively(monkeypatch, caplog):
    monkeypatch.setattr(amp_mod, "cpu_has_bf16", lambda: True)
    with caplog.at_level(logging.INFO, logger="segdet.utils.amp"):
        assert amp_mod.resolve_amp("auto", "cpu", key="train.amp") is torch.bfloat16
    assert "train.amp=auto: bf16" in caplog.text
    caplog.clear()
    monkeypatch.setattr(amp_mod, "cpu_has_bf16", lambda: False)
    with caplog.at_level(logging.INFO, logger="segdet.utils.amp"):
        assert amp_mod.resolve_amp("auto", "cpu", key="train.amp") is None
    assert "float32" in caplog.text and "warning" not in caplog.text.lower()
    # A GPU that cannot be asked (none here, or one without bf16) stays in float32.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert amp_mod.resolve_amp("auto", "cuda") is None
