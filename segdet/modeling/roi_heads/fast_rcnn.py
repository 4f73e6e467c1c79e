"""Fast R-CNN box predictor (K + 1 way classifier, class-specific deltas), its losses and inference."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segdet.structures import Instances, min_side_mask

from ..box_regression import Box2BoxTransform, smooth_l1


class FastRCNNPredictor(nn.Module):
    """Linear layers for class scores (background = index 0) and per-class box deltas.

    Args:
        in_features: width of the box head output.
        num_classes: foreground classes K; scores have K + 1 columns, deltas 4 (K + 1).
    Input Tensor[N, in_features] -> (Tensor[N, K + 1] logits, Tensor[N, 4 (K + 1)] deltas).
    """

    def __init__(self, *, in_features: int, num_classes: int):
        super().__init__()
        self.num_classes = int(num_classes)
        self.cls_score = nn.Linear(in_features, self.num_classes + 1)
        self.bbox_pred = nn.Linear(in_features, 4 * (self.num_classes + 1))
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.constant_(self.cls_score.bias, 0.0)
        nn.init.constant_(self.bbox_pred.bias, 0.0)

    def forward(self, x: torch.Tensor):
        return self.cls_score(x), self.bbox_pred(x)


def fast_rcnn_losses(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    proposals: Sequence[Instances],
    *,
    box2box: Box2BoxTransform,
    smooth_l1_beta: float,
) -> dict[str, torch.Tensor]:
    """Cross-entropy over all sampled RoIs, and box regression on the foreground ones for their
    GT class only (summed, divided by the number of sampled RoIs).

    Args:
        class_logits: Tensor[N, K + 1]; box_deltas: Tensor[N, 4 (K + 1)], N = total sampled RoIs.
        proposals: per image, with ``proposal_boxes``, ``gt_classes`` (0 = background) and ``gt_boxes``.
    """
    gt_classes = torch.cat([p.gt_classes for p in proposals])
    proposal_boxes = torch.cat([p.proposal_boxes for p in proposals])
    gt_boxes = torch.cat([p.gt_boxes for p in proposals])
    loss_cls = F.cross_entropy(class_logits, gt_classes)
    fg = torch.nonzero(gt_classes > 0).squeeze(1)
    deltas = box_deltas.reshape(box_deltas.shape[0], -1, 4)[fg, gt_classes[fg]]
    target = box2box.get_deltas(proposal_boxes[fg], gt_boxes[fg])
    loss_box = smooth_l1(deltas, target, smooth_l1_beta) / max(gt_classes.numel(), 1)
    return {"loss_cls": loss_cls, "loss_box": loss_box}


def fast_rcnn_inference(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    proposals: Sequence[Instances],
    *,
    box2box: Box2BoxTransform,
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
    min_box_size: float = 1e-2,
) -> list[Instances]:
    """Per image: softmax scores, class-specific boxes clipped to the image, score threshold,
    per-class NMS (segdet.ops.batched_nms), keep the ``topk_per_image`` best.

    Args:
        class_logits: Tensor[N, K + 1]; box_deltas: Tensor[N, 4 (K + 1)]; N = sum of proposals.
        proposals: per image ``Instances`` with ``proposal_boxes`` (resized-image pixels).
    Returns:
        per image ``Instances`` with ``pred_boxes`` Tensor[D, 4] x1y1x2y2, ``scores`` Tensor[D] and
        ``pred_classes`` int64 Tensor[D] in 1..K, sorted by decreasing score.
    """
    from segdet.ops import batched_nms

    num_per_image = [len(p) for p in proposals]
    scores_all = F.softmax(class_logits, dim=-1).split(num_per_image)
    deltas_all = box_deltas.split(num_per_image)
    results = []
    for scores, deltas, props in zip(scores_all, deltas_all, proposals):
        num_classes = scores.shape[1] - 1
        # Column 0 is background: neither decoded nor kept.
        boxes = box2box.apply_deltas(deltas[:, 4:], props.proposal_boxes, image_size=props.image_size)
        boxes = boxes.reshape(-1, 4)
        scores = scores[:, 1:].reshape(-1)
        labels = torch.arange(1, num_classes + 1, device=scores.device).repeat(len(props))
        keep = scores > score_thresh
        keep &= min_side_mask(boxes, min_box_size)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, nms_thresh)[:topk_per_image]
        results.append(Instances(props.image_size, pred_boxes=boxes[keep], scores=scores[keep], pred_classes=labels[keep]))
    return results
