"""Running a detector over a test loader into an evaluator, and drawing prediction overlays."""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from segdet.utils.amp import autocast

logger = logging.getLogger(__name__)


@torch.no_grad()
def inference_on_dataset(
    model: nn.Module, data_loader: Iterable, evaluator, *, device: torch.device | str,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Feed every batch ``(images, targets)`` of ``data_loader`` (this rank's share) through ``model`` in eval mode
    and ``evaluator.process(image_ids, outputs)``; returns ``evaluator.evaluate()`` (which gathers all ranks).

    Outputs are per image {"boxes": [D, 4] x1y1x2y2 abs px, "scores": [D], "labels": [D], "masks": bool [D, H, W]}
    in input-image coordinates, moved to the CPU before they are handed over. The model's train/eval mode is
    restored afterwards.
    """
    from segdet.evaluation.coco_results import deferred_mask_pasting

    device = torch.device(device)
    was_training = model.training
    model.eval()
    evaluator.reset()
    try:
        for images, targets in data_loader:
            images = [img.to(device, non_blocking=True) for img in images]
            # An evaluator that pastes masks itself, box by box, gets them unpasted: no D x H x W bool masks.
            with autocast(device, amp_dtype), \
                    deferred_mask_pasting(model, enabled=getattr(evaluator, "accepts_deferred_masks", False)):
                outputs = model(images)
            outputs = [{k: v.to("cpu") if isinstance(v, torch.Tensor) else v for k, v in out.items()}
                       for out in outputs]
            evaluator.process([int(t["image_id"]) for t in targets], outputs)
    finally:
        model.train(was_training)
    return evaluator.evaluate()


def json_safe_metrics(metrics: dict) -> dict:
    """NaN (a COCO metric without ground truth, e.g. APl when every object is small) -> None, so metrics.json is
    strict JSON."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


@torch.no_grad()
def write_overlays(
    model: nn.Module, dataset, *, out_dir: str | Path, device: torch.device | str, class_names: Sequence[str],
    num_images: int = 8, score_threshold: float = 0.5,
) -> list[Path]:
    """Draw the predictions (score >= ``score_threshold``) of the first ``num_images`` items of ``dataset`` (image
    uint8 [3, H, W], target with "image_id") into ``out_dir/<image_id>.png``. Returns the written paths."""
    from segdet.utils.visualize import draw_instances

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    was_training = model.training
    model.eval()
    written = []
    try:
        for i in range(min(num_images, len(dataset))):
            image, target = dataset[i]
            (out,) = model([image.to(device)])
            keep = out["scores"] >= score_threshold
            out = {k: v[keep].cpu() for k, v in out.items()}
            picture = draw_instances(image, out["boxes"], out["labels"], out["scores"], out["masks"], class_names)
            path = out_dir / f"{int(target['image_id'])}.png"
            picture.save(path)
            written.append(path)
    finally:
        model.train(was_training)
    return written
