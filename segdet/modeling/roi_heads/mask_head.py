"""Mask head (conv stack, 2x deconv, per-class 1x1 conv), its loss and inference."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segdet.structures import Instances, rescale_boxes


class MaskRCNNHead(nn.Module):
    """``len(conv_dims)`` 3x3 convs + ReLU, a stride-2 transposed conv + ReLU, a 1x1 conv to K logits.

    Args:
        in_channels: channels of the pooled RoI features.
        conv_dims: widths of the 3x3 convs (torchvision/detectron2: four of 256); the deconv keeps
            the last width (``deconv_dim`` overrides it).
        num_classes: foreground classes K (one mask per class).
    Input Tensor[N, C, S, S] -> mask logits Tensor[N, K, 2S, 2S] (S = 14 gives 28 x 28 masks).
    """

    def __init__(self, *, in_channels: int, conv_dims: Sequence[int], num_classes: int, deconv_dim: int | None = None):
        super().__init__()
        layers = []
        channels = int(in_channels)
        for dim in conv_dims:
            layers += [nn.Conv2d(channels, int(dim), 3, padding=1), nn.ReLU(inplace=True)]
            channels = int(dim)
        self.convs = nn.Sequential(*layers)
        deconv_dim = channels if deconv_dim is None else int(deconv_dim)
        self.deconv = nn.ConvTranspose2d(channels, deconv_dim, 2, stride=2)
        self.predictor = nn.Conv2d(deconv_dim, int(num_classes), 1)
        self.num_classes = int(num_classes)
        for m in list(self.convs) + [self.deconv]:
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0.0)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(F.relu(self.deconv(self.convs(x))))


def mask_rcnn_targets(
    proposals: Sequence[Instances], gt_masks: Sequence[torch.Tensor], mask_size: int, aligned: bool
) -> torch.Tensor:
    """RoI-Align each foreground proposal's GT mask into a ``mask_size`` x ``mask_size`` target.

    GT masks may be stored at the original image resolution (Hm, Wm) while boxes live in the
    resized image (``image_size``); boxes are mapped back to the mask's pixels, which avoids resizing
    every mask and samples the mask at full resolution.

    Args:
        proposals: per image, foreground proposals with ``proposal_boxes`` and ``gt_index`` int64
            Tensor[P] (the matched row of that image's ``gt_masks``); at least one in all (``mask_rcnn_loss``
            returns before asking for targets of no RoI).
        gt_masks: per image Tensor[M, Hm, Wm] (uint8/bool/float) GT masks.
    Returns:
        float Tensor[sum P, mask_size, mask_size] in [0, 1].
    """
    from segdet.ops import roi_align

    targets = []
    for p, masks in zip(proposals, gt_masks):
        if len(p) == 0:
            continue
        boxes = rescale_boxes(p.proposal_boxes, p.image_size, masks.shape[-2:])
        rois = torch.cat([p.gt_index[:, None].to(boxes.dtype), boxes], dim=1)
        # One source image per GT mask; the roi's batch index picks it, so no per-RoI mask copy.
        target = roi_align(masks[:, None].to(boxes.dtype), rois, (mask_size, mask_size), 1.0, 0, aligned)
        targets.append(target[:, 0])
    return torch.cat(targets)


def mask_rcnn_loss(
    mask_logits: torch.Tensor, proposals: Sequence[Instances], gt_masks: Sequence[torch.Tensor], *, aligned: bool
) -> torch.Tensor:
    """Mean per-pixel BCE between the GT class's mask logits and the RoI-Aligned GT masks.

    Only the channel of each RoI's GT class contributes (the masks of the other classes do not
    compete, as in the paper).

    Args:
        mask_logits: Tensor[P, K, S, S] for the foreground proposals (in the order of ``proposals``).
        proposals: per image foreground proposals with ``gt_classes`` in 1..K plus the fields
            ``mask_rcnn_targets`` needs; gt_masks: per image Tensor[M, Hm, Wm].
    Returns:
        scalar Tensor (0 with a gradient path when there are no foreground RoIs).
    """
    if mask_logits.shape[0] == 0:
        return mask_logits.sum() * 0.0
    size = mask_logits.shape[-1]
    targets = mask_rcnn_targets(proposals, gt_masks, size, aligned).to(mask_logits.device)
    gt_classes = torch.cat([p.gt_classes for p in proposals])
    logits = mask_logits[torch.arange(mask_logits.shape[0], device=mask_logits.device), gt_classes - 1]
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))


def mask_rcnn_inference(mask_logits: torch.Tensor, instances: Sequence[Instances]) -> None:
    """Set ``pred_masks`` float Tensor[D, S, S] (sigmoid of the predicted class's logits, in box
    coordinates) on each image's ``instances`` (which have ``pred_classes`` in 1..K)."""
    classes = torch.cat([inst.pred_classes for inst in instances])
    probs = mask_logits[torch.arange(mask_logits.shape[0], device=mask_logits.device), classes - 1].sigmoid()
    for inst, p in zip(instances, probs.split([len(i) for i in instances])):
        inst.pred_masks = p
