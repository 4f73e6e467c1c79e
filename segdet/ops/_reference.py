"""Pure-PyTorch reference implementations of segdet's ops: the test oracle.

Written for obviousness, not speed: plain loops and textbook formulas, float64 where it helps.
Each op's section is kept together; tests import from here.
"""
import math

import torch
import torch.nn.functional as F

# ---- roi_align ---------------------------------------------------------------------------------


def _bilinear_reference(image: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """Tensor[C]: image Tensor[C, H, W] sampled at continuous (y, x) with torchvision's boundary rules.

    Samples beyond one pixel outside the map are zero; coordinates in [-1, 0] read row/column 0;
    coordinates at or past the last row/column read that row/column.
    """
    _, height, width = image.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return image.new_zeros(image.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    hy, hx = 1.0 - ly, 1.0 - lx
    return (
        hy * hx * image[:, y0, x0] + hy * lx * image[:, y0, x1] + ly * hx * image[:, y1, x0] + ly * lx * image[:, y1, x1]
    )


def roi_align_reference(
    input: torch.Tensor,
    rois: torch.Tensor,
    output_size,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """RoIAlign by direct summation: Tensor[N, C, H, W], rois Tensor[K, 5] -> Tensor[K, C, oh, ow].

    rois rows are (batch_index, x1, y1, x2, y2) in input-image pixels. Every bin averages a
    grid_h x grid_w grid of bilinear samples placed at the centres of equal sub-cells; the RoI size
    and sample grid are computed in the input's dtype, the sample positions in Python floats
    (double). Differentiable with respect to ``input`` through autograd.
    Boxes with a non-finite coordinate give zeros. Loops over every sample: keep boxes small.
    """
    pooled_h, pooled_w = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    offset = 0.5 if aligned else 0.0
    outputs = []
    for roi in rois:
        image = input[int(roi[0])]
        # The RoI's corners, size and adaptive grid are computed in the input's dtype, as every
        # implementation does: ceil() of a float32 size can differ from ceil() of the double one.
        corners = roi[1:].to(input.dtype) * spatial_scale - offset
        size_w, size_h = corners[2] - corners[0], corners[3] - corners[1]
        x1, y1 = corners[0].item(), corners[1].item()
        if not all(math.isfinite(v) for v in (x1, y1, size_w.item(), size_h.item())):
            outputs.append(input.new_zeros(input.shape[1], pooled_h, pooled_w))
            continue
        if not aligned:  # the original RoIAlign treats boxes under one map pixel as 1x1
            size_w, size_h = size_w.clamp(min=1.0), size_h.clamp(min=1.0)
        roi_w, roi_h = size_w.item(), size_h.item()
        bin_w, bin_h = roi_w / pooled_w, roi_h / pooled_h
        grid_h = sampling_ratio if sampling_ratio > 0 else max(int(torch.ceil(size_h / pooled_h).item()), 0)
        grid_w = sampling_ratio if sampling_ratio > 0 else max(int(torch.ceil(size_w / pooled_w).item()), 0)
        count = max(grid_h * grid_w, 1)
        bins = []
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                total = input.new_zeros(input.shape[1])
                for iy in range(grid_h):
                    y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                        total = total + _bilinear_reference(image, y, x)
                bins.append(total / count)
        outputs.append(torch.stack(bins, dim=1).reshape(input.shape[1], pooled_h, pooled_w))
    if not outputs:
        return input.new_zeros(0, input.shape[1], pooled_h, pooled_w)
    return torch.stack(outputs)


# ---- nms / batched_nms -------------------------------------------------------------------------


def _max_first(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # std::max(a, b) as torchvision's C++ uses it: `a < b ? b : a`; unlike torch.maximum it does
    # not propagate NaN, and which argument wins decides what NaN coordinates do.
    return torch.where(a < b, b, a)


def _min_first(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(b < a, b, a)


def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS, one kept box at a time; the oracle for segdet.ops.nms.

    boxes: Tensor[N, 4] (x1, y1, x2, y2) pixels; scores: Tensor[N]. Returns int64 indices of
    the kept boxes, in decreasing score order with ties in increasing index order. IoU is
    computed in the box dtype as torchvision does, and compared with the threshold in float64.
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64)
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1) * (y2 - y1)
    zero = torch.zeros((), dtype=boxes.dtype)
    suppressed = torch.zeros(n, dtype=torch.bool)
    keep = []
    for i in scores.sort(stable=True, descending=True).indices.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        w = _max_first(zero, _min_first(x2[i], x2) - _max_first(x1[i], x1))
        h = _max_first(zero, _min_first(y2[i], y2) - _max_first(y1[i], y1))
        inter = w * h
        iou = inter / (area[i] + area - inter)
        # A float32 tensor compared with a Python float compares in float32; torchvision
        # compares the float IoU with the double threshold.
        suppressed |= iou.double() > iou_threshold
    return torch.tensor(keep, dtype=torch.int64)


def batched_nms_reference(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """nms_reference within each category of idxs (Tensor[N] integer); kept indices merged in
    decreasing score order, ties in increasing index order."""
    keep = torch.zeros(boxes.shape[0], dtype=torch.bool)
    for category in torch.unique(idxs).tolist():
        members = torch.nonzero(idxs == category).flatten()
        keep[members[nms_reference(boxes[members], scores[members], iou_threshold)]] = True
    kept = torch.nonzero(keep).flatten()
    return kept[scores[kept].sort(stable=True, descending=True).indices]

# ---- decode_boxes ------------------------------------------------------------------------------


def decode_boxes_reference(rel_codes, boxes, weights=(1.0, 1.0, 1.0, 1.0), bbox_xform_clip=math.log(1000.0 / 16),
                           image_size=None):
    """Faster R-CNN box decoding, one class column group at a time.

    rel_codes: Tensor[N, 4*K] of (dx, dy, dw, dh) per class; boxes: Tensor[N, 4] (x1, y1, x2, y2) pixels;
    image_size: (height, width) to clip x to [0, width] and y to [0, height], or None.
    Returns Tensor[N, 4*K] (x1, y1, x2, y2) per class in rel_codes' dtype. float16/bfloat16 inputs are
    computed in float32 and rounded once at the end, as segdet's kernels do.
    """
    out_dtype = rel_codes.dtype
    work_dtype = torch.float32 if out_dtype in (torch.float16, torch.bfloat16) else out_dtype
    rel_codes = rel_codes.to(work_dtype)
    boxes = boxes.to(work_dtype)
    wx, wy, ww, wh = (float(w) for w in weights)

    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights

    columns = []
    for k in range(rel_codes.shape[1] // 4):
        dx, dy, dw, dh = rel_codes[:, 4 * k:4 * k + 4].unbind(1)
        pred_ctr_x = (dx / wx) * widths + ctr_x
        pred_ctr_y = (dy / wy) * heights + ctr_y
        # torch.clamp lets NaN through, which the kernels must match.
        half_w = 0.5 * (torch.exp(torch.clamp(dw / ww, max=bbox_xform_clip)) * widths)
        half_h = 0.5 * (torch.exp(torch.clamp(dh / wh, max=bbox_xform_clip)) * heights)
        decoded = [pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h]
        if image_size is not None:
            height, width = image_size
            decoded = [
                decoded[0].clamp(0, width), decoded[1].clamp(0, height),
                decoded[2].clamp(0, width), decoded[3].clamp(0, height),
            ]
        columns.extend(decoded)
    if not columns:
        return rel_codes.new_empty(rel_codes.shape).to(out_dtype)
    return torch.stack(columns, dim=1).to(out_dtype)


# ---- paste_masks -------------------------------------------------------------------------------


def paste_masks_reference(masks, boxes, height, width, threshold=0.5):
    """Mask pasting one detection at a time with F.interpolate; the oracle for segdet.ops.paste_masks.

    masks: Tensor[D, S, S] probabilities; boxes: Tensor[D, 4] (x1, y1, x2, y2) pixels of the target image.
    Each mask is padded by one zero pixel, its box grown by (S + 2) / S about the centre and truncated to
    integers (inclusive edges), and the padded mask resized into it bilinearly (align_corners=False).
    Returns bool Tensor[D, height, width]: probability > threshold.
    """
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
    grown = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=1)
    for i, coords in enumerate(grown.tolist()):
        if not all(math.isfinite(c) for c in coords):
            continue  # the reference's int64 cast of NaN / inf leaves the mask empty
        x1, y1, x2, y2 = (int(c) for c in coords)
        w, h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        xa, xb, ya, yb = max(x1, 0), min(x2 + 1, width), max(y1, 0), min(y2 + 1, height)
        if xa >= xb or ya >= yb:
            continue
        resized = F.interpolate(padded[i][None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        out[i, ya:yb, xa:xb] = resized[ya - y1 : yb - y1, xa - x1 : xb - x1] > threshold
    return out
