"""Joint transforms of an image and its instance targets.

Every transform is a callable ``(image, target, generator=None) -> (image, target)``:
image uint8 Tensor[3, H, W]; target with "boxes" float Tensor[M, 4] (x1, y1, x2, y2) absolute pixels and
"masks" uint8 Tensor[M, H, W] (other keys pass through). Random choices draw only from ``generator`` (a
torch.Generator; the global generator when None), so a seeded generator makes the result reproducible.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def _uniform(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


class Compose:
    """Applies transforms in order, threading one generator through them."""

    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, image, target, generator=None):
        for t in self.transforms:
            image, target = t(image, target, generator=generator)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


class ResizeShortestEdge:
    """Resizes so the shorter side equals a size drawn uniformly from ``min_size``, unless the longer side would
    then exceed ``max_size`` (pixels), in which case the longer side becomes ``max_size``.

    Boxes are scaled per axis by the actual size ratio (output px / input px); masks use nearest-neighbour
    sampling so they stay binary.
    """

    def __init__(self, min_size: int | Sequence[int], max_size: int | None = None):
        sizes = [min_size] if isinstance(min_size, int) else list(min_size)
        if not sizes or not all(isinstance(s, int) and s > 0 for s in sizes):
            raise ValueError(f"min_size must be a positive int or a non-empty list of them, got {min_size!r}")
        if max_size is not None and (not isinstance(max_size, int) or max_size <= 0):
            raise ValueError(f"max_size must be a positive int or None, got {max_size!r}")
        self.min_sizes = sizes
        self.max_size = max_size

    def output_size(self, height: int, width: int, short: int) -> tuple[int, int]:
        scale = short / min(height, width)
        if self.max_size is not None and max(height, width) * scale > self.max_size:
            scale = self.max_size / max(height, width)
        return max(int(round(height * scale)), 1), max(int(round(width * scale)), 1)

    def __call__(self, image, target, generator=None):
        if len(self.min_sizes) == 1:
            short = self.min_sizes[0]
        else:
            short = self.min_sizes[int(torch.randint(len(self.min_sizes), (), generator=generator))]
        height, width = image.shape[-2:]
        new_h, new_w = self.output_size(height, width, short)
        if (new_h, new_w) == (height, width):
            return image, target
        # antialias keeps downscaled images free of aliasing, matching what a photo at that size would look like
        resized = F.interpolate(image[None].float(), size=(new_h, new_w), mode="bilinear", align_corners=False,
                                antialias=True)[0]
        image = resized.round_().clamp_(0, 255).to(image.dtype)
        target = dict(target)
        if "boxes" in target:
            scale = torch.tensor([new_w / width, new_h / height] * 2, dtype=target["boxes"].dtype)
            target["boxes"] = target["boxes"] * scale
        if "masks" in target:
            masks = target["masks"]
            if masks.shape[0]:
                masks = F.interpolate(masks[None].float(), size=(new_h, new_w), mode="nearest")[0].to(masks.dtype)
            else:
                masks = masks.new_zeros((0, new_h, new_w))
            target["masks"] = masks
        return image, target

    def __repr__(self) -> str:
        return f"ResizeShortestEdge(min_size={self.min_sizes}, max_size={self.max_size})"


class RandomHorizontalFlip:
    """Mirrors image, boxes and masks left-right with probability ``prob``."""

    def __init__(self, prob: float = 0.5):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob!r}")
        self.prob = prob

    def __call__(self, image, target, generator=None):
        if _uniform(generator) >= self.prob:
            return image, target
        width = image.shape[-1]
        image = image.flip(-1)
        target = dict(target)
        if "boxes" in target:
            boxes = target["boxes"]
            target["boxes"] = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
        if "masks" in target:
            target["masks"] = target["masks"].flip(-1)
        return image, target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(prob={self.prob})"


def build_transforms(*, is_train: bool, min_size: int | Sequence[int] | None = None, max_size: int | None = None,
                     flip_prob: float = 0.5, test_min_size: int | None = None) -> Compose | None:
    """Training: multi-scale resize (when ``min_size`` is set) then flip; test: single-size resize (when
    ``test_min_size`` is set). None when nothing is to be done (the model resizes internally anyway)."""
    steps = []
    if is_train:
        if min_size is not None:
            steps.append(ResizeShortestEdge(list(min_size) if not isinstance(min_size, int) else min_size, max_size))
        if flip_prob > 0:
            steps.append(RandomHorizontalFlip(flip_prob))
    elif test_min_size is not None:
        steps.append(ResizeShortestEdge(test_min_size, max_size))
    return Compose(steps) if steps else None
