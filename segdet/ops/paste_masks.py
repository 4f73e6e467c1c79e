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


def _check_args(masks, boxes, height, width, threshold, op="paste_masks") -> None:
    # Python types only: the op checks shapes, dtypes, devices and sizes (csrc/ops/paste_masks*.h).
    for name, tensor in (("masks", masks), ("boxes", boxes)):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    for name, value in (("height", height), ("width", width)):
        if not _is_int(value):
            raise TypeError(f"{op}: {name} must be an int (pixels), got {value!r}")
    if not isinstance(threshold, numbers.Real) or isinstance(threshold, bool):
        raise TypeError(f"{op}: threshold must be a number, got {threshold!r}")


def _check_traced_sizes(op: str, height, width, check) -> None:
    """Runs ``check(height, width)``, the op's C++ argument check, from a fake kernel. The C++ check takes concrete
    sizes, and a symbolic one would be specialised to the example's value: with a SymInt size the tensor checks run
    with placeholder sizes and the size check becomes a runtime assertion."""
    if isinstance(height, torch.SymInt) or isinstance(width, torch.SymInt):
        check(0, 0)
        torch._check(height >= 0, lambda: f"{op}: height must be >= 0, got {height}")
        torch._check(width >= 0, lambda: f"{op}: width must be >= 0, got {width}")
    else:
        check(height, width)


@torch.library.register_fake("segdet::paste_masks")
def _paste_masks_fake(masks, boxes, height, width, threshold):
    _check_traced_sizes("paste_masks", height, width, lambda h, w: _C.check_paste_masks_args(masks, boxes, h, w))
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


# ---- aligned pasting ---------------------------------------------------------------------------------------------
# The pasting above is torchvision's: the box is grown by (S + 2) / S, truncated to integer pixels with both edges
# included, and the padded mask resized into it, so a mask of all ones covers the box plus about one pixel on the
# right and bottom. Mask targets, however, are RoI-Aligned from the GT masks in continuous coordinates
# (aligned=True), and "aligned" pasting is the inverse of that sampling: image pixel (x, y), centre (x + 0.5,
# y + 0.5), reads the S x S mask bilinearly at u = (x + 0.5 - x1) * S / (x2 - x1) - 0.5 (rows alike), zero outside
# the mask. A mask of all ones then covers exactly the pixels whose centres lie inside the box. On objects of
# ten to fifty pixels the one-pixel growth costs several points of mask AP (README, Results).
#
# The kernels are C++/CUDA (csrc/ops/paste_masks_aligned_math.h, cpu/ and cuda/paste_masks_aligned_kernel*).

PASTE_MODES = ("torchvision", "aligned")


def check_paste_mode(mode: str, *, key: str = "mask_paste") -> str:
    """``mode`` if it is one of PASTE_MODES, else ValueError naming ``key``."""
    if mode not in PASTE_MODES:
        raise ValueError(f"{key} must be one of {', '.join(PASTE_MODES)}, got {mode!r}")
    return mode


def paste_masks_aligned(masks: Tensor, boxes: Tensor, height: int, width: int, threshold: float = 0.5) -> Tensor:
    """Paste each S x S mask into its box of a height x width image by pixel-centre sampling and threshold it.

    Pixel (x, y) is foreground where the mask, sampled bilinearly (zero outside it) at
    ((x + 0.5 - x1) * S / (x2 - x1) - 0.5, (y + 0.5 - y1) * S / (y2 - y1) - 0.5), is ``> threshold``: the inverse
    of the aligned RoI Align that made the training targets (equal to ``F.grid_sample(..., align_corners=False)``
    with zero padding over the pixel centres). The CPU and CUDA kernels round every step alike and give the same
    masks.

    Args:
        masks: Tensor[D, S, S] mask probabilities, any floating dtype (float64 is pasted in float64; float32,
            bfloat16 and float16 in float32).
        boxes: Tensor[D, 4] (x1, y1, x2, y2) absolute pixels of the target image, any floating dtype, same device.
            A box with x2 <= x1, y2 <= y1 or a non-finite coordinate gives an empty mask.
        height, width: target image size in pixels (>= 0); threshold: in [0, 1).
    Returns:
        bool Tensor[D, height, width] on masks' device.
    """
    _check_args(masks, boxes, height, width, threshold, op="paste_masks_aligned")
    # height/width stay SymInts when traced with a dynamic image size (the schema takes SymInt).
    return torch.ops.segdet.paste_masks_aligned.default(masks, boxes, height, width, float(threshold))


@torch.library.register_fake("segdet::paste_masks_aligned")
def _paste_masks_aligned_fake(masks, boxes, height, width, threshold):
    op = "paste_masks_aligned"
    _check_traced_sizes(op, height, width,
                        lambda h, w: _C.check_paste_masks_aligned_args(op, masks, boxes, h, w, threshold))
    return masks.new_empty((masks.shape[0], height, width), dtype=torch.bool)


def paste_masks_aligned_crops(masks: Tensor, boxes: Tensor, height: int, width: int,
                              threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """``paste_masks_aligned`` without the full image, in ``paste_masks_crops``'s format: (crops bool Tensor[N],
    the D crops row-major one after another; regions int64 Tensor[D, 4] (x, y, w, h)). Region i is box i grown by
    one mask cell per side, floor/ceil to whole pixels and clipped to the image, (0, 0, 0, 0) when that is empty
    or the box invalid; outside its region a detection's full-image mask is all False, inside the crop holds its
    pixels exactly."""
    _check_args(masks, boxes, height, width, threshold, op="paste_masks_aligned_crops")
    return torch.ops.segdet.paste_masks_aligned_crops.default(masks, boxes, int(height), int(width), float(threshold))


@torch.library.register_fake("segdet::paste_masks_aligned_crops")
def _paste_masks_aligned_crops_fake(masks, boxes, height, width, threshold):
    _C.check_paste_masks_aligned_args("paste_masks_aligned_crops", masks, boxes, height, width, threshold)
    total = torch.library.get_ctx().new_dynamic_size()
    return (masks.new_empty((total,), dtype=torch.bool),
            masks.new_empty((masks.shape[0], 4), dtype=torch.int64))
