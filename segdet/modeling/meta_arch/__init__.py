"""Meta-architectures: whole detectors assembled from built parts."""
from .mask_rcnn import MaskRCNN

__all__ = ["MaskRCNN"]
