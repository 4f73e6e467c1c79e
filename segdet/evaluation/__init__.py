"""Evaluation of model outputs against COCO-format ground truth."""
from .coco_evaluation import COCOEvaluator, encode_mask_results

__all__ = ["COCOEvaluator", "encode_mask_results"]
