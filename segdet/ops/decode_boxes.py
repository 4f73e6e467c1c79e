"""Faster R-CNN box decoding: regression deltas (dx, dy, dw, dh) applied to reference boxes.

Wraps ``torch.ops.segdet.decode_boxes`` (csrc/ops/decode_boxes.cpp) with argument checks, a fake
kernel for torch.compile and an autograd formula.
"""
import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

from segdet import _C  # loads the op; check_* are the ops' argument checks

DEFAULT_BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def decode_boxes(
    rel_codes: Tensor,
    boxes: Tensor,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    bbox_xform_clip: float = DEFAULT_BBOX_XFORM_CLIP,
    image_size: Sequence[int] | None = None,
) -> Tensor:
    """Apply class-specific deltas to reference boxes (anchors or proposals).

    Same result as torchvision's ``BoxCoder(weights, bbox_xform_clip).decode_single`` (followed by
    ``clip_boxes_to_image`` when ``image_size`` is given), in one fused kernel. For each box
    (width w, height h, centre cx, cy) and each class k::

        cx' = dx / wx * w + cx          w' = exp(min(dw / ww, bbox_xform_clip)) * w
        cy' = dy / wy * h + cy          h' = exp(min(dh / wh, bbox_xform_clip)) * h
        box = (cx' - w'/2, cy' - h'/2, cx' + w'/2, cy' + h'/2)

    Args:
        rel_codes: Tensor[N, 4*K], (dx, dy, dw, dh) for each of K classes; float32, float64,
            float16 or bfloat16 (half types are computed in float32, rounded once).
        boxes: Tensor[N, 4], reference boxes (x1, y1, x2, y2) in absolute pixels, same dtype and
            device as rel_codes.
        weights: (wx, wy, ww, wh), finite and positive, dividing the deltas.
        bbox_xform_clip: upper bound of dw / ww and dh / wh before exp(), so a box grows at most
            exp(bbox_xform_clip) times (62.5 by default).
        image_size: (height, width) in pixels: clip x to [0, width] and y to [0, height]. None: no clip.

    Returns:
        Tensor[N, 4*K]: decoded boxes (x1, y1, x2, y2) per class, absolute pixels, rel_codes' dtype.

    Differentiable with respect to rel_codes and boxes (not needed by Mask R-CNN, which detaches
    decoded proposals, but correct where used). The gradient of a clamped value is zero where
    the clamp was active, as for torch.clamp.
    """
    _check_args(rel_codes, boxes, weights, bbox_xform_clip, image_size)
    size = None if image_size is None else list(image_size)
    return torch.ops.segdet.decode_boxes.default(
        rel_codes, boxes, [float(w) for w in weights], float(bbox_xform_clip), size
    )


def _is_int(value) -> bool:
    return isinstance(value, (int, torch.SymInt)) and not isinstance(value, bool)


def _check_args(rel_codes, boxes, weights, bbox_xform_clip, image_size) -> None:
    # Python types only: the op checks shapes, dtypes, devices and values (csrc/ops/decode_boxes.h).
    for name, tensor in (("rel_codes", rel_codes), ("boxes", boxes)):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"decode_boxes: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    if (
        isinstance(weights, (str, bytes))
        or not isinstance(weights, Sequence)
        or not all(isinstance(w, numbers.Real) and not isinstance(w, bool) for w in weights)
    ):
        raise TypeError(f"decode_boxes: weights must be 4 numbers (wx, wy, ww, wh), got {weights!r}")
    if not isinstance(bbox_xform_clip, numbers.Real) or isinstance(bbox_xform_clip, bool):
        raise TypeError(f"decode_boxes: bbox_xform_clip must be a number, got {bbox_xform_clip!r}")
    if image_size is not None and (
        isinstance(image_size, (str, bytes))
        or not isinstance(image_size, Sequence)
        or not all(_is_int(s) for s in image_size)
    ):
        raise TypeError(f"decode_boxes: image_size must be two ints (height, width) or None, got {image_size!r}")


@torch.library.register_fake("segdet::decode_boxes")
def _decode_boxes_fake(rel_codes, boxes, weights, bbox_xform_clip, image_size):
    _C.check_decode_boxes_args(rel_codes, boxes, weights, bbox_xform_clip, image_size)
    return rel_codes.new_empty(rel_codes.shape)


def _setup_context(ctx, inputs, output):
    rel_codes, boxes, weights, bbox_xform_clip, image_size = inputs
    ctx.save_for_backward(rel_codes, boxes)
    ctx.weights = tuple(weights)
    ctx.bbox_xform_clip = bbox_xform_clip
    ctx.image_size = image_size


def _backward(ctx, grad):
    rel_codes, boxes = ctx.saved_tensors
    wx, wy, ww, wh = ctx.weights
    clip = ctx.bbox_xform_clip
    dtype = rel_codes.dtype
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    # Explicit class count: reshape cannot infer a -1 from zero boxes.
    n, k = rel_codes.shape[0], rel_codes.shape[1] // 4
    deltas = rel_codes.to(work).reshape(n, k, 4)
    grad = grad.to(work).reshape(n, k, 4)

    if ctx.image_size is not None:
        # Clipping passes the gradient only where the unclipped coordinate lay inside the image
        # (bounds included, as torch.clamp's backward does).
        unclipped = torch.ops.segdet.decode_boxes.default(rel_codes, boxes, list(ctx.weights), clip, None)
        unclipped = unclipped.to(work).reshape(n, k, 4)
        height, width = ctx.image_size
        limit = unclipped.new_tensor([width, height, width, height])
        grad = grad * ((unclipped >= 0) & (unclipped <= limit))

    ref = boxes.to(work)
    widths = (ref[:, 2] - ref[:, 0])[:, None]
    heights = (ref[:, 3] - ref[:, 1])[:, None]
    dx = deltas[..., 0] / wx
    dy = deltas[..., 1] / wy
    log_w = deltas[..., 2] / ww
    log_h = deltas[..., 3] / wh
    scale_w = torch.exp(log_w.clamp(max=clip))
    scale_h = torch.exp(log_h.clamp(max=clip))

    g_x1, g_y1, g_x2, g_y2 = grad.unbind(-1)
    g_ctr_x = g_x1 + g_x2
    g_ctr_y = g_y1 + g_y2
    g_half_w = 0.5 * (g_x2 - g_x1)  # d(out)/d(pred width)
    g_half_h = 0.5 * (g_y2 - g_y1)

    grad_rel = None
    if ctx.needs_input_grad[0]:
        grad_rel = torch.stack(
            (
                g_ctr_x * widths / wx,
                g_ctr_y * heights / wy,
                g_half_w * scale_w * widths * (log_w <= clip) / ww,
                g_half_h * scale_h * heights * (log_h <= clip) / wh,
            ),
            dim=-1,
        ).reshape(rel_codes.shape).to(dtype)

    grad_boxes = None
    if ctx.needs_input_grad[1]:
        # ctr = x1 + w / 2 and w = x2 - x1: x1 gets d/dctr - d/dw, x2 gets d/dw, where d/dw also
        # collects the half of d/dctr that flows through the centre.
        g_ctr_x_sum = g_ctr_x.sum(1)
        g_ctr_y_sum = g_ctr_y.sum(1)
        g_w = (g_ctr_x * dx + g_half_w * scale_w).sum(1) + 0.5 * g_ctr_x_sum
        g_h = (g_ctr_y * dy + g_half_h * scale_h).sum(1) + 0.5 * g_ctr_y_sum
        grad_boxes = torch.stack((g_ctr_x_sum - g_w, g_ctr_y_sum - g_h, g_w, g_h), dim=1).to(dtype)
    return grad_rel, grad_boxes, None, None, None


torch.library.register_autograd("segdet::decode_boxes", _backward, setup_context=_setup_context)
