"""RoI heads: proposal sampling, the box branch and the mask branch of Mask R-CNN."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from segdet.structures import Instances, box_iou

from ..box_regression import Box2BoxTransform
from ..matcher import Matcher
from ..poolers import ROIPooler
from ..sampling import BalancedPositiveNegativeSampler
from .fast_rcnn import FastRCNNPredictor, fast_rcnn_inference, fast_rcnn_losses
from .mask_head import MaskRCNNHead, mask_rcnn_inference, mask_rcnn_loss


def label_and_sample_proposals(
    proposals: Sequence[Instances],
    gt_instances: Sequence[Instances],
    *,
    matcher: Matcher,
    sampler: BalancedPositiveNegativeSampler,
    add_gt_as_proposals: bool = True,
) -> list[Instances]:
    """Match proposals to GT and sample the RoIs the box branch trains on.

    Args:
        proposals: per image ``proposal_boxes`` Tensor[P, 4].
        gt_instances: per image ``gt_boxes`` Tensor[M, 4] and ``gt_classes`` int64 Tensor[M] in 1..K
            (M may be 0: every sampled RoI is then background).
    Returns:
        per image sampled ``Instances``: ``proposal_boxes``, ``gt_classes`` (0 = background),
        ``gt_boxes`` (the matched GT box; all zeros for background) and ``gt_index`` (matched GT row,
        0 for background), ordered by proposal index.
    """
    out = []
    for props, gt in zip(proposals, gt_instances):
        boxes = props.proposal_boxes
        gt_boxes = gt.gt_boxes.to(boxes.dtype)
        if add_gt_as_proposals:
            boxes = torch.cat([boxes, gt_boxes])
        if gt_boxes.shape[0] == 0:
            matched_idxs = torch.full((boxes.shape[0],), Matcher.BELOW_LOW_THRESHOLD, dtype=torch.int64, device=boxes.device)
            classes = torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)
            matched_boxes = torch.zeros_like(boxes)
        else:
            matched_idxs = matcher(box_iou(gt_boxes, boxes))
            classes = gt.gt_classes[matched_idxs.clamp(min=0)].clone()
            classes[matched_idxs == Matcher.BELOW_LOW_THRESHOLD] = 0
            classes[matched_idxs == Matcher.BETWEEN_THRESHOLDS] = -1
            matched_boxes = gt_boxes[matched_idxs.clamp(min=0)]
        pos, neg = sampler(classes)
        keep = torch.sort(torch.cat([pos, neg])).values
        out.append(
            Instances(
                props.image_size,
                proposal_boxes=boxes[keep],
                gt_classes=classes[keep],
                gt_boxes=matched_boxes[keep],
                gt_index=matched_idxs.clamp(min=0)[keep],
            )
        )
    return out


class StandardROIHeads(nn.Module):
    """Box branch (pooler -> box head -> predictor) and mask branch (pooler -> mask head).

    Args:
        box_pooler, box_head, box_predictor: the box branch parts; ``box_head.output_size`` must
            equal the predictor's input width.
        mask_pooler, mask_head: the mask branch; ``None`` for a box-only model.
        matcher: proposal/GT matcher (0.5 / 0.5, no low-quality matches).
        sampler: RoIs per image for the box losses (512, 25 % foreground).
        box2box: delta parametrisation (weights (10, 10, 5, 5)).
        box_in_features: names of the backbone levels the box branch pools from (e.g. p2..p5), one per
            ``box_pooler`` scale.
        mask_in_features: the same for the mask branch; None = ``box_in_features``.
        score_thresh, nms_thresh, detections_per_image: inference settings.
        smooth_l1_beta: box loss beta (torchvision 1/9; 0 = L1).
        add_gt_as_proposals: append the GT boxes to the proposals in training.
    """

    def __init__(
        self,
        *,
        box_pooler: ROIPooler,
        box_head: nn.Module,
        box_predictor: FastRCNNPredictor,
        matcher: Matcher,
        sampler: BalancedPositiveNegativeSampler,
        mask_pooler: ROIPooler | None = None,
        mask_head: MaskRCNNHead | None = None,
        box2box: Box2BoxTransform | None = None,
        box_in_features: Sequence[str] = ("p2", "p3", "p4", "p5"),
        mask_in_features: Sequence[str] | None = None,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_image: int = 100,
        smooth_l1_beta: float = 1.0 / 9,
        add_gt_as_proposals: bool = True,
    ):
        super().__init__()
        if (mask_pooler is None) != (mask_head is None):
            raise ValueError("mask_pooler and mask_head must be given together (or both None)")
        self.box_pooler = box_pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.mask_pooler = mask_pooler
        self.mask_head = mask_head
        self.matcher = matcher
        self.sampler = sampler
        self.box2box = box2box if box2box is not None else Box2BoxTransform((10.0, 10.0, 5.0, 5.0))
        self.box_in_features = [str(n) for n in box_in_features]
        self.mask_in_features = self.box_in_features if mask_in_features is None else [str(n) for n in mask_in_features]
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        self.detections_per_image = int(detections_per_image)
        self.smooth_l1_beta = float(smooth_l1_beta)
        self.add_gt_as_proposals = bool(add_gt_as_proposals)

    def forward(self, features: Mapping[str, torch.Tensor], proposals: Sequence[Instances], gt_instances=None):
        """
        Args:
            features: level name -> Tensor[B, C, H_l, W_l] (the backbone's output; ``box_in_features`` and
                ``mask_in_features`` pick).
            proposals: per image ``Instances`` with ``proposal_boxes`` (resized-image pixels).
            gt_instances: training only, per image ``gt_boxes``, ``gt_classes`` and ``gt_masks``
                Tensor[M, Hm, Wm] (any resolution of the same image).
        Returns:
            training: (proposals, {"loss_cls", "loss_box", "loss_mask"});
            inference: (per image ``Instances`` with ``pred_boxes`` Tensor[D, 4], ``scores`` Tensor[D],
            ``pred_classes`` Tensor[D] in 1..K and ``pred_masks`` Tensor[D, S, S] probabilities in box
            coordinates, {}).
        """
        if not isinstance(features, Mapping):
            raise TypeError(f"features must map level names to Tensors (the backbone output), got {type(features).__name__}")
        missing = [n for n in dict.fromkeys(self.box_in_features + self.mask_in_features) if n not in features]
        if missing:
            raise ValueError(f"features lack the RoI heads' levels {missing} (got levels {list(features)})")
        box_features = [features[n] for n in self.box_in_features]
        mask_features = [features[n] for n in self.mask_in_features]
        if self.training:
            if gt_instances is None:
                raise ValueError("roi heads need gt_instances in training mode")
            proposals = label_and_sample_proposals(
                proposals, gt_instances, matcher=self.matcher, sampler=self.sampler,
                add_gt_as_proposals=self.add_gt_as_proposals,
            )
        pooled = self.box_head(self.box_pooler(box_features, [p.proposal_boxes for p in proposals]))
        class_logits, box_deltas = self.box_predictor(pooled)
        if self.training:
            losses = fast_rcnn_losses(
                class_logits, box_deltas, proposals, box2box=self.box2box, smooth_l1_beta=self.smooth_l1_beta
            )
            if self.mask_head is not None:
                fg = [p[p.gt_classes > 0] for p in proposals]
                mask_logits = self.mask_head(self.mask_pooler(mask_features, [p.proposal_boxes for p in fg]))
                losses["loss_mask"] = mask_rcnn_loss(
                    mask_logits, fg, [g.gt_masks for g in gt_instances], aligned=self.mask_pooler.aligned
                )
            return proposals, losses
        instances = fast_rcnn_inference(
            class_logits, box_deltas, proposals, box2box=self.box2box, score_thresh=self.score_thresh,
            nms_thresh=self.nms_thresh, topk_per_image=self.detections_per_image,
        )
        if self.mask_head is not None:
            mask_logits = self.mask_head(self.mask_pooler(mask_features, [i.pred_boxes for i in instances]))
            mask_rcnn_inference(mask_logits, instances)
        return instances, {}
