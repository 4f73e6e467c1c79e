"""Data structures shared by the model: boxes, per-image instances and batched images."""
from .boxes import box_area, box_iou, boxes_to_rois, check_boxes, clip_boxes, min_side_mask, rescale_boxes
from .image_list import ImageList
from .instances import Instances

__all__ = [
    "ImageList",
    "Instances",
    "box_area",
    "box_iou",
    "boxes_to_rois",
    "check_boxes",
    "clip_boxes",
    "min_side_mask",
    "rescale_boxes",
]
