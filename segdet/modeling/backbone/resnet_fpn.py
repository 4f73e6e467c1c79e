"""ResNet/ResNeXt + FPN backbone: images -> pyramid {"p2", ..., "p6"}."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from .fpn import FPN
from .resnet import STAGE_NAMES, ResNet

__all__ = ["ResNetFPNBackbone", "build_resnet_fpn_backbone"]

LEVEL_NAMES = ("p2", "p3", "p4", "p5", "p6")


class ResNetFPNBackbone(nn.Module):
    """A ResNet trunk (``body``) followed by an FPN (``fpn``), named like torchvision's
    ``maskrcnn_resnet50_fpn().backbone`` so its ``backbone.*`` weights load unchanged.

    Args (keyword-only):
        body: a built ``ResNet``.
        fpn: a built ``FPN`` whose ``in_channels`` are the body's c2..c5 channels, with ``max_pool_level``.
        channels_last: run in torch.channels_last memory format (faster convs on GPUs with tensor cores).

    Attributes:
        out_channels: channels of every pyramid level (int).
        strides: level name -> stride in pixels, {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}.

    forward(x: float Tensor[N, 3, H, W], normalised image batch) -> OrderedDict of
    Tensor[N, out_channels, ceil(H / s), ceil(W / s)] for s = strides[name] (exact when H and W are
    multiples of 32, which ``ImageList.from_tensors`` guarantees), keys "p2", "p3", "p4", "p5", "p6".
    """

    def __init__(self, *, body: ResNet, fpn: FPN, channels_last: bool = False) -> None:
        super().__init__()
        expected = [body.out_channels[name] for name in STAGE_NAMES]
        actual = [block[0].in_channels for block in fpn.inner_blocks]
        if expected != actual:
            raise ValueError(f"fpn in_channels {actual} do not match the body's c2..c5 channels {expected}")
        if not fpn.max_pool_level:
            raise ValueError("fpn must be built with max_pool_level=True to produce p6")
        self.body = body
        self.fpn = fpn
        self.out_channels: int = fpn.out_channels
        self.strides: dict[str, int] = {name: 4 * 2**i for i, name in enumerate(LEVEL_NAMES)}
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a float Tensor[N, 3, H, W] image batch, got {shape}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating point (normalised) image batch, got dtype {x.dtype}")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.body(x)
        levels = self.fpn(list(features.values()))
        return OrderedDict(zip(LEVEL_NAMES, levels))


def build_resnet_fpn_backbone(
    *,
    depth: int = 50,
    groups: int = 1,
    width_per_group: int = 64,
    norm: str = "FrozenBN",
    freeze_at: int = 2,
    fpn_channels: int = 256,
    fpn_norm: str = "",
    channels_last: bool = False,
    weights: str | None = None,
) -> ResNetFPNBackbone:
    """Build a ResNet/ResNeXt-FPN backbone from plain values (the Hydra ``_target_`` of model configs).

    Args:
        depth: 18, 34, 50, 101 or 152.
        groups, width_per_group: 1, 64 for ResNet; 32, 4 for ResNeXt-50-32x4d; 32, 8 for ResNeXt-101-32x8d.
        norm: trunk normalisation, "FrozenBN" | "BN" | "SyncBN" | "GN".
        freeze_at: 0 none, 1 stem, 2 stem+res2, ..., 5 whole trunk (torchvision's default
            trainable_layers=3 equals freeze_at=2).
        fpn_channels: channels of every pyramid level (256 standard, 64 for the small CPU model).
        fpn_norm: "" (convs with bias, as torchvision) or a normalisation name for the FPN convs.
        channels_last: use the channels_last memory format.
        weights: optional path to trunk weights: a torchvision ImageNet ResNet/ResNeXt state dict, or a
            file written by ``convert_torchvision_imagenet`` (see ``segdet.modeling.backbone_weights``).
            Loaded before freezing takes effect; the FPN keeps its random initialisation.
    """
    body = ResNet(depth=depth, groups=groups, width_per_group=width_per_group, norm=norm, freeze_at=freeze_at)
    fpn = FPN(in_channels=[body.out_channels[n] for n in STAGE_NAMES], out_channels=fpn_channels, norm=fpn_norm,
              max_pool_level=True)
    if weights:
        from ..backbone_weights import load_trunk_weights

        load_trunk_weights(body, weights)
    return ResNetFPNBackbone(body=body, fpn=fpn, channels_last=channels_last)
