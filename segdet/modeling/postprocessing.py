"""Detector outputs in original-image coordinates: box rescaling and mask pasting."""
from __future__ import annotations

import torch

from segdet.ops import paste_masks
from segdet.ops._reference import paste_masks_reference

_OP_DTYPES = (torch.float32, torch.float64)


def rescale_boxes(boxes: torch.Tensor, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> torch.Tensor:
    """Map Tensor[N, 4] x1y1x2y2 boxes from an image of size ``from_hw`` to one of ``to_hw`` (height, width)."""
    ratio_h = torch.tensor(float(to_hw[0]), dtype=torch.float32) / torch.tensor(float(from_hw[0]), dtype=torch.float32)
    ratio_w = torch.tensor(float(to_hw[1]), dtype=torch.float32) / torch.tensor(float(from_hw[1]), dtype=torch.float32)
    return boxes * torch.stack([ratio_w, ratio_h, ratio_w, ratio_h]).to(boxes)


def paste_masks_in_image(masks: torch.Tensor, boxes: torch.Tensor, image_hw: tuple[int, int], threshold: float = 0.5):
    """Paste box-relative mask probabilities into a full image and threshold them.

    Each S x S mask is padded by one zero pixel on every side (so the mask fades out at the box
    border instead of being cut) and its box grown to match, the grown box is rounded to integer
    pixels and the mask resized bilinearly into it (torchvision's pasting, which the parity tests
    rely on).

    Args:
        masks: Tensor[D, S, S] probabilities in [0, 1].
        boxes: Tensor[D, 4] x1y1x2y2 in the pixels of the target image.
        image_hw: (height, width) of the target image.
        threshold: probability above which a pixel belongs to the instance.
    Returns:
        bool Tensor[D, height, width].
    """
    if masks.dim() != 3 or masks.shape[0] != boxes.shape[0]:
        raise ValueError(f"masks must be Tensor[D, S, S] matching boxes Tensor[D, 4], got {tuple(masks.shape)} and {tuple(boxes.shape)}")
    height, width = int(image_hw[0]), int(image_hw[1])
    if masks.dtype in _OP_DTYPES and boxes.dtype in _OP_DTYPES:
        # One fused kernel, bit-identical to the per-detection F.interpolate loop.
        return paste_masks(masks, boxes, height, width, threshold)
    # Half-precision masks: the per-detection F.interpolate loop the op reproduces.
    return paste_masks_reference(masks, boxes, height, width, threshold)
