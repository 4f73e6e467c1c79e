"""Detector outputs in original-image coordinates: box rescaling and mask pasting."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from segdet.ops import paste_masks

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
        # One fused kernel, bit-identical to the per-detection loop below (kept for half types).
        return paste_masks(masks, boxes, height, width, threshold)
    out = torch.zeros((masks.shape[0], height, width), dtype=torch.bool, device=masks.device)
    if masks.shape[0] == 0:
        return out
    size = masks.shape[-1]
    padded = F.pad(masks, (1, 1, 1, 1))
    scale = (size + 2.0) / size
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    cx = (boxes[:, 2] + boxes[:, 0]) * 0.5
    cy = (boxes[:, 3] + boxes[:, 1]) * 0.5
    grown = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=1).to(torch.int64).tolist()
    for i, (x1, y1, x2, y2) in enumerate(grown):
        # Integer box edges are inclusive, hence the + 1.
        w = max(x2 - x1 + 1, 1)
        h = max(y2 - y1 + 1, 1)
        xa, xb = max(x1, 0), min(x2 + 1, width)
        ya, yb = max(y1, 0), min(y2 + 1, height)
        if xa >= xb or ya >= yb:
            continue
        resized = F.interpolate(padded[i][None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        out[i, ya:yb, xa:xb] = resized[ya - y1 : yb - y1, xa - x1 : xb - x1] > threshold
    return out
