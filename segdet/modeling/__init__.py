"""Mask R-CNN model graph: backbone, RPN, RoI heads and the meta-architecture."""
from .build import ModelConfigError, build_model, upgrade_model_config
from .meta_arch import MaskRCNN

__all__ = ["MaskRCNN", "ModelConfigError", "build_model", "upgrade_model_config"]
