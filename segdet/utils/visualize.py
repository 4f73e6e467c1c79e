"""Drawing instance predictions (or ground truth) over an image with Pillow."""
from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = ["draw_instances", "instance_colors", "label_name"]

MASK_ALPHA = 0.45


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
) -> Image.Image:
    """Overlay instances on ``image`` and return a new RGB ``PIL.Image`` of the same size.

    Args:
        image: RGB uint8 Tensor/ndarray [3, H, W] or [H, W, 3] (float in [0, 1] also accepted), or a PIL image.
        boxes: Tensor[D, 4] (x1, y1, x2, y2, absolute pixels of ``image``), or None.
        labels: int Tensor[D] of model labels 1..K, or None (no names drawn).
        scores: Tensor[D] in [0, 1], or None (names drawn without a score).
        masks: bool/uint8 Tensor[D, H, W] (or float probabilities, thresholded at 0.5), or None.
        class_names: K foreground names indexed by ``label - 1``, or a {label: name} mapping.
        mask_alpha: opacity of the mask fill (0 transparent .. 1 opaque).
        line_width: box outline width in pixels.

    Instance i gets colour ``instance_colors(D)[i]`` for its mask fill and box outline; its caption
    reads "name 0.93" at the box's top-left corner.
    """
    canvas = _image_hwc_uint8(image)
    height, width = canvas.shape[:2]
    counts = []
    arrays = {}
    for name, value in (("boxes", boxes), ("labels", labels), ("scores", scores), ("masks", masks)):
        if value is None:
            continue
        arr = _to_numpy(value, name)
        if name == "boxes" and (arr.ndim != 2 or (arr.size and arr.shape[1] != 4)):
            raise ValueError(f"boxes must have shape [D, 4] (x1, y1, x2, y2), got {tuple(arr.shape)}")
        if name == "masks" and (arr.ndim != 3 or arr.shape[1:] != (height, width)):
            raise ValueError(f"masks must have shape [D, {height}, {width}] (the image size), got {tuple(arr.shape)}")
        if name in ("labels", "scores") and arr.ndim != 1:
            raise ValueError(f"{name} must have shape [D], got {tuple(arr.shape)}")
        arrays[name] = arr
        counts.append((name, len(arr)))
    if len({n for _, n in counts}) > 1:
        raise ValueError("boxes, labels, scores and masks must describe the same number of instances, got "
                         + ", ".join(f"{k}={n}" for k, n in counts))
    num = counts[0][1] if counts else 0
    colors = instance_colors(num)

    if "masks" in arrays and num:
        masks_np = arrays["masks"]
        masks_np = masks_np > 0.5 if np.issubdtype(masks_np.dtype, np.floating) else masks_np.astype(bool)
        blended = canvas.astype(np.float32)
        for mask, color in zip(masks_np, colors):
            blended[mask] = blended[mask] * (1.0 - mask_alpha) + np.asarray(color, np.float32) * mask_alpha
        canvas = np.clip(blended + 0.5, 0, 255).astype(np.uint8)

    picture = Image.fromarray(canvas, mode="RGB")
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    for i in range(num):
        color = colors[i]
        anchor = None
        if "boxes" in arrays:
            x1, y1, x2, y2 = (float(v) for v in arrays["boxes"][i])
            draw.rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=color, width=line_width)
            anchor = (x1, y1)
        elif "masks" in arrays:
            ys, xs = np.nonzero(arrays["masks"][i])
            anchor = (float(xs.min()), float(ys.min())) if len(xs) else None
        caption = _caption(i, arrays, class_names)
        if anchor is not None and caption:
            _draw_caption(draw, font, anchor, caption, color, width, height)
    return picture


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
