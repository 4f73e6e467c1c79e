"""COCO box and mask AP of model outputs with pycocotools."""
from __future__ import annotations

import contextlib
import copy
import io
import logging
from typing import Any, Mapping, Sequence

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.coco import load_coco_json
from .coco_results import encode_mask_results, to_coco_results

__all__ = ["METRIC_NAMES", "COCOEvaluator", "encode_mask_results"]

logger = logging.getLogger(__name__)

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _load_gt(gt: str | COCO) -> COCO:
    if isinstance(gt, COCO):
        return gt
    coco = COCO()
    coco.dataset = load_coco_json(str(gt))
    # pycocotools prints progress lines while indexing; keep them out of training logs.
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class COCOEvaluator:
    """Accumulates detections per image and computes COCO AP (x 100) for boxes and masks.

    Args:
        gt: ground-truth COCO instances json path, or a loaded pycocotools COCO.
        label_to_category_id: model label (1..K) -> COCO category id (the dataset's ``label_to_category_id``).
        iou_types: subset of ("bbox", "segm").
    Only processed images are evaluated, so a subset of the ground truth can be evaluated on its own.
    """

    # inference_on_dataset may hand over unpasted masks ("mask_probs"): process() pastes them box by box.
    accepts_deferred_masks = True

    def __init__(self, gt: str | COCO, label_to_category_id: Mapping[int, int], *,
                 iou_types: Sequence[str] = ("bbox", "segm")):
        unknown = set(iou_types) - {"bbox", "segm"}
        if unknown:
            raise ValueError(f"iou_types must be a subset of ('bbox', 'segm'), got {tuple(iou_types)}")
        self.coco_gt = _load_gt(gt)
        self.label_to_category_id = {int(k): int(v) for k, v in label_to_category_id.items()}
        self.iou_types = tuple(iou_types)
        self.reset()

    def reset(self) -> None:
        self._results: list[dict] = []
        self._image_ids: list = []

    def process(self, image_ids: Sequence, outputs: Sequence[Mapping[str, Any]]) -> None:
        """Adds model outputs of a batch, in input-image (= annotation) coordinates.

        outputs[i]: {"boxes": Tensor[D, 4] (x1, y1, x2, y2) absolute pixels, "scores": Tensor[D], "labels": int64
        Tensor[D] in 1..K} for image ``image_ids[i]``, plus (needed for "segm") either "masks" bool Tensor[D, H, W]
        or the deferred "mask_probs" / "image_size" / "mask_threshold" of ``MaskRCNN.mask_output = "deferred"``,
        which are pasted box by box (``coco_results.to_coco_results``).
        """
        if len(image_ids) != len(outputs):
            raise ValueError(f"got {len(image_ids)} image_ids but {len(outputs)} outputs")
        for image_id, out in zip(image_ids, outputs):
            image_id = int(image_id)
            if image_id not in self.coco_gt.imgs:
                raise ValueError(f"image_id {image_id} is not in the ground truth")
            self._image_ids.append(image_id)
            self._results.extend(to_coco_results(out, image_id, self.label_to_category_id,
                                                 with_masks="segm" in self.iou_types))

    def evaluate(self) -> dict[str, float]:
        """{"bbox/AP", "bbox/AP50", "bbox/AP75", "bbox/APs", "bbox/APm", "bbox/APl", "segm/AP", ...} in percent,
        over the images processed on all ranks. Prints pycocotools' summary tables. No detections give zeros; a
        metric without ground truth (e.g. APs when no object is small) is NaN.

        Distributed (process group initialised): every rank must call it; rank 0 gathers all results, evaluates
        once and every rank returns its metrics."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return self._evaluate(self._results, self._image_ids)
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        gathered: list = [None] * world if rank == 0 else None
        torch.distributed.gather_object((self._results, self._image_ids), gathered, dst=0)
        metrics = [None]
        if rank == 0:
            metrics[0] = self._evaluate([r for part in gathered for r in part[0]],
                                        [i for part in gathered for i in part[1]])
        torch.distributed.broadcast_object_list(metrics, src=0)
        return metrics[0]

    def _evaluate(self, results: list, image_ids: list) -> dict[str, float]:
        image_ids = sorted(set(image_ids))
        metrics: dict[str, float] = {}
        for iou_type in self.iou_types:
            dets = [r for r in results if iou_type == "bbox" or "segmentation" in r]
            if iou_type == "segm" and results and not dets:
                logger.warning("no masks in the outputs: segm AP reported as 0")
            metrics.update({f"{iou_type}/{k}": v for k, v in self._evaluate_one(iou_type, dets, image_ids).items()})
        return metrics

    def _evaluate_one(self, iou_type: str, dets: list, image_ids: list) -> dict[str, float]:
        print(f"COCO {iou_type} metrics over {len(image_ids)} images:")
        if not dets or not image_ids:
            logger.warning("no %s detections to evaluate: all %s metrics are 0", iou_type, iou_type)
            return {k: 0.0 for k in METRIC_NAMES}
        if iou_type == "bbox":
            # box evaluation never reads the masks; leaving them out keeps the deep copy for loadRes small
            dets = [{k: v for k, v in d.items() if k != "segmentation"} for d in dets]
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = self.coco_gt.loadRes(copy.deepcopy(dets))
        evaluator = COCOeval(self.coco_gt, coco_dt, iou_type)
        evaluator.params.imgIds = image_ids
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.evaluate()
            evaluator.accumulate()
        evaluator.summarize()
        # stats holds -1 where a metric is undefined (no ground truth of that size): NaN, not a fake -100 or 0.
        return {k: float(v) * 100.0 if v >= 0 else float("nan") for k, v in zip(METRIC_NAMES, evaluator.stats[:6])}
