"""Backbones: ResNet/ResNeXt trunks, FPN and their normalisation layers."""
from .fpn import FPN
from .norm import FrozenBatchNorm2d, get_norm
from .resnet import ResNet
from .resnet_fpn import ResNetFPNBackbone, build_resnet_fpn_backbone

__all__ = [
    "FPN",
    "FrozenBatchNorm2d",
    "ResNet",
    "ResNetFPNBackbone",
    "build_resnet_fpn_backbone",
    "get_norm",
]
