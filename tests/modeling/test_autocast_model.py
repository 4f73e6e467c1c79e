"""The whole model under CPU bf16 autocast: training and inference run, outputs keep their dtypes, and
the low-precision network stays close to float32.

Tolerances: bf16 keeps 8 significant bits (unit roundoff 2^-9, ~0.2 %). ResNet-18 + FPN + the RPN conv is
~20 layers whose inputs and outputs are each rounded once, so independent roundings grow to about
sqrt(40) * 0.2 % ~ 1.3 % relative L2 error; measured on this model 1.1-2.4 %. The bound is 5 %: a
dropped float32 accumulation (bf16 sums over 3x3x64 products) or a layer run twice in bf16 exceeds it.
"""
import pytest
import torch

from segdet.config import compose_model_config
from segdet.modeling import build_model

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _model():
    torch.manual_seed(0)
    return build_model(compose_model_config("maskrcnn_small"), num_classes=4)


def _images(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 255, (3, 128, 160), dtype=torch.uint8, generator=g) for _ in range(n)]


def _targets(n=2):
    out = []
    for i in range(n):
        masks = torch.zeros(2, 128, 160, dtype=torch.uint8)
        masks[0, 10:40, 10 + i:50] = 1
        masks[1, 60:100, 70:120 - i] = 1
        boxes = torch.tensor([[10.0 + i, 10, 50, 40], [70, 60, 120 - i, 100]])
        out.append({"boxes": boxes, "labels": torch.tensor([1, 3]), "masks": masks})
    return out


def _rel(a, b):
    return float((a.float() - b.float()).norm() / a.float().norm())


def test_features_and_rpn_logits_stay_close_to_float32():
    model = _model().eval()
    batch = model.preprocess(_images(1))
    with torch.no_grad():
        f32 = model.backbone(batch.tensor)
        with torch.autocast(**BF16):
            f16 = model.backbone(batch.tensor)
            logits16, deltas16 = model.rpn.head(list(f16.values()))
        logits32, deltas32 = model.rpn.head(list(f32.values()))
    assert list(f16) == list(f32)
    for name in f32:
        assert f16[name].dtype == torch.bfloat16  # the network really ran in bf16
        assert _rel(f32[name], f16[name]) < 0.05, name
    for a, b in zip(logits32 + deltas32, logits16 + deltas16):
        assert _rel(a, b) < 0.05


def test_training_step_under_bf16_gives_float32_losses_and_gradients():
    model = _model().train()
    torch.manual_seed(1)
    losses32 = model(_images(), _targets())
    torch.manual_seed(1)
    with torch.autocast(**BF16):
        losses16 = model(_images(), _targets())
    assert set(losses16) == set(losses32)
    for name, value in losses16.items():
        assert value.dtype == torch.float32 and torch.isfinite(value), name
    # Same seeds, so the same anchors and (nearly) the same sampled RoIs: the losses agree to bf16 accuracy.
    total32, total16 = sum(losses32.values()), sum(losses16.values())
    assert float(total16.detach()) == pytest.approx(float(total32.detach()), rel=0.05)
    total16.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_inference_under_bf16_returns_float32_boxes_and_bool_masks():
    model = _model().eval()
    with torch.no_grad(), torch.autocast(**BF16):
        out = model(_images(2))
    assert len(out) == 2
    for r in out:
        assert r["boxes"].dtype == torch.float32 and r["scores"].dtype == torch.float32
        assert r["labels"].dtype == torch.int64 and r["masks"].dtype == torch.bool
        assert r["masks"].shape[1:] == (128, 160)
