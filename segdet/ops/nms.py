"""Non-maximum suppression: ``nms`` and ``batched_nms``, drop-in replacements for torchvision's.

Both return the same indices as torchvision.ops (same IoU arithmetic, same handling of ties):

* Boxes are (x1, y1, x2, y2) in absolute pixels; a box is suppressed when its IoU with a kept,
  higher-scoring box is strictly greater than ``iou_threshold``. IoU is computed in the box
  dtype as ``inter / (area1 + area2 - inter)`` with ``area = (x2 - x1) * (y2 - y1)``.
* Ties in score: ``nms`` keeps equal scores in increasing index order (a stable sort).
  ``batched_nms`` does too for up to 1000 boxes; above that, like torchvision's per-category
  path, it orders the kept boxes with ``torch.sort(descending=True)``, whose order among equal
  scores is unspecified but reproducible (on CPU it is exactly torchvision's).
* Non-finite values never crash or hang. A box with a NaN coordinate has a NaN area, hence NaN
  IoU: it is never suppressed and suppresses nothing. NaN scores sort above every number
  (as torch.sort does), so such boxes are kept first.
* float16/bfloat16 inputs are computed in float32 (exact widening), like torchvision's CUDA
  kernel; float32/float64 are computed in their own dtype.

batched_nms is a real per-category kernel, not the coordinate-offset trick, so it matches
torchvision's per-category path (used for more than 1000 boxes on CPU) bit for bit; below
that torchvision offsets the coordinates, which can change the rounding of borderline IoUs.
"""
import numbers

import torch
from torch import Tensor

__all__ = ["batched_nms", "nms"]


def _check_threshold(op: str, iou_threshold) -> float:
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, numbers.Real):
        raise TypeError(f"{op}: iou_threshold must be a real number, got {type(iou_threshold).__name__}")
    return float(iou_threshold)


def _check_tensor(op: str, name: str, value) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression.

    Args:
        boxes: Tensor[N, 4], (x1, y1, x2, y2) absolute pixels, floating point.
        scores: Tensor[N], same dtype and device as ``boxes``.
        iou_threshold: boxes whose IoU with a kept box is > iou_threshold are discarded.

    Returns:
        int64 Tensor[K]: indices of the kept boxes, in decreasing score order.
    """
    _check_tensor("nms", "boxes", boxes)
    _check_tensor("nms", "scores", scores)
    return torch.ops.segdet.nms(boxes, scores, _check_threshold("nms", iou_threshold))


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Non-maximum suppression within each category; boxes of different categories never interact.

    Args:
        boxes: Tensor[N, 4], (x1, y1, x2, y2) absolute pixels, floating point.
        scores: Tensor[N], same dtype and device as ``boxes``.
        idxs: integer Tensor[N], the category of each box (any integer values).
        iou_threshold: boxes whose IoU with a kept box of their category is > iou_threshold
            are discarded.

    Returns:
        int64 Tensor[K]: indices of the kept boxes, in decreasing score order.
    """
    _check_tensor("batched_nms", "boxes", boxes)
    _check_tensor("batched_nms", "scores", scores)
    _check_tensor("batched_nms", "idxs", idxs)
    return torch.ops.segdet.batched_nms(boxes, scores, idxs, _check_threshold("batched_nms", iou_threshold))


def _check_fake_args(op: str, boxes_name: str, boxes: Tensor, scores: Tensor) -> None:
    # Same conditions as detail::check_nms_args in csrc/ops/nms.h, so tracing fails early.
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{op}: {boxes_name} must be a 2-D tensor [N, 4] of (x1, y1, x2, y2), "
                         f"got shape {tuple(boxes.shape)}")
    if scores.dim() != 1:
        raise ValueError(f"{op}: scores must be a 1-D tensor [N], got shape {tuple(scores.shape)}")
    torch._check(boxes.shape[0] == scores.shape[0],
                 lambda: f"{op}: {boxes_name} and scores must have the same length N")
    if not boxes.dtype.is_floating_point:
        raise TypeError(f"{op}: {boxes_name} must be floating point, got {boxes.dtype}")
    if scores.dtype != boxes.dtype:
        raise TypeError(f"{op}: scores dtype ({scores.dtype}) must match {boxes_name} dtype ({boxes.dtype})")
    if scores.device != boxes.device:
        raise ValueError(f"{op}: scores device ({scores.device}) must match {boxes_name} device ({boxes.device})")


@torch.library.register_fake("segdet::nms")
def _nms_fake(dets: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    _check_fake_args("nms", "dets", dets, scores)
    num_kept = torch.library.get_ctx().new_dynamic_size()
    return dets.new_empty((num_kept,), dtype=torch.int64)


@torch.library.register_fake("segdet::batched_nms")
def _batched_nms_fake(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    _check_fake_args("batched_nms", "boxes", boxes, scores)
    if idxs.dim() != 1:
        raise ValueError(f"batched_nms: idxs must be a 1-D tensor [N], got shape {tuple(idxs.shape)}")
    torch._check(idxs.shape[0] == boxes.shape[0], lambda: "batched_nms: idxs must have one category per box")
    if idxs.dtype.is_floating_point or idxs.dtype.is_complex or idxs.dtype == torch.bool:
        raise TypeError(f"batched_nms: idxs must be an integer tensor, got {idxs.dtype}")
    if idxs.device != boxes.device:
        raise ValueError(f"batched_nms: idxs device ({idxs.device}) must match boxes device ({boxes.device})")
    num_kept = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((num_kept,), dtype=torch.int64)
