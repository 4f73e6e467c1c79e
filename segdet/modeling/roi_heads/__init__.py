"""RoI heads: box branch (Fast R-CNN) and mask branch."""
from .box_head import FastRCNNFCHead
from .fast_rcnn import FastRCNNPredictor
from .mask_head import MaskRCNNHead
from .roi_heads import StandardROIHeads

__all__ = ["FastRCNNFCHead", "FastRCNNPredictor", "MaskRCNNHead", "StandardROIHeads"]
