"""Comparison of a package's detections with the eager model's (tests/export)."""
import torch


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
