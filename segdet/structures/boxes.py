"""Box utilities for boxes in (x1, y1, x2, y2) absolute-pixel format.

Every function takes and returns plain tensors ``Tensor[N, 4]`` (floating point). Nothing here reads a config
or keeps state.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "box_area",
    "box_iou",
    "boxes_to_rois",
    "check_boxes",
    "clip_boxes",
    "min_side_mask",
    "rescale_boxes",
]


def check_boxes(boxes: Tensor, name: str = "boxes") -> None:
    """Raise a ``ValueError`` (shape) or ``TypeError`` (type, dtype) naming ``name`` unless ``boxes`` is a floating
    ``Tensor[N, 4]``."""
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a Tensor[N, 4] (x1, y1, x2, y2), got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape [N, 4] (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got dtype {boxes.dtype}")


def box_area(boxes: Tensor) -> Tensor:
    """Areas in square pixels of ``boxes`` Tensor[N, 4] (x1, y1, x2, y2) -> Tensor[N].

    Like torchvision's ``box_area`` the area is ``(x2 - x1) * (y2 - y1)`` without clamping, so a
    malformed box with one inverted side has a negative area: callers filter with ``min_side_mask``.
    """
    check_boxes(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise intersection-over-union of Tensor[N, 4] and Tensor[M, 4] (x1, y1, x2, y2) -> Tensor[N, M].

    Two boxes whose union is zero (both degenerate) get IoU 0 rather than NaN, so matching code never
    has to special-case empty ground truth boxes.
    """
    check_boxes(boxes1, "boxes1")
    check_boxes(boxes2, "boxes2")
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(inter))


def clip_boxes(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Clip Tensor[N, 4] (x1, y1, x2, y2) to an image of ``image_size`` = (height, width) pixels.

    x is clamped to [0, width] and y to [0, height] (pixel edges, not centres). Returns a new tensor.
    """
    check_boxes(boxes)
    height, width = _check_size(image_size)
    x = boxes[:, 0::2].clamp(min=0, max=width)
    y = boxes[:, 1::2].clamp(min=0, max=height)
    return torch.stack((x[:, 0], y[:, 0], x[:, 1], y[:, 1]), dim=1)


def min_side_mask(boxes: Tensor, min_size: float) -> Tensor:
    """Bool Tensor[N]: True where both sides of the (x1, y1, x2, y2) box are at least ``min_size`` pixels.

    ``>=`` is torchvision's ``remove_small_boxes`` rule, which the proposal and detection filters must follow for
    parity: with ``min_size`` 0 a zero-width box is kept (NMS and scoring handle it), an inverted one is not.
    """
    check_boxes(boxes)
    return ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)


def rescale_boxes(boxes: Tensor, from_hw: Sequence[int], to_hw: Sequence[int]) -> Tensor:
    """Map Tensor[N, 4] (x1, y1, x2, y2) from an image of ``from_hw`` = (height, width) pixels to one of ``to_hw``.

    The per-axis ratio is computed as a float32 division, as torchvision does, so resized-image boxes map back to
    the same float32 values as torchvision's (the parity tests compare them exactly). Returns a new tensor.
    """
    check_boxes(boxes)
    ratio_h = torch.tensor(float(to_hw[0]), dtype=torch.float32) / torch.tensor(float(from_hw[0]), dtype=torch.float32)
    ratio_w = torch.tensor(float(to_hw[1]), dtype=torch.float32) / torch.tensor(float(from_hw[1]), dtype=torch.float32)
    return boxes * torch.stack([ratio_w, ratio_h, ratio_w, ratio_h]).to(boxes)


def boxes_to_rois(boxes: Sequence[Tensor], like: Tensor | None = None, name: str = "boxes") -> Tensor:
    """Per-image boxes -> the RoI rows RoI Align takes.

    Args:
        boxes: list (one entry per image of the batch) of Tensor[L_i, 4] (x1, y1, x2, y2), absolute pixels.
        like: dtype and device of the result when ``boxes`` is an empty list.
        name: the argument's name in error messages.
    Returns:
        Tensor[sum L_i, 5] rows (batch_index, x1, y1, x2, y2), the batch index stored in the boxes' dtype.
    """
    if not isinstance(boxes, (list, tuple)):
        raise TypeError(f"{name} must be a list of Tensor[L, 4] (one per image), got {type(boxes).__name__}")
    for i, b in enumerate(boxes):
        if not isinstance(b, Tensor) or b.dim() != 2 or b.shape[1] != 4:
            shape = tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__
            raise ValueError(f"{name}[{i}] must be a Tensor[L, 4] of (x1, y1, x2, y2), got {shape}")
    if len(boxes) == 0:
        return like.new_zeros((0, 5)) if like is not None else torch.zeros((0, 5))
    index = [torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)]
    return torch.cat([torch.cat(index, dim=0), torch.cat(list(boxes), dim=0)], dim=1)


def _check_size(image_size) -> tuple[int, int]:
    if len(image_size) != 2:
        raise ValueError(f"image_size must be (height, width), got {image_size!r}")
    height, width = (int(v) for v in image_size)
    if height < 0 or width < 0:
        raise ValueError(f"image_size must be non-negative (height, width), got {image_size!r}")
    return height, width
