"""Multi-level RoI Align: pools each box from the FPN level that matches its size."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.fx.experimental.symbolic_shapes import guard_or_false

from segdet.structures import boxes_to_rois


def assign_boxes_to_levels(
    boxes: torch.Tensor,
    min_level: int,
    max_level: int,
    canonical_box_size: float = 224.0,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> torch.Tensor:
    """FPN level of each box (Lin et al., eq. 1), as an index from 0 (= ``min_level``).

    ``k = floor(canonical_level + log2(sqrt(area) / canonical_box_size) + eps)`` clamped to
    [min_level, max_level]; eps sits outside the log as in torchvision's LevelMapper so that
    boxes exactly on a level boundary (e.g. 224 px) land on the upper level.

    Args:
        boxes: Tensor[K, 4] x1y1x2y2 in input-image pixels.
    Returns:
        int64 Tensor[K] in [0, max_level - min_level].
    """
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    sizes = torch.sqrt(area)
    levels = torch.floor(canonical_level + torch.log2(sizes / canonical_box_size) + eps)
    levels = torch.clamp(levels, min=min_level, max=max_level)
    return (levels - min_level).to(torch.int64)


class ROIPooler(nn.Module):
    """RoI Align over several feature levels (torchvision's MultiScaleRoIAlign behaviour).

    Args:
        output_size: pooled size (oh, ow) or an int.
        scales: per level, feature size / input size (e.g. 1/4, 1/8, 1/16, 1/32); must be
            powers of two, as the level of a box is derived from them.
        sampling_ratio: RoI Align samples per bin side (<= 0: adaptive).
        aligned: half-pixel offset in RoI Align (detectron2 uses True, torchvision False).
        canonical_box_size, canonical_level, eps: level mapping, see ``assign_boxes_to_levels``.
    """

    def __init__(
        self,
        *,
        output_size,
        scales: Sequence[float],
        sampling_ratio: int = 0,
        aligned: bool = True,
        canonical_box_size: float = 224.0,
        canonical_level: int = 4,
        eps: float = 1e-6,
    ):
        super().__init__()
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        self.output_size = tuple(int(v) for v in output_size)
        self.scales = [float(s) for s in scales]
        levels = [-math.log2(s) for s in self.scales]
        if any(abs(lv - round(lv)) > 1e-6 for lv in levels):
            raise ValueError(f"scales must be powers of 2, got {self.scales}")
        self.min_level = int(round(levels[0]))
        self.max_level = int(round(levels[-1]))
        if self.max_level - self.min_level + 1 != len(self.scales):
            raise ValueError(f"scales must be consecutive powers of 2 (e.g. 1/4, 1/8, ...), got {self.scales}")
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        self.canonical_box_size = float(canonical_box_size)
        self.canonical_level = int(canonical_level)
        self.eps = float(eps)

    def forward(self, features: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor]) -> torch.Tensor:
        """
        Args:
            features: per level Tensor[B, C, H_l, W_l], one per entry of ``scales``.
            boxes: list (one per image, B) of Tensor[L_i, 4] x1y1x2y2 in input-image pixels.
        Returns:
            Tensor[sum L_i, C, oh, ow], in the order of the concatenated boxes.
        """
        from segdet.ops import roi_align

        if len(features) != len(self.scales):
            raise ValueError(f"features has {len(features)} levels, the pooler expects {len(self.scales)}")
        if len(boxes) != features[0].shape[0]:
            raise ValueError(f"boxes must be a list of {features[0].shape[0]} Tensor[L, 4] (one per image), got {len(boxes)}")
        rois = boxes_to_rois(boxes, like=features[0])
        num_channels = features[0].shape[1]
        if len(self.scales) == 1:
            return roi_align(features[0], rois, self.output_size, self.scales[0], self.sampling_ratio, self.aligned)
        levels = assign_boxes_to_levels(
            rois[:, 1:], self.min_level, self.max_level, self.canonical_box_size, self.canonical_level, self.eps
        )
        out = features[0].new_zeros((rois.shape[0], num_channels) + self.output_size)
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            idx = torch.nonzero(levels == level).squeeze(1)
            # Skipping an empty level only saves a kernel launch; under torch.export the count is unbacked
            # (data-dependent) and unknown, so the traced graph always pools (roi_align takes zero RoIs).
            if guard_or_false(idx.numel() == 0):
                continue
            pooled = roi_align(feature, rois[idx], self.output_size, scale, self.sampling_ratio, self.aligned)
            out[idx] = pooled.to(out.dtype)
        return out
