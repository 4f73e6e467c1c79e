"""Normalisation layers for the backbone: frozen batch norm and a name -> layer factory."""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FrozenBatchNorm2d", "conv_norm", "get_norm", "NORM_NAMES"]

NORM_NAMES = ("FrozenBN", "BN", "SyncBN", "GN")


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters, as an affine map per channel.

    Detection trains with a few images per GPU, too few for useful batch statistics, so the ImageNet
    statistics are kept. Everything is a buffer (nothing trains): ``weight``, ``bias``, ``running_mean``,
    ``running_var``, each Tensor[C]. ``eps`` is 1e-5, the value torchvision's FrozenBatchNorm2d and
    nn.BatchNorm2d use, so converted weights reproduce the original network.

    Input/output: Tensor[N, C, H, W].
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # Checkpoints written from nn.BatchNorm2d carry a step counter that has no meaning here.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def scale_shift(self) -> tuple[Tensor, Tensor]:
        """The per-channel affine map this layer applies, y = x * scale + shift: two Tensor[C]."""
        # Taken on the (fp32) buffers, so it stays correct when activations are fp16.
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: Tensor) -> Tensor:
        # The four vectors folded into one scale and shift: one multiply-add per element.
        scale, shift = self.scale_shift()
        return x * scale.reshape(1, -1, 1, 1).to(x.dtype) + shift.reshape(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def conv_norm(conv: nn.Conv2d, norm: nn.Module, x: Tensor) -> Tensor:
    """``norm(conv(x))``, as a single convolution when ``norm`` is a FrozenBatchNorm2d.

    A frozen batch norm is a per-output-channel affine map, so it folds into the conv's weight and
    bias: one pass over the activations instead of three (conv, multiply, add), also in training,
    where the gradient reaches the conv weight through the folding. Equal to ``norm(conv(x))`` up
    to float rounding (relative differences ~1e-6 over a ResNet-50 in float32).
    """
    if not isinstance(norm, FrozenBatchNorm2d):
        return norm(conv(x))
    scale, shift = norm.scale_shift()
    weight = conv.weight * scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype)
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    return conv._conv_forward(x, weight, shift.to(weight.dtype))


def get_norm(name: str | None, channels: int) -> nn.Module | None:
    """Build the normalisation layer ``name`` for ``channels`` channels.

    Args:
        name: "FrozenBN" | "BN" | "SyncBN" | "GN" (GroupNorm with 32 groups), or "" / None for no
            normalisation (returns None; the caller then gives its conv a bias).
        channels: number of channels C of the Tensor[N, C, H, W] it normalises.
    """
    if name is None or name == "":
        return None
    if not isinstance(name, str):
        raise TypeError(f"norm must be one of {NORM_NAMES} or '', got {type(name).__name__}")
    if name == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    if name == "BN":
        return nn.BatchNorm2d(channels)
    if name == "SyncBN":
        return nn.SyncBatchNorm(channels)
    if name == "GN":
        if channels % 32 != 0:
            raise ValueError(f"norm 'GN' uses 32 groups, so channels must be a multiple of 32, got {channels}")
        return nn.GroupNorm(32, channels)
    raise ValueError(f"norm must be one of {NORM_NAMES} or '' (none), got {name!r}")
