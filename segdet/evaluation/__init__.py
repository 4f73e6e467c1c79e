"""Evaluation of model outputs against COCO-format ground truth."""
from .coco_evaluation import COCOEvaluator
from .coco_results import encode_mask_results, to_coco_results

__all__ = ["COCOEvaluator", "encode_mask_results", "to_coco_results"]
