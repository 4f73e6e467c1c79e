"""segdet's compiled operators, drop-in compatible with torchvision.ops where both have the op."""
from .decode_boxes import decode_boxes
from .nms import batched_nms, nms
from .paste_masks import paste_masks
from .roi_align import RoIAlign, roi_align

__all__ = ["RoIAlign", "batched_nms", "decode_boxes", "nms", "paste_masks", "roi_align"]
