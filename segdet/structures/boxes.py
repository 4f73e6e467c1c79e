"""Box utilities for boxes in (x1, y1, x2, y2) absolute-pixel format.

Every function takes and returns plain tensors ``Tensor[N, 4]`` (floating point); a box is empty when
``x2 <= x1`` or ``y2 <= y1``. Nothing here reads a config or keeps state.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "box_area",
    "box_iou",
    "clip_boxes",
    "nonempty_boxes",
    "scale_boxes",
    "check_boxes",
]


def check_boxes(boxes: Tensor, name: str = "boxes") -> Tensor:
    """Raise a ``ValueError`` naming ``name`` unless ``boxes`` is a floating ``Tensor[N, 4]``; return it."""
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a Tensor[N, 4] (x1, y1, x2, y2), got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape [N, 4] (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got dtype {boxes.dtype}")
    return boxes


def box_area(boxes: Tensor) -> Tensor:
    """Areas in square pixels of ``boxes`` Tensor[N, 4] (x1, y1, x2, y2) -> Tensor[N].

    Like torchvision's ``box_area`` the area is ``(x2 - x1) * (y2 - y1)`` without clamping, so a
    malformed box with one inverted side has a negative area: callers filter with ``nonempty_boxes``.
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


def nonempty_boxes(boxes: Tensor, min_size: float = 0.0) -> Tensor:
    """Bool Tensor[N]: True where both sides of the (x1, y1, x2, y2) box are longer than ``min_size`` pixels."""
    check_boxes(boxes)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return (widths > min_size) & (heights > min_size)


def scale_boxes(boxes: Tensor, scale_x: float, scale_y: float | None = None) -> Tensor:
    """Scale Tensor[N, 4] (x1, y1, x2, y2) coordinates by ``scale_x`` horizontally and ``scale_y`` vertically.

    ``scale_y`` defaults to ``scale_x``. Used to map boxes between a resized image and the original
    (scale = new_size / old_size per axis). Returns a new tensor.
    """
    check_boxes(boxes)
    if scale_y is None:
        scale_y = scale_x
    factors = boxes.new_tensor([scale_x, scale_y, scale_x, scale_y])
    return boxes * factors


def _check_size(image_size) -> tuple[int, int]:
    if len(image_size) != 2:
        raise ValueError(f"image_size must be (height, width), got {image_size!r}")
    height, width = (int(v) for v in image_size)
    if height < 0 or width < 0:
        raise ValueError(f"image_size must be non-negative (height, width), got {image_size!r}")
    return height, width
