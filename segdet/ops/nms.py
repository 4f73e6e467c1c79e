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

from segdet import _C  # loads the ops; check_* are their argument checks (csrc/ops/nms.h)

__all__ = ["batched_nms", "nms"]


# The wrappers check only what the schema cannot express (Python types); the op checks the tensors.
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


@torch.library.register_fake("segdet::nms")
def _nms_fake(dets: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    _C.check_nms_args(dets, scores)
    num_kept = torch.library.get_ctx().new_dynamic_size()
    return dets.new_empty((num_kept,), dtype=torch.int64)


@torch.library.register_fake("segdet::batched_nms")
def _batched_nms_fake(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    _C.check_batched_nms_args(boxes, scores, idxs)
    num_kept = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((num_kept,), dtype=torch.int64)
