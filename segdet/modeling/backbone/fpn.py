"""Feature Pyramid Network (Lin et al. 2017) over the ResNet stages, with P6 by stride-2 subsampling of P5."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .norm import get_norm

__all__ = ["FPN"]


def _conv_block(in_channels: int, out_channels: int, kernel_size: int, norm: str) -> nn.Sequential:
    # Wrapped in a Sequential (index 0 = conv, 1 = norm) to keep torchvision's parameter names
    # (fpn.inner_blocks.<i>.0.weight), so its checkpoints load without renaming.
    norm_layer = get_norm(norm, out_channels)
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=norm_layer is None)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return nn.Sequential(conv) if norm_layer is None else nn.Sequential(conv, norm_layer)


class FPN(nn.Module):
    """Top-down pathway with lateral 1x1 convs and 3x3 output convs.

    Args (keyword-only):
        in_channels: channels of the input levels, finest first (e.g. C2..C5 = 256, 512, 1024, 2048).
        out_channels: channels of every output level (256 usually; 64 for the small CPU model).
        norm: "" for plain convs with bias, or a ``get_norm`` name ("GN", "BN", ...) after each conv.
        max_pool_level: add a coarser level by max-pooling the coarsest output with kernel 1 and
            stride 2 (i.e. taking every other pixel), as Mask R-CNN's P6 for the RPN.

    forward(features: list of Tensor[N, in_channels[i], H_i, W_i], finest first) -> list of
    Tensor[N, out_channels, H_i, W_i] (one per input), plus Tensor[N, out_channels, ceil(H_last/2),
    ceil(W_last/2)] when ``max_pool_level``.
    """

    def __init__(self, *, in_channels: list[int], out_channels: int = 256, norm: str = "", max_pool_level: bool = True) -> None:
        super().__init__()
        if len(in_channels) == 0:
            raise ValueError("in_channels must list at least one input level")
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        self.inner_blocks = nn.ModuleList(_conv_block(c, out_channels, 1, norm) for c in in_channels)
        self.layer_blocks = nn.ModuleList(_conv_block(out_channels, out_channels, 3, norm) for _ in in_channels)
        self.out_channels = out_channels
        self.max_pool_level = max_pool_level

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        if len(features) != len(self.inner_blocks):
            raise ValueError(f"FPN expects {len(self.inner_blocks)} feature maps, got {len(features)}")
        top_down = self.inner_blocks[-1](features[-1])
        results = [self.layer_blocks[-1](top_down)]
        for index in range(len(features) - 2, -1, -1):
            lateral = self.inner_blocks[index](features[index])
            # Interpolating to the lateral's exact size (not scale 2) handles odd sizes, where the
            # coarser map is ceil(H / 2) pixels high.
            upsampled = F.interpolate(top_down, size=lateral.shape[-2:], mode="nearest")
            top_down = lateral + upsampled
            results.insert(0, self.layer_blocks[index](top_down))
        if self.max_pool_level:
            results.append(F.max_pool2d(results[-1], kernel_size=1, stride=2, padding=0))
        return results
