"""Mask R-CNN model graph: backbone, RPN, RoI heads and the meta-architecture."""
from .build import build_model
from .meta_arch import MaskRCNN

__all__ = ["MaskRCNN", "build_model"]
