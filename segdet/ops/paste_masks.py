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


# ---- aligned pasting ---------------------------------------------------------------------------------------------
# The pasting above is torchvision's: the box is grown by (S + 2) / S, truncated to integer pixels with both edges
# included, and the padded mask resized into it, so a mask of all ones covers the box plus about one pixel on the
# right and bottom. Mask targets, however, are RoI-Aligned from the GT masks in continuous coordinates
# (aligned=True), and "aligned" pasting is the inverse of that sampling: image pixel (x, y), centre (x + 0.5,
# y + 0.5), reads the S x S mask bilinearly at u = (x + 0.5 - x1) * S / (x2 - x1) - 0.5 (rows alike), zero outside
# the mask. A mask of all ones then covers exactly the pixels whose centres lie inside the box. On objects of
# ten to fifty pixels the one-pixel growth costs several points of mask AP (README, Results).
#
# Bilinear sampling with zero padding is separable: the weight of mask cell j for coordinate u is the hat
# max(0, 1 - |u - j|). So a detection's pasted probabilities are Wy @ mask @ Wx^T, with Wy [H, S] and Wx [W, S];
# two batched matmuls, no data-dependent shapes (so torch.export traces it with a dynamic image size).

PASTE_MODES = ("torchvision", "aligned")


def check_paste_mode(mode: str, *, key: str = "mask_paste") -> str:
    """``mode`` if it is one of PASTE_MODES, else ValueError naming ``key``."""
    if mode not in PASTE_MODES:
        raise ValueError(f"{key} must be one of {', '.join(PASTE_MODES)}, got {mode!r}")
    return mode


def _hat_weights(lo: Tensor, hi: Tensor, size: int, start: Tensor, count, dtype) -> Tensor:
    """[D, count, size] bilinear weights of the mask cells for the pixels start .. start + count - 1 of each
    detection's axis (pixel centres at p + 0.5), the box spanning lo .. hi on that axis. A box with a non-positive
    or non-finite extent gets all-zero weights (an empty mask)."""
    extent = hi - lo
    valid = torch.isfinite(lo) & torch.isfinite(hi) & (extent > 0)
    scale = torch.where(valid, size / torch.where(valid, extent, torch.ones_like(extent)), torch.zeros_like(extent))
    pixels = start[:, None].to(dtype) + torch.arange(count, device=lo.device, dtype=dtype)[None, :] + 0.5
    u = (pixels - torch.where(valid, lo, torch.zeros_like(lo))[:, None]) * scale[:, None] - 0.5  # [D, count]
    cells = torch.arange(size, device=lo.device, dtype=dtype)
    weights = (1 - (u[:, :, None] - cells).abs()).clamp_(min=0)
    return weights * valid[:, None, None].to(dtype)


def _aligned_args(masks: Tensor, boxes: Tensor, height, width, threshold) -> None:
    # Plain torch checks (no extension call), so torch.export traces them; torch._check_value raises ValueError in
    # eager code and becomes a runtime assertion for the unbacked detection count.
    _check_args(masks, boxes, height, width, threshold)
    if masks.dim() != 3 or masks.shape[-1] != masks.shape[-2]:
        raise ValueError(f"paste_masks_aligned: masks must be [D, S, S], got {tuple(masks.shape)}")
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"paste_masks_aligned: boxes must be [D, 4], got {tuple(boxes.shape)}")
    if not isinstance(masks.shape[0], torch.SymInt) and masks.shape[0] != boxes.shape[0]:
        raise ValueError(f"paste_masks_aligned: masks has {masks.shape[0]} rows but boxes has {boxes.shape[0]}")
    # Traced with an unbacked detection count: a runtime assertion (its message must be a constant for dynamo).
    torch._check_value(masks.shape[0] == boxes.shape[0], lambda: "paste_masks_aligned: masks and boxes rows differ")
    if masks.device != boxes.device:
        raise ValueError(f"paste_masks_aligned: masks ({masks.device}) and boxes ({boxes.device}) must be on one device")
    if not (masks.is_floating_point() and boxes.is_floating_point()):
        raise TypeError(f"paste_masks_aligned: masks and boxes must be floating point, got {masks.dtype} and "
                        f"{boxes.dtype}")
    if not 0.0 <= float(threshold) < 1.0:
        raise ValueError(f"paste_masks_aligned: threshold must be in [0, 1), got {threshold}")


def _aligned_inputs(masks: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor, torch.dtype]:
    # float64 stays float64; float32, half and bf16 are pasted in float32.
    dtype = masks.dtype if masks.dtype == torch.float64 else torch.float32
    return masks.to(dtype), boxes.to(dtype), dtype


def paste_masks_aligned(masks: Tensor, boxes: Tensor, height: int, width: int, threshold: float = 0.5) -> Tensor:
    """Paste each S x S mask into its box of a height x width image by pixel-centre sampling and threshold it.

    Pixel (x, y) is foreground where the mask, sampled bilinearly (zero outside it) at
    ((x + 0.5 - x1) * S / (x2 - x1) - 0.5, (y + 0.5 - y1) * S / (y2 - y1) - 0.5), is ``> threshold``: the inverse
    of the aligned RoI Align that made the training targets (equal to ``F.grid_sample(..., align_corners=False)``
    with zero padding over the pixel centres).

    Args:
        masks: Tensor[D, S, S] mask probabilities (float32/float64; bfloat16 is pasted in float32).
        boxes: Tensor[D, 4] (x1, y1, x2, y2) absolute pixels of the target image, same device. A box with
            x2 <= x1, y2 <= y1 or a non-finite coordinate gives an empty mask.
        height, width: target image size in pixels (>= 0); threshold: in [0, 1).
    Returns:
        bool Tensor[D, height, width] on masks' device.
    """
    _aligned_args(masks, boxes, height, width, threshold)
    probs, boxes, dtype = _aligned_inputs(masks, boxes)
    zero = torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)
    size = probs.shape[-1]
    wy = _hat_weights(boxes[:, 1], boxes[:, 3], size, zero, height, dtype)  # [D, H, S]
    wx = _hat_weights(boxes[:, 0], boxes[:, 2], size, zero, width, dtype)  # [D, W, S]
    return torch.bmm(torch.bmm(wy, probs), wx.transpose(1, 2)) > threshold


def aligned_paste_regions(boxes: Tensor, mask_size: int, height: int, width: int) -> Tensor:
    """int64 Tensor[D, 4] (x, y, w, h): the part of the image where ``paste_masks_aligned`` can be True for each
    box (the box grown by one mask cell per side, in whole pixels, clipped to the image); (0, 0, 0, 0) for a box
    that misses the image or is invalid."""
    b = boxes.double()
    valid = torch.isfinite(b).all(dim=1) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    b = torch.where(valid[:, None], b, torch.zeros_like(b))
    cell_w, cell_h = (b[:, 2] - b[:, 0]) / mask_size, (b[:, 3] - b[:, 1]) / mask_size
    x0 = torch.floor(b[:, 0] - cell_w).clamp(0, width)
    y0 = torch.floor(b[:, 1] - cell_h).clamp(0, height)
    x1 = torch.ceil(b[:, 2] + cell_w).clamp(0, width)
    y1 = torch.ceil(b[:, 3] + cell_h).clamp(0, height)
    regions = torch.stack([x0, y0, x1 - x0, y1 - y0], dim=1).to(torch.int64)
    empty = ~valid | (regions[:, 2] <= 0) | (regions[:, 3] <= 0)
    return torch.where(empty[:, None], torch.zeros_like(regions), regions)


def paste_masks_aligned_crops(masks: Tensor, boxes: Tensor, height: int, width: int,
                              threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """``paste_masks_aligned`` without the full image, in ``paste_masks_crops``'s format: (crops bool Tensor[N],
    the D crops row-major one after another; regions int64 Tensor[D, 4] (x, y, w, h) from
    ``aligned_paste_regions``). Outside its region a detection's full-image mask is all False."""
    _aligned_args(masks, boxes, height, width, threshold)
    probs, fboxes, dtype = _aligned_inputs(masks, boxes)
    size = probs.shape[-1]
    regions = aligned_paste_regions(boxes, size, int(height), int(width))
    crops = []
    for i, (x, y, w, h) in enumerate(regions.tolist()):
        if w == 0 or h == 0:
            continue
        box = fboxes[i:i + 1]
        wy = _hat_weights(box[:, 1], box[:, 3], size, regions[i:i + 1, 1], h, dtype)[0]
        wx = _hat_weights(box[:, 0], box[:, 2], size, regions[i:i + 1, 0], w, dtype)[0]
        crops.append(((wy @ probs[i] @ wx.T) > threshold).reshape(-1))
    flat = torch.cat(crops) if crops else torch.zeros(0, dtype=torch.bool, device=masks.device)
    return flat, regions.to(masks.device)
