"""Drawing instance predictions (or ground truth) over an image with Pillow."""
from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = ["contact_sheet", "draw_instances", "instance_colors", "label_name", "upscale_factor"]

MASK_ALPHA = 0.45
# Pictures are drawn at least this many pixels on their shorter side: the caption font is ~11 px tall, so on a
# 128 px image drawn 1:1 a label covers a good part of a small object.
MIN_SIDE = 512


def instance_colors(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct saturated RGB colours (0..255), the same for the same ``n``.

    Hues step by the golden ratio so consecutive instances, which often overlap, get far-apart colours.
    """
    colors = []
    for i in range(n):
        hue = (0.1 + i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors


def label_name(label: int, class_names: Sequence[str] | Mapping[int, str] | None) -> str:
    """Display name of model label ``label`` (1..K): ``class_names[label - 1]`` for a list of the K
    foreground names, ``class_names[label]`` for a mapping, ``"class_<label>"`` when unknown."""
    if isinstance(class_names, Mapping):
        return str(class_names.get(label, f"class_{label}"))
    if class_names is not None and 1 <= label <= len(class_names):
        return str(class_names[label - 1])
    return f"class_{label}"


def _to_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple)):
        return np.asarray(x)
    raise TypeError(f"{name} must be a Tensor, numpy array or list, got {type(x).__name__}")


def _image_hwc_uint8(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB")).copy()
    arr = _to_numpy(image, "image")
    # Tensors are channels-first by torch convention and arrays channels-last by PIL/numpy convention;
    # each also accepts the other layout when the shape leaves no doubt.
    channels_first = arr.ndim == 3 and arr.shape[0] == 3 and (isinstance(image, torch.Tensor) or arr.shape[-1] != 3)
    if channels_first:
        arr = arr.transpose(1, 2, 0)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"image must be RGB uint8 [3, H, W] or [H, W, 3], got shape {tuple(arr.shape)}")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise TypeError(f"image must be uint8 (0..255) or float (0..1), got dtype {arr.dtype}")
        arr = np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def upscale_factor(height: int, width: int, min_side: int | None = MIN_SIDE) -> int:
    """The smallest integer factor that makes the shorter side of a height x width image at least ``min_side``
    pixels (1 when it already is, or when ``min_side`` is None / 0)."""
    shorter = min(int(height), int(width))
    if not min_side or shorter <= 0 or shorter >= min_side:
        return 1
    return -(-int(min_side) // shorter)


def _mask_crops(masks, height: int, width: int):
    """Masks as a list of (bool [h, w] crop, x, y): from a full-image Tensor/ndarray [D, H, W] (float
    probabilities thresholded at 0.5), or already as such a sequence (``segdet.evaluation.coco_results``'
    crops of ``segdet.ops.paste_masks_crops``)."""
    if isinstance(masks, (torch.Tensor, np.ndarray)):
        arr = _to_numpy(masks, "masks")
        if arr.ndim != 3 or arr.shape[1:] != (height, width):
            raise ValueError(f"masks must have shape [D, {height}, {width}] (the image size), got {tuple(arr.shape)}")
        arr = arr > 0.5 if np.issubdtype(arr.dtype, np.floating) else arr.astype(bool)
        crops = []
        for mask in arr:
            rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
            if len(rows):
                crops.append((mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], int(cols[0]), int(rows[0])))
            else:
                crops.append((np.zeros((0, 0), dtype=bool), 0, 0))
        return crops
    crops = []
    for item in masks:
        crop, x, y = item
        crop = _to_numpy(crop, "masks crop").astype(bool)
        x, y = int(x), int(y)
        if crop.ndim != 2 or (crop.size and not (0 <= x and x + crop.shape[1] <= width and 0 <= y
                                                 and y + crop.shape[0] <= height)):
            raise ValueError(f"masks crop of shape {tuple(crop.shape)} at (x={x}, y={y}) does not fit the "
                             f"{height} x {width} image")
        crops.append((crop, x, y))
    return crops


def _boundary(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of ``mask`` (bool [h, w]) within ``width`` px (4-connected) of a pixel outside it."""
    inner = mask.copy()
    for _ in range(max(int(width), 1)):
        padded = np.pad(inner, 1, constant_values=False)
        inner = (inner & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    return mask & ~inner


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType (or < 10.1): the fixed bitmap font
        return ImageFont.load_default()


def draw_instances(
    image,
    boxes=None,
    labels=None,
    scores=None,
    masks=None,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    *,
    mask_alpha: float = MASK_ALPHA,
    line_width: int = 2,
    outline_width: int = 2,
    min_side: int | None = MIN_SIDE,
) -> Image.Image:
    """Overlay instances on ``image`` and return a new RGB ``PIL.Image``.

    Args:
        image: RGB uint8 Tensor/ndarray [3, H, W] or [H, W, 3] (float in [0, 1] also accepted), or a PIL image.
        boxes: Tensor[D, 4] (x1, y1, x2, y2, absolute pixels of ``image``), or None.
        labels: int Tensor[D] of model labels 1..K, or None (no names drawn).
        scores: Tensor[D] in [0, 1], or None (names drawn without a score).
        masks: bool/uint8 Tensor[D, H, W] (or float probabilities, thresholded at 0.5), or a sequence of D
            (bool [h, w] crop, x, y) placing crop i at column x, row y of ``image``; or None.
        class_names: K foreground names indexed by ``label - 1``, or a {label: name} mapping.
        mask_alpha: opacity of the mask fill (0 transparent .. 1 opaque).
        line_width: box outline width in pixels of the picture.
        outline_width: width in picture pixels of each mask's opaque outline (0: fill only).
        min_side: the picture is ``image`` enlarged (nearest neighbour) by ``upscale_factor(H, W, min_side)``,
            so that captions stay small next to the objects of small images; None or 0 draws at H x W.

    Instance i gets colour ``instance_colors(D)[i]`` for its mask fill and outline and box outline; its
    caption reads "name 0.93" at the box's top-left corner (the mask's top-left without boxes).
    """
    canvas = _image_hwc_uint8(image)
    height, width = canvas.shape[:2]
    counts = []
    arrays = {}
    for name, value in (("boxes", boxes), ("labels", labels), ("scores", scores)):
        if value is None:
            continue
        arr = _to_numpy(value, name)
        if name == "boxes" and (arr.ndim != 2 or (arr.size and arr.shape[1] != 4)):
            raise ValueError(f"boxes must have shape [D, 4] (x1, y1, x2, y2), got {tuple(arr.shape)}")
        if name in ("labels", "scores") and arr.ndim != 1:
            raise ValueError(f"{name} must have shape [D], got {tuple(arr.shape)}")
        arrays[name] = arr
        counts.append((name, len(arr)))
    crops = _mask_crops(masks, height, width) if masks is not None else None
    if crops is not None:
        counts.append(("masks", len(crops)))
    if len({n for _, n in counts}) > 1:
        raise ValueError("boxes, labels, scores and masks must describe the same number of instances, got "
                         + ", ".join(f"{k}={n}" for k, n in counts))
    num = counts[0][1] if counts else 0
    colors = instance_colors(num)
    scale = upscale_factor(height, width, min_side)
    if scale > 1:
        canvas = np.repeat(np.repeat(canvas, scale, axis=0), scale, axis=1)

    anchors: list = [None] * num
    for i, (crop, x, y) in enumerate(crops or ()):
        if not crop.any():
            continue
        if scale > 1:
            crop = np.repeat(np.repeat(crop, scale, axis=0), scale, axis=1)
        x, y = x * scale, y * scale
        region = canvas[y:y + crop.shape[0], x:x + crop.shape[1]]  # a view: written in place
        color = np.asarray(colors[i], np.float32)
        region[crop] = np.clip(region[crop] * (1.0 - mask_alpha) + color * mask_alpha + 0.5, 0, 255).astype(np.uint8)
        if outline_width > 0:
            region[_boundary(crop, outline_width)] = colors[i]
        ys, xs = np.nonzero(crop)
        anchors[i] = (float(x + xs.min()), float(y + ys.min()))

    picture = Image.fromarray(canvas, mode="RGB")
    draw = ImageDraw.Draw(picture)
    font = _font(max(11, min(canvas.shape[:2]) // 40))
    for i in range(num):
        color = colors[i]
        anchor = anchors[i]
        if "boxes" in arrays:
            x1, y1, x2, y2 = (float(v) * scale for v in arrays["boxes"][i])
            draw.rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=color, width=line_width)
            anchor = (x1, y1)
        caption = _caption(i, arrays, class_names)
        if anchor is not None and caption:
            _draw_caption(draw, font, anchor, caption, color, canvas.shape[1], canvas.shape[0])
    return picture


def contact_sheet(pictures: Sequence[Image.Image], captions: Sequence[str] | None = None, *, tile: int = 256,
                  columns: int | None = None, background=(40, 40, 40)) -> Image.Image:
    """One picture of ``pictures`` side by side: each fitted (aspect kept) into a ``tile`` x ``tile`` cell with
    its caption (e.g. the file name) underneath; ``columns`` defaults to a near-square grid."""
    if not pictures:
        raise ValueError("contact_sheet needs at least one picture")
    if captions is not None and len(captions) != len(pictures):
        raise ValueError(f"got {len(captions)} captions for {len(pictures)} pictures")
    columns = columns or int(np.ceil(np.sqrt(len(pictures))))
    rows = -(-len(pictures) // columns)
    font = _font(12)
    caption_h = 18 if captions is not None else 0
    gap = 4
    sheet = Image.new("RGB", (columns * (tile + gap) + gap, rows * (tile + caption_h + gap) + gap), background)
    draw = ImageDraw.Draw(sheet)
    for k, pic in enumerate(pictures):
        r, c = divmod(k, columns)
        ratio = min(tile / pic.width, tile / pic.height)
        size = (max(1, round(pic.width * ratio)), max(1, round(pic.height * ratio)))
        # Enlarged cells stay sharp (nearest); reduced ones are filtered.
        thumb = pic.convert("RGB").resize(size, Image.NEAREST if ratio >= 1 else Image.LANCZOS)
        x0 = gap + c * (tile + gap) + (tile - size[0]) // 2
        y0 = gap + r * (tile + caption_h + gap) + (tile - size[1]) // 2
        sheet.paste(thumb, (x0, y0))
        if captions is not None:
            text = str(captions[k])
            while len(text) > 4 and draw.textlength(text, font=font) > tile:
                text = text[:-4] + "..."  # cut from the end until it fits the cell
            draw.text((gap + c * (tile + gap), gap + r * (tile + caption_h + gap) + tile + 2), text,
                      fill=(230, 230, 230), font=font)
    return sheet


def _caption(i: int, arrays: dict, class_names) -> str:
    parts = []
    if "labels" in arrays:
        parts.append(label_name(int(arrays["labels"][i]), class_names))
    if "scores" in arrays:
        parts.append(f"{float(arrays['scores'][i]):.2f}")
    return " ".join(parts)


def _draw_caption(draw: ImageDraw.ImageDraw, font, anchor, text: str, color, width: int, height: int) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left + 4, bottom - top + 2
    # Above the box when there is room, otherwise inside it; kept within the image either way.
    x = min(max(anchor[0], 0), max(width - tw, 0))
    y = anchor[1] - th if anchor[1] - th >= 0 else anchor[1]
    y = min(max(y, 0), max(height - th, 0))
    draw.rectangle([x, y, x + tw, y + th], fill=color)
    # Dark text on light colours, white on dark ones (ITU-R BT.601 luma).
    luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    draw.text((x + 2 - left, y + 1 - top), text, fill=(0, 0, 0) if luma > 140 else (255, 255, 255), font=font)
