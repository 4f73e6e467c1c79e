"""Detector outputs -> COCO results entries, the one conversion prediction and evaluation share.

Masks are encoded to COCO RLE either from full-image bool masks (``"masks"``, Tensor[D, H, W]) or, without ever
holding D x H x W, from the model's unpasted RoI masks (``"mask_probs"``, see ``MaskRCNN.mask_output``): those are
pasted by ``segdet.ops.paste_masks_crops`` into box-sized crops, a bounded number of pixels at a time, and each crop
is run-length encoded in place of its full-image mask.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import numpy as np
import torch
from pycocotools import mask as mask_utils

__all__ = [
    "DEFAULT_MAX_CROP_PIXELS",
    "crop_to_rle",
    "deferred_mask_pasting",
    "encode_mask_results",
    "iter_mask_crops",
    "mask_probs_to_rles",
    "output_rles",
    "split_crops",
    "to_coco_results",
]

# Pixels (bytes, as bool) of crops pasted at once: 64 MiB keeps 100 full-image detections of a 12-megapixel
# photo (1.2 GB as one D x H x W paste) within a small, fixed working set.
DEFAULT_MAX_CROP_PIXELS = 1 << 26


def _to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _compressed(rle: dict) -> dict:
    rle["counts"] = rle["counts"].decode("ascii")  # str, so the entry is json-ready
    return rle


def encode_mask_results(masks) -> list[dict]:
    """Compressed RLEs (counts as str, json-ready) of bool/uint8 masks [D, H, W] (or [D, 1, H, W]; float masks
    are thresholded at 0.5)."""
    masks = _to_numpy(masks)
    if masks.ndim == 4:
        masks = masks[:, 0]
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape [D, H, W] or [D, 1, H, W], got {list(masks.shape)}")
    if masks.dtype.kind == "f":
        masks = masks > 0.5
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [_compressed(rle) for rle in rles]


def crop_to_rle(crop: np.ndarray, x: int, y: int, height: int, width: int) -> dict:
    """Compressed COCO RLE of the height x width mask that is ``crop`` (bool [h, w]) at column ``x``, row ``y``
    and False everywhere else; the full mask is never built.

    COCO RLE counts alternate runs of 0 and 1 over the pixels in column-major order, starting with 0s. Inside
    the crop's columns a run of 1s starts/ends where a column changes value going down; runs of adjacent
    columns join when the crop spans the whole image height. Transitions are found along the crop's rows
    (contiguous memory, no transposed copy) and sorted into column-major order afterwards: a crop of a
    12-megapixel image takes tens of milliseconds.
    """
    crop = np.asarray(crop, dtype=bool)
    h, w = crop.shape
    if h and w and not (0 <= x and x + w <= width and 0 <= y and y + h <= height):
        raise ValueError(f"crop [{h}, {w}] at (x={x}, y={y}) does not fit a {height} x {width} image")
    total = int(height) * int(width)
    padded = np.zeros((h + 2, w), dtype=bool)  # a False row above and below the crop
    padded[1:-1] = crop
    above, below = padded[:-1], padded[1:]
    start_row, start_col = np.nonzero(below & ~above)  # a run of 1s starts at crop row start_row
    end_row, end_col = np.nonzero(above & ~below)  # ... and ends before crop row end_row
    # Runs are disjoint and ordered, so the sorted starts and the sorted ends pair up.
    starts = np.sort((x + start_col).astype(np.int64) * height + y + start_row)
    ends = np.sort((x + end_col).astype(np.int64) * height + y + end_row)
    if len(starts) > 1:
        joined = ends[:-1] == starts[1:]
        starts = starts[np.concatenate(([True], ~joined))]
        ends = ends[np.concatenate((~joined, [True]))]
    counts = np.empty(2 * len(starts) + 1, dtype=np.int64)
    if len(starts):
        counts[0] = starts[0]
        counts[1:-1:2] = ends - starts
        counts[2:-1:2] = starts[1:] - ends[:-1]
        counts[-1] = total - ends[-1]
    else:
        counts[0] = total
    if len(counts) > 1 and counts[-1] == 0:  # pycocotools ends on the last run of 1s
        counts = counts[:-1]
    rle = mask_utils.frPyObjects({"size": [int(height), int(width)], "counts": counts.tolist()}, height, width)
    return _compressed(rle)


def split_crops(crops: torch.Tensor, regions: torch.Tensor) -> list[tuple[np.ndarray, int, int]]:
    """``segdet.ops.paste_masks_crops``'s (crops bool Tensor[N], regions int64 Tensor[D, 4] (x, y, w, h)) as D
    (bool ndarray [h, w], x, y), views into one CPU copy of ``crops``."""
    data = _to_numpy(crops)
    out = []
    offset = 0
    for x, y, w, h in _to_numpy(regions).tolist():
        out.append((data[offset:offset + w * h].reshape(h, w), x, y))
        offset += w * h
    if offset != data.size:
        raise ValueError(f"regions cover {offset} pixels but crops has {data.size}")
    return out


def _crop_pixel_bounds(boxes: torch.Tensor, mask_size: int, height: int, width: int) -> list[int]:
    # Upper bound of each clipped paste box's area: the op grows boxes by (S + 2) / S and rounds the edges
    # outward by at most one pixel each; only used to size the chunks.
    b = boxes.detach().double().cpu()
    scale = (mask_size + 2.0) / mask_size
    w = ((b[:, 2] - b[:, 0]).abs() * scale + 3).clamp(max=width).nan_to_num(float(width))
    h = ((b[:, 3] - b[:, 1]).abs() * scale + 3).clamp(max=height).nan_to_num(float(height))
    return (w * h).long().tolist()


def iter_mask_crops(mask_probs: torch.Tensor, boxes: torch.Tensor, height: int, width: int,
                    threshold: float = 0.5, *, max_pixels: int = DEFAULT_MAX_CROP_PIXELS, paste: str = "torchvision"
                    ) -> Iterator[tuple[np.ndarray, int, int]]:
    """The masks ``segdet.ops.paste_masks(mask_probs, boxes, height, width, threshold)`` would give, one
    (bool ndarray [h, w] crop, x, y) per detection, in order, pasted about ``max_pixels`` crop pixels at a time
    (a single larger box is pasted alone), so at most one chunk of crops exists at any moment.

    mask_probs: float Tensor[D, S, S]; boxes: Tensor[D, 4] (x1, y1, x2, y2) absolute pixels of the
    height x width image (half precision is pasted in float32). Pasting runs where the tensors are, on the CPU
    for a device the op has no kernel for. ``paste``: "torchvision" (``paste_masks``/``paste_masks_crops``) or
    "aligned" (``paste_masks_aligned``/``paste_masks_aligned_crops``), as the model's ``mask_paste``.
    """
    from segdet.ops.paste_masks import check_paste_mode, paste_masks_aligned_crops, paste_masks_crops

    paste_crops = paste_masks_aligned_crops if check_paste_mode(paste, key="paste") == "aligned" else paste_masks_crops

    num = int(mask_probs.shape[0])
    if int(boxes.shape[0]) != num:
        raise ValueError(f"mask_probs has {num} masks but boxes has {int(boxes.shape[0])} rows")
    if num == 0:
        return
    # Outputs made under autocast may be half precision; the op pastes in float32 like MaskRCNN.postprocess.
    if mask_probs.dtype not in (torch.float32, torch.float64):
        mask_probs = mask_probs.float()
    if boxes.dtype not in (torch.float32, torch.float64):
        boxes = boxes.float()
    bounds = _crop_pixel_bounds(boxes, int(mask_probs.shape[-1]), height, width)
    start = 0
    while start < num:
        stop, pixels = start + 1, bounds[start]
        while stop < num and pixels + bounds[stop] <= max_pixels:
            pixels += bounds[stop]
            stop += 1
        probs, chunk_boxes = mask_probs[start:stop], boxes[start:stop]
        try:
            crops, regions = paste_crops(probs, chunk_boxes, height, width, threshold)
        except NotImplementedError:  # no kernel for this device (a build without CUDA ops)
            crops, regions = paste_crops(probs.cpu(), chunk_boxes.cpu(), height, width, threshold)
        yield from split_crops(crops, regions)
        del crops, regions
        start = stop


def mask_probs_to_rles(mask_probs: torch.Tensor, boxes: torch.Tensor, height: int, width: int,
                       threshold: float = 0.5, *, max_pixels: int = DEFAULT_MAX_CROP_PIXELS,
                       paste: str = "torchvision") -> list[dict]:
    """COCO RLEs of the masks ``segdet.ops.paste_masks(mask_probs, boxes, height, width, threshold)`` would give,
    encoded crop by crop (``iter_mask_crops``) without the full-image masks."""
    return [crop_to_rle(crop, x, y, height, width)
            for crop, x, y in iter_mask_crops(mask_probs, boxes, height, width, threshold, max_pixels=max_pixels,
                                              paste=paste)]


def output_rles(output: Mapping, *, max_pixels: int = DEFAULT_MAX_CROP_PIXELS) -> list[dict] | None:
    """RLEs of one image's model output: from ``"mask_probs"`` (+ ``"image_size"``, ``"mask_threshold"``) when
    present, else from full-image ``"masks"``; None when it has neither."""
    if output.get("mask_probs") is not None:
        height, width = (int(v) for v in output["image_size"])
        return mask_probs_to_rles(output["mask_probs"], output["boxes"], height, width,
                                  float(output.get("mask_threshold", 0.5)), max_pixels=max_pixels,
                                  paste=output.get("mask_paste", "torchvision"))
    if output.get("masks") is not None:
        return encode_mask_results(output["masks"])
    return None


def to_coco_results(output: Mapping, image_id: int, label_to_category_id: Mapping[int, int] | None = None, *,
                    with_masks: bool = True, max_pixels: int = DEFAULT_MAX_CROP_PIXELS) -> list[dict]:
    """COCO results entries {"image_id", "category_id", "bbox": [x, y, w, h], "score"[, "segmentation"]} of one
    image's model output.

    output: {"boxes": Tensor[D, 4] (x1, y1, x2, y2) absolute input-image pixels, "scores": Tensor[D],
    "labels": int Tensor[D] in 1..K} and, for "segmentation" (RLE, counts as str), either "masks" bool
    Tensor[D, H, W] or "mask_probs" float Tensor[D, S, S] with "image_size" (H, W) and "mask_threshold".
    category_id is ``label_to_category_id[label]``, or the label itself when no mapping is given.
    """
    image_id = int(image_id)
    boxes = _to_numpy(output["boxes"]).astype(np.float64).reshape(-1, 4)
    scores = _to_numpy(output["scores"]).astype(np.float64).reshape(-1)
    labels = _to_numpy(output["labels"]).astype(np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f"image {image_id}: boxes [{len(boxes)}, 4], scores [{len(scores)}] and labels "
                         f"[{len(labels)}] must agree in length")
    if not len(boxes):
        return []
    if label_to_category_id is None:
        category_ids = labels.tolist()
    else:
        try:
            category_ids = [int(label_to_category_id[int(label)]) for label in labels]
        except KeyError as exc:
            raise ValueError(f"image {image_id}: label {exc.args[0]} has no category id (label_to_category_id: "
                             f"{dict(label_to_category_id)})") from exc
    rles = output_rles(output, max_pixels=max_pixels) if with_masks else None
    if rles is not None and len(rles) != len(boxes):
        raise ValueError(f"image {image_id}: {len(rles)} masks for {len(boxes)} boxes")
    xywh = boxes.copy()
    xywh[:, 2:] -= xywh[:, :2]
    results = []
    for k in range(len(boxes)):
        entry = {"image_id": image_id, "category_id": int(category_ids[k]), "bbox": xywh[k].tolist(),
                 "score": float(scores[k])}
        if rles is not None:
            entry["segmentation"] = rles[k]
        results.append(entry)
    return results


@contextlib.contextmanager
def deferred_mask_pasting(model: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block, a MaskRCNN ``model`` (possibly DDP-wrapped) returns unpasted ``"mask_probs"`` instead of
    full-image ``"masks"`` (``MaskRCNN.mask_output = "deferred"``); other models, or ``enabled=False``, are left
    alone."""
    inner = model.module if isinstance(getattr(model, "module", None), torch.nn.Module) else model
    if not enabled or not hasattr(inner, "mask_output"):
        yield
        return
    previous = inner.mask_output
    inner.mask_output = "deferred"
    try:
        yield
    finally:
        inner.mask_output = previous
