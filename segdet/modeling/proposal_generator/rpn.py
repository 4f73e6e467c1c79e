"""Region Proposal Network: a shared conv head over the FPN levels, anchor labelling, losses and proposals.

The head only defines layers; labelling, losses and proposal selection are free functions.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segdet.structures import Instances, box_iou, clip_boxes, min_side_mask

from ..anchor_generator import AnchorGenerator
from ..box_regression import Box2BoxTransform, smooth_l1
from ..matcher import Matcher
from ..sampling import BalancedPositiveNegativeSampler


class RPNHead(nn.Module):
    """3x3 conv + ReLU shared by all levels, then 1x1 convs for A objectness logits and 4A deltas.

    Args:
        in_channels: channels of every feature level.
        num_anchors: anchors per location A.
        conv_channels: width of the shared conv (default ``in_channels``).
    """

    def __init__(self, *, in_channels: int, num_anchors: int, conv_channels: int | None = None):
        super().__init__()
        conv_channels = in_channels if conv_channels is None else conv_channels
        self.conv = nn.Conv2d(in_channels, conv_channels, 3, padding=1)
        self.objectness_logits = nn.Conv2d(conv_channels, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(conv_channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.objectness_logits, self.anchor_deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0.0)

    def forward(self, features: Sequence[torch.Tensor]):
        """features: per level Tensor[B, C, H_l, W_l] -> (logits per level Tensor[B, A, H_l, W_l],
        deltas per level Tensor[B, 4A, H_l, W_l])."""
        logits, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x))
            logits.append(self.objectness_logits(t))
            deltas.append(self.anchor_deltas(t))
        return logits, deltas


def flatten_level_outputs(logits: Sequence[torch.Tensor], deltas: Sequence[torch.Tensor]):
    """Per-level head outputs -> Tensor[B, R] logits and Tensor[B, R, 4] deltas, R = sum H*W*A,
    in the (level, H, W, A) order of ``AnchorGenerator``."""
    flat_logits, flat_deltas = [], []
    for lg, dl in zip(logits, deltas):
        b, a, h, w = lg.shape
        flat_logits.append(lg.permute(0, 2, 3, 1).reshape(b, -1))
        flat_deltas.append(dl.view(b, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, 4))
    return torch.cat(flat_logits, 1), torch.cat(flat_deltas, 1)


def find_top_rpn_proposals(
    anchors: Sequence[torch.Tensor],
    logits: torch.Tensor,
    deltas: torch.Tensor,
    image_sizes: Sequence[tuple[int, int]],
    *,
    box2box: Box2BoxTransform,
    pre_nms_topk: int,
    post_nms_topk: int,
    nms_thresh: float,
    min_box_size: float = 1e-3,
    score_thresh: float = 0.0,
) -> list[Instances]:
    """Select proposals: per-level top-k by objectness, decode, clip, drop tiny / low-score boxes,
    NMS within each level, then the ``post_nms_topk`` best of the image.

    Args:
        anchors: per level Tensor[R_l, 4] x1y1x2y2 (same for every image).
        logits: Tensor[B, R] objectness logits; deltas: Tensor[B, R, 4].
        image_sizes: per image (height, width) of the resized, unpadded image (pixels).
    Returns:
        per image ``Instances`` with ``proposal_boxes`` Tensor[P, 4] and ``objectness_logits``
        Tensor[P], sorted by decreasing score; no gradient flows through them.
    """
    from segdet.ops import batched_nms

    logits, deltas = logits.detach(), deltas.detach()
    num_images = logits.shape[0]
    device = logits.device
    top_idx, top_levels = [], []
    offset = 0
    for level, anchors_l in enumerate(anchors):
        n = anchors_l.shape[0]
        k = min(pre_nms_topk, n)
        _, idx = logits[:, offset : offset + n].topk(k, dim=1)
        top_idx.append(idx + offset)
        top_levels.append(torch.full((k,), level, dtype=torch.int64, device=device))
        offset += n
    top_idx = torch.cat(top_idx, 1)
    levels = torch.cat(top_levels)
    all_anchors = torch.cat(list(anchors), 0)
    batch = torch.arange(num_images, device=device)[:, None]
    top_logits = logits[batch, top_idx]
    top_deltas = deltas[batch, top_idx]

    results = []
    for i, image_size in enumerate(image_sizes):
        boxes = box2box.apply_deltas(top_deltas[i], all_anchors[top_idx[i]])
        boxes = clip_boxes(boxes, image_size)
        scores = top_logits[i]
        keep = min_side_mask(boxes, min_box_size)
        # Scores are thresholded as probabilities with >= (torchvision's convention; 0.0 keeps all).
        keep &= torch.sigmoid(scores) >= score_thresh
        boxes, scores, lvl = boxes[keep], scores[keep], levels[keep]
        keep = batched_nms(boxes, scores, lvl, nms_thresh)[:post_nms_topk]
        results.append(Instances(image_size, proposal_boxes=boxes[keep], objectness_logits=scores[keep]))
    return results


def label_and_sample_anchors(
    anchors: torch.Tensor,
    gt_instances: Sequence[Instances],
    *,
    matcher: Matcher,
    sampler: BalancedPositiveNegativeSampler,
):
    """Label every anchor 1 (object) / 0 (background) / -1 (ignored or not sampled).

    Args:
        anchors: Tensor[R, 4] all anchors of the batch image, x1y1x2y2.
        gt_instances: per image, with ``gt_boxes`` Tensor[M, 4] (M may be 0).
    Returns:
        (labels Tensor[B, R] float in {-1, 0, 1}, matched_gt_boxes Tensor[B, R, 4]).
    """
    all_labels, all_matched = [], []
    for inst in gt_instances:
        gt_boxes = inst.gt_boxes
        if gt_boxes.numel() == 0:
            labels = torch.zeros(anchors.shape[0], dtype=torch.int64, device=anchors.device)
            matched = torch.zeros_like(anchors)
        else:
            matched_idxs = matcher(box_iou(gt_boxes, anchors))
            labels = (matched_idxs >= 0).to(torch.int64)
            labels[matched_idxs == Matcher.BETWEEN_THRESHOLDS] = -1
            matched = gt_boxes[matched_idxs.clamp(min=0)]
        pos, neg = sampler(labels)
        sampled = torch.full_like(labels, -1)
        sampled[pos] = 1
        sampled[neg] = 0
        all_labels.append(sampled)
        all_matched.append(matched)
    return torch.stack(all_labels).to(torch.float32), torch.stack(all_matched)


def rpn_losses(
    anchors: torch.Tensor,
    logits: torch.Tensor,
    deltas: torch.Tensor,
    labels: torch.Tensor,
    matched_gt_boxes: torch.Tensor,
    *,
    box2box: Box2BoxTransform,
    smooth_l1_beta: float,
) -> dict[str, torch.Tensor]:
    """Objectness BCE (mean over sampled anchors) and box regression (smooth L1, or L1 when
    ``smooth_l1_beta`` is 0, on positive anchors, summed and divided by the number of sampled anchors).

    Args:
        anchors: Tensor[R, 4]; logits: Tensor[B, R]; deltas: Tensor[B, R, 4];
        labels: Tensor[B, R] in {-1, 0, 1}; matched_gt_boxes: Tensor[B, R, 4].
    """
    sampled = labels >= 0
    positive = labels == 1
    num_sampled = max(int(sampled.sum()), 1)
    loss_cls = F.binary_cross_entropy_with_logits(logits[sampled], labels[sampled], reduction="sum") / num_sampled
    pos_b, pos_r = torch.nonzero(positive, as_tuple=True)
    target = box2box.get_deltas(anchors[pos_r], matched_gt_boxes[pos_b, pos_r])
    loss_box = smooth_l1(deltas[pos_b, pos_r], target, smooth_l1_beta) / num_sampled
    return {"loss_rpn_cls": loss_cls, "loss_rpn_box": loss_box}


class RPN(nn.Module):
    """Region Proposal Network.

    Args:
        head: an ``RPNHead`` whose anchor count matches ``anchor_generator``.
        anchor_generator: an ``AnchorGenerator`` with one size set per feature level.
        matcher: anchor/GT matcher (torchvision: 0.7 / 0.3, low-quality matches allowed).
        sampler: anchors sampled per image for the losses (torchvision: 256, half positive).
        box2box: delta parametrisation (RPN weights (1, 1, 1, 1)).
        pre_nms_topk, post_nms_topk: (train, test) proposal counts: per level before NMS,
            per image after NMS.
        nms_thresh: IoU threshold of the per-level NMS.
        min_box_size: proposals with a side shorter than this (pixels) are dropped.
        score_thresh: proposals with objectness probability below this are dropped.
        smooth_l1_beta: box loss beta (torchvision 1/9; 0 = L1).
        in_features: names of the backbone levels the RPN runs on, finest first (e.g. p2..p6); None takes
            the features as given.
    """

    def __init__(
        self,
        *,
        head: RPNHead,
        anchor_generator: AnchorGenerator,
        matcher: Matcher,
        sampler: BalancedPositiveNegativeSampler,
        box2box: Box2BoxTransform | None = None,
        pre_nms_topk: Sequence[int] = (2000, 1000),
        post_nms_topk: Sequence[int] = (2000, 1000),
        nms_thresh: float = 0.7,
        min_box_size: float = 1e-3,
        score_thresh: float = 0.0,
        smooth_l1_beta: float = 1.0 / 9,
        in_features: Sequence[str] | None = None,
    ):
        super().__init__()
        if head.objectness_logits.out_channels != anchor_generator.num_anchors_per_location[0]:
            raise ValueError(
                f"head predicts {head.objectness_logits.out_channels} anchors per location but the anchor "
                f"generator makes {anchor_generator.num_anchors_per_location[0]}"
            )
        self.head = head
        self.anchor_generator = anchor_generator
        self.matcher = matcher
        self.sampler = sampler
        self.box2box = box2box if box2box is not None else Box2BoxTransform((1.0, 1.0, 1.0, 1.0))
        self.pre_nms_topk = tuple(int(v) for v in pre_nms_topk)
        self.post_nms_topk = tuple(int(v) for v in post_nms_topk)
        self.nms_thresh = float(nms_thresh)
        self.min_box_size = float(min_box_size)
        self.score_thresh = float(score_thresh)
        self.smooth_l1_beta = float(smooth_l1_beta)
        self.in_features = None if in_features is None else [str(n) for n in in_features]

    def select_features(self, features) -> list[torch.Tensor]:
        """The levels the RPN runs on: ``in_features`` picked by name from a mapping, or a list taken as those
        levels already in order."""
        if isinstance(features, Mapping):
            names = self.in_features if self.in_features is not None else list(features)
            missing = [n for n in names if n not in features]
            if missing:
                raise ValueError(f"features lack the RPN's in_features {missing} (got levels {list(features)})")
            return [features[n] for n in names]
        features = list(features)
        if self.in_features is not None and len(features) != len(self.in_features):
            raise ValueError(f"features has {len(features)} levels, the RPN runs on {len(self.in_features)} "
                             f"({self.in_features})")
        return features

    def forward(self, image_tensor_hw, image_sizes, features, gt_instances=None):
        """
        Args:
            image_tensor_hw: (height, width) of the padded batch tensor.
            image_sizes: per image (height, width) of the resized, unpadded image.
            features: level name -> Tensor[B, C, H_l, W_l] (the backbone's output), or the list of the
                ``in_features`` levels in their order.
            gt_instances: in training, per image ``Instances`` with ``gt_boxes`` Tensor[M, 4].
        Returns:
            (proposals: per image ``Instances`` with ``proposal_boxes`` Tensor[P, 4] x1y1x2y2 and
            ``objectness_logits`` Tensor[P]; losses: {"loss_rpn_cls", "loss_rpn_box"} in training, else {}).
        """
        features = self.select_features(features)
        anchors = self.anchor_generator(image_tensor_hw, [f.shape[-2:] for f in features], features[0].device)
        logits, deltas = flatten_level_outputs(*self.head(features))
        stage = 0 if self.training else 1
        proposals = find_top_rpn_proposals(
            anchors,
            logits,
            deltas,
            image_sizes,
            box2box=self.box2box,
            pre_nms_topk=self.pre_nms_topk[stage],
            post_nms_topk=self.post_nms_topk[stage],
            nms_thresh=self.nms_thresh,
            min_box_size=self.min_box_size,
            score_thresh=self.score_thresh,
        )
        losses = {}
        if self.training:
            if gt_instances is None:
                raise ValueError("RPN needs gt_instances (with gt_boxes) in training mode")
            all_anchors = torch.cat(anchors, 0)
            labels, matched = label_and_sample_anchors(
                all_anchors, gt_instances, matcher=self.matcher, sampler=self.sampler
            )
            losses = rpn_losses(
                all_anchors, logits, deltas, labels, matched, box2box=self.box2box, smooth_l1_beta=self.smooth_l1_beta
            )
        return proposals, losses
