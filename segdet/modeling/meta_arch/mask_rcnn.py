"""Mask R-CNN meta-architecture: preprocessing, backbone, RPN, RoI heads, postprocessing."""
from __future__ import annotations

import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segdet.ops.paste_masks import check_paste_mode
from segdet.structures import ImageList, Instances, rescale_boxes

LOSS_KEYS = ("loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "loss_mask")


class MaskRCNN(nn.Module):
    """Mask R-CNN with a torchvision-style call: ``model(images, targets=None)``.

    Args:
        backbone: image batch Tensor[B, 3, H, W] -> OrderedDict level name -> Tensor (e.g. p2..p6), with
            ``out_channels`` and ``strides`` (level name -> pixels) attributes.
        rpn: an ``RPN`` (proposal generator); picks its levels by name (``in_features``).
        roi_heads: a ``StandardROIHeads``; picks its levels by name.
        num_classes: foreground classes K; labels are 1..K, 0 is background.
        pixel_mean, pixel_std: per-channel RGB normalisation in [0, 1] units.
        min_size: shortest-edge target (pixels); a tuple is sampled per image in training
            (multi-scale) and its last entry is used in inference.
        max_size: upper bound on the longest edge after resizing (pixels).
        size_divisibility: the padded batch is a multiple of this (32 for FPN's p5).
        mask_threshold: probability above which a pasted mask pixel is foreground.
        mask_paste: "aligned" (pixel centres sample the mask bilinearly, the inverse of the aligned RoI Align
            that makes the mask targets: ``segdet.ops.paste_masks_aligned``) or "torchvision" (torchvision's
            grown, integer box, about one pixel wider per side: ``segdet.ops.paste_masks``). The default keeps
            torchvision's, which checkpoints written before the option was added were evaluated with.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        rpn: nn.Module,
        roi_heads: nn.Module,
        num_classes: int,
        pixel_mean: Sequence[float] = (0.485, 0.456, 0.406),
        pixel_std: Sequence[float] = (0.229, 0.224, 0.225),
        min_size: int | Sequence[int] = 800,
        max_size: int = 1333,
        size_divisibility: int = 32,
        mask_threshold: float = 0.5,
        mask_paste: str = "torchvision",
    ):
        super().__init__()
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.num_classes = int(num_classes)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.min_size = (int(min_size),) if isinstance(min_size, (int, float)) else tuple(int(s) for s in min_size)
        self.max_size = int(max_size)
        self.size_divisibility = int(size_divisibility)
        self.mask_threshold = float(mask_threshold)
        self.mask_paste = check_paste_mode(mask_paste)
        # Inference masks: "image" pastes them into bool [D, H, W] ("masks"); "deferred" leaves them as the RoI
        # probabilities ("mask_probs") for a consumer that pastes box by box (segdet.evaluation.coco_results),
        # so D x H x W never exists. Set by segdet.evaluation.coco_results.deferred_mask_pasting.
        self.mask_output = "image"

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ---- preprocessing -------------------------------------------------------------------------

    def _resize(self, image: torch.Tensor, min_size: int) -> torch.Tensor:
        h, w = image.shape[-2:]
        scale = min(min_size / min(h, w), self.max_size / max(h, w))
        # recompute_scale_factor=True makes the sampling grid follow the rounded output size, as
        # torchvision does; the pretrained torchvision weights were trained on exactly this resize.
        return F.interpolate(
            image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
        )[0]

    def preprocess(self, images: Sequence[torch.Tensor]) -> ImageList:
        """list of Tensor[3, H_i, W_i] RGB (uint8 0..255 or float 0..1) -> normalised, resized,
        padded ``ImageList`` on the model's device."""
        if isinstance(images, torch.Tensor):
            raise TypeError("images must be a list of Tensor[3, H, W] (one per image), got a single Tensor")
        if len(images) == 0:
            raise ValueError("images must contain at least one Tensor[3, H, W]")
        out = []
        for i, img in enumerate(images):
            if not isinstance(img, torch.Tensor) or img.dim() != 3 or img.shape[0] != 3:
                shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
                raise ValueError(f"images[{i}] must be an RGB Tensor[3, H, W], got {shape}")
            img = img.to(self.device)
            img = img.float() / 255.0 if img.dtype == torch.uint8 else img.float()
            img = (img - self.pixel_mean) / self.pixel_std
            size = random.choice(self.min_size) if self.training else self.min_size[-1]
            out.append(self._resize(img, size))
        return ImageList.from_tensors(out, size_divisibility=self.size_divisibility)

    def _gt_instances(self, targets, images: Sequence[torch.Tensor], image_sizes) -> list[Instances]:
        if targets is None or len(targets) != len(images):
            raise ValueError(f"training needs targets: a list of {len(images)} dicts with boxes, labels, masks")
        out = []
        for i, (t, img, size) in enumerate(zip(targets, images, image_sizes)):
            for key in ("boxes", "labels", "masks"):
                if key not in t:
                    raise ValueError(f"targets[{i}] is missing {key!r} (needs boxes, labels, masks)")
            boxes, labels, masks = t["boxes"], t["labels"], t["masks"]
            m = boxes.shape[0] if isinstance(boxes, torch.Tensor) else -1
            if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
                raise ValueError(f"targets[{i}]['boxes'] must be a float Tensor[M, 4] (x1, y1, x2, y2)")
            if labels.shape != (m,) or labels.dtype != torch.int64:
                raise ValueError(f"targets[{i}]['labels'] must be an int64 Tensor[{m}], got {labels.dtype} {tuple(labels.shape)}")
            if m and (labels.min() < 1 or labels.max() > self.num_classes):
                raise ValueError(f"targets[{i}]['labels'] must be in 1..{self.num_classes} (0 is background)")
            if masks.dim() != 3 or masks.shape[0] != m or masks.shape[-2:] != img.shape[-2:]:
                raise ValueError(
                    f"targets[{i}]['masks'] must be Tensor[{m}, {img.shape[-2]}, {img.shape[-1]}], got {tuple(masks.shape)}"
                )
            gt_boxes = rescale_boxes(boxes.to(self.device, torch.float32), img.shape[-2:], size)
            # Masks stay at the input resolution: mask targets are RoI-Aligned from them directly.
            out.append(Instances(size, gt_boxes=gt_boxes, gt_classes=labels.to(self.device), gt_masks=masks.to(self.device)))
        return out

    # ---- forward -------------------------------------------------------------------------------

    def forward(self, images: Sequence[torch.Tensor], targets: Sequence[dict] | None = None):
        """
        Args:
            images: list of Tensor[3, H_i, W_i] RGB, uint8 in [0, 255] or float in [0, 1].
            targets: training only, per image {"boxes": float Tensor[M, 4] x1y1x2y2 input pixels,
                "labels": int64 Tensor[M] in 1..K, "masks": uint8/bool Tensor[M, H_i, W_i]} (M may be 0).
        Returns:
            training: {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "loss_mask"}: scalar Tensors.
            inference: per image {"boxes": Tensor[D, 4] x1y1x2y2 input pixels, "scores": Tensor[D],
            "labels": int64 Tensor[D] in 1..K, "masks": bool Tensor[D, H_i, W_i]}, best first. With
            ``mask_output = "deferred"`` "masks" is replaced by "mask_probs" (float Tensor[D, S, S], the predicted
            class's RoI mask), "image_size" (H_i, W_i), "mask_threshold" and "mask_paste", which the paste function of
            ``mask_paste`` turns into the same "masks".
        """
        batch = self.preprocess(images)
        gt = self._gt_instances(targets, images, batch.image_sizes) if self.training else None
        features = self.backbone(batch.tensor)
        proposals, rpn_losses = self.rpn(batch.tensor.shape[-2:], batch.image_sizes, features, gt)
        instances, roi_losses = self.roi_heads(features, proposals, gt)
        if self.training:
            losses = {**rpn_losses, **roi_losses}
            if "loss_mask" not in losses:
                raise RuntimeError("MaskRCNN needs roi_heads with a mask branch (no loss_mask was produced)")
            return {k: losses[k] for k in LOSS_KEYS}
        return self.postprocess(instances, [img.shape[-2:] for img in images])

    def postprocess(self, instances: Sequence[Instances], original_sizes) -> list[dict]:
        """Per image ``Instances`` in resized-image pixels -> output dicts in input-image pixels.

        Masks are pasted by ``segdet.ops.paste_masks_aligned`` or ``segdet.ops.paste_masks`` (``mask_paste``).
        """
        from segdet.ops import paste_masks, paste_masks_aligned

        paste = paste_masks_aligned if self.mask_paste == "aligned" else paste_masks

        results = []
        for inst, size in zip(instances, original_sizes):
            boxes = rescale_boxes(inst.pred_boxes, inst.image_size, size)
            if self.mask_output == "deferred":
                results.append({"boxes": boxes, "scores": inst.scores, "labels": inst.pred_classes,
                                "mask_probs": inst.pred_masks.float(), "image_size": (int(size[0]), int(size[1])),
                                "mask_threshold": self.mask_threshold, "mask_paste": self.mask_paste})
                continue
            masks = paste(inst.pred_masks.float(), boxes.float(), int(size[0]), int(size[1]), self.mask_threshold)
            results.append({"boxes": boxes, "scores": inst.scores, "labels": inst.pred_classes, "masks": masks})
        return results
