"""Box <-> regression-delta transform (the Faster R-CNN parametrisation) and the box regression loss."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

# Largest dw/dh before exp(): keeps exp() finite on untrained networks (log(1000 / 16), as everywhere).
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class Box2BoxTransform:
    """Encodes target boxes relative to reference boxes and decodes predicted deltas.

    A delta (dx, dy, dw, dh) against a reference box of width w, height h and centre (cx, cy)
    means centre (cx + dx / wx * w, cy + dy / wy * h) and size (w * exp(dw / ww), h * exp(dh / wh)),
    with ``weights = (wx, wy, ww, wh)``. Boxes are x1y1x2y2 absolute pixels, widths are x2 - x1.
    """

    def __init__(self, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0), scale_clamp: float = DEFAULT_SCALE_CLAMP):
        if len(weights) != 4:
            raise ValueError(f"weights must be 4 floats (wx, wy, ww, wh), got {weights}")
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = float(scale_clamp)

    def get_deltas(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        """Deltas that turn ``src_boxes`` into ``target_boxes``.

        Args:
            src_boxes, target_boxes: Tensor[N, 4] x1y1x2y2.
        Returns:
            Tensor[N, 4] (dx, dy, dw, dh), weighted.
        """
        if src_boxes.shape != target_boxes.shape or src_boxes.dim() != 2 or src_boxes.shape[-1] != 4:
            raise ValueError(
                f"src_boxes and target_boxes must both be Tensor[N, 4], got {tuple(src_boxes.shape)} "
                f"and {tuple(target_boxes.shape)}"
            )
        wx, wy, ww, wh = self.weights
        src_w = src_boxes[:, 2] - src_boxes[:, 0]
        src_h = src_boxes[:, 3] - src_boxes[:, 1]
        src_cx = src_boxes[:, 0] + 0.5 * src_w
        src_cy = src_boxes[:, 1] + 0.5 * src_h
        tgt_w = target_boxes[:, 2] - target_boxes[:, 0]
        tgt_h = target_boxes[:, 3] - target_boxes[:, 1]
        tgt_cx = target_boxes[:, 0] + 0.5 * tgt_w
        tgt_cy = target_boxes[:, 1] + 0.5 * tgt_h
        return torch.stack(
            (
                wx * (tgt_cx - src_cx) / src_w,
                wy * (tgt_cy - src_cy) / src_h,
                ww * torch.log(tgt_w / src_w),
                wh * torch.log(tgt_h / src_h),
            ),
            dim=1,
        )

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor, image_size=None) -> torch.Tensor:
        """Decode ``deltas`` Tensor[N, 4K] against ``boxes`` Tensor[N, 4] -> Tensor[N, 4K] x1y1x2y2.

        ``image_size`` = (height, width) clips the result to the image. Runs segdet.ops.decode_boxes.
        """
        from segdet.ops import decode_boxes

        return decode_boxes(
            deltas, boxes, weights=self.weights, bbox_xform_clip=self.scale_clamp, image_size=image_size
        )


def smooth_l1(input: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """Summed smooth L1 (Huber / beta) of Tensor[N, 4] deltas; beta below 1e-5 is plain L1 (detectron2's cut-off:
    F.smooth_l1_loss divides by beta)."""
    if beta < 1e-5:
        return (input - target).abs().sum()
    return F.smooth_l1_loss(input, target, beta=beta, reduction="sum")
