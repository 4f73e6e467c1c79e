"""Mask R-CNN mask pasting: box-relative mask probabilities -> full-image boolean masks.

Wraps ``torch.ops.segdet.paste_masks`` (csrc/ops/paste_masks.cpp) with argument checks and a
fake kernel for torch.compile. The output is boolean, so the op has no gradient.
"""
import numbers

import torch
from torch import Tensor

from segdet import _C  # loads the op; check_* are the ops' argument checks


def paste_masks(masks: Tensor, boxes: Tensor, height: int, width: int, threshold: float = 0.5) -> Tensor:
    """Paste each S x S mask into its box of a height x width image and threshold it.

    Bit-identical to the reference pasting (torchvision's ``paste_masks_in_image`` followed by
    ``> threshold``, and ``segdet.ops._reference.paste_masks_reference``): the mask is
    padded with one zero pixel per side, its box grown by (S + 2) / S about the centre and
    truncated to integer pixels (edges inclusive), and the padded mask resized bilinearly
    (``F.interpolate(..., mode="bilinear", align_corners=False)``) into that box. Unlike the
    reference, which resizes one detection at a time, one kernel interpolates only the pixels
    inside each box and writes every output row once.

    Args:
        masks: Tensor[D, S, S] mask probabilities (float32 or float64; on the CPU also bfloat16,
            pasted exactly as ``masks.float()`` would be).
        boxes: Tensor[D, 4] boxes (x1, y1, x2, y2) in absolute pixels of the target image,
            float32 or float64, same device as masks. Boxes outside the image are clipped;
            boxes whose grown coordinates are NaN, infinite or beyond +-2^31 px give an empty mask.
        height, width: size of the target image in pixels (>= 0).
        threshold: a pixel is foreground where the interpolated probability is ``> threshold``
            (compared in the masks' dtype; float32 for bfloat16 masks).

    Returns:
        bool Tensor[D, height, width] on masks' device.
    """
    _check_args(masks, boxes, height, width, threshold)
    # height/width stay SymInts when traced with a dynamic image size (the schema takes SymInt).
    return torch.ops.segdet.paste_masks.default(masks, boxes, height, width, float(threshold))


def _is_int(value) -> bool:
    return isinstance(value, (int, torch.SymInt)) and not isinstance(value, bool)


def _check_args(masks, boxes, height, width, threshold) -> None:
    # Python types only: the op checks shapes, dtypes, devices and sizes (csrc/ops/paste_masks.h).
    for name, tensor in (("masks", masks), ("boxes", boxes)):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"paste_masks: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    for name, value in (("height", height), ("width", width)):
        if not _is_int(value):
            raise TypeError(f"paste_masks: {name} must be an int (pixels), got {value!r}")
    if not isinstance(threshold, numbers.Real) or isinstance(threshold, bool):
        raise TypeError(f"paste_masks: threshold must be a number, got {threshold!r}")


@torch.library.register_fake("segdet::paste_masks")
def _paste_masks_fake(masks, boxes, height, width, threshold):
    if isinstance(height, torch.SymInt) or isinstance(width, torch.SymInt):
        # The C++ check takes concrete sizes; a symbolic one would be specialised to the example's value.
        # The tensor checks run with placeholder sizes, the size check becomes a runtime assertion.
        _C.check_paste_masks_args(masks, boxes, 0, 0)
        torch._check(height >= 0, lambda: f"paste_masks: height must be >= 0, got {height}")
        torch._check(width >= 0, lambda: f"paste_masks: width must be >= 0, got {width}")
    else:
        _C.check_paste_masks_args(masks, boxes, height, width)
    return masks.new_empty((masks.shape[0], height, width), dtype=torch.bool)



def paste_masks_crops(masks: Tensor, boxes: Tensor, height: int, width: int,
                      threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """``paste_masks`` without the full image: each detection's pasted mask cut to its box.

    Crop i holds exactly the pixels ``paste_masks(masks, boxes, height, width, threshold)[i]`` has inside the
    part of detection i's paste box (the grown, integer box) that lies in the image; outside that part the
    full-image mask is all False. Memory is the sum of the clipped box areas instead of D x height x width.

    Args: as ``paste_masks``.

    Returns:
        (crops, regions): ``crops`` bool Tensor[N], the D crops one after another, each row-major;
        ``regions`` int64 Tensor[D, 4] (x, y, w, h): crop i covers image columns x .. x + w - 1 and rows
        y .. y + h - 1 and starts at ``crops`` offset sum(w_j * h_j for j < i). A detection whose box misses
        the image (or is invalid) has region (0, 0, 0, 0) and no pixels. Both on masks' device.
    """
    _check_args(masks, boxes, height, width, threshold)
    return torch.ops.segdet.paste_masks_crops.default(masks, boxes, int(height), int(width), float(threshold))


@torch.library.register_fake("segdet::paste_masks_crops")
def _paste_masks_crops_fake(masks, boxes, height, width, threshold):
    _C.check_paste_masks_args(masks, boxes, height, width)
    # The crops' total size depends on the box values.
    total = torch.library.get_ctx().new_dynamic_size()
    return (masks.new_empty((total,), dtype=torch.bool),
            masks.new_empty((masks.shape[0], 4), dtype=torch.int64))
