"""ResNet / ResNeXt trunk (torchvision "v1.5": the stride of a bottleneck sits on its 3x3 conv).

Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1``..``layer4``, blocks with
``conv{1,2,3}``/``bn{1,2,3}``/``downsample.{0,1}``) so ImageNet and Mask R-CNN checkpoints map one to one;
the ``bn*`` modules hold whichever normalisation was asked for (FrozenBN, BN, SyncBN or GN).
"""
from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from .norm import conv_norm, get_norm

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "RESNET_SPECS", "STAGE_NAMES"]

# depth -> (block type, blocks per stage res2..res5); the ResNet paper's Table 1.
RESNET_SPECS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
STAGE_NAMES = ("c2", "c3", "c4", "c5")


def _norm(name: str, channels: int) -> nn.Module:
    layer = get_norm(name, channels)
    if layer is None:
        raise ValueError("the ResNet trunk needs a normalisation layer: norm must be FrozenBN, BN, SyncBN or GN")
    return layer


def _downsample(in_channels: int, out_channels: int, stride: int, norm: str) -> nn.Module | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
        _norm(norm, out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 projection) shortcut; ResNet-18/34. Tensor[N, Cin, H, W] ->
    Tensor[N, planes, H/stride, W/stride]."""

    expansion = 1

    def __init__(self, *, in_channels: int, planes: int, stride: int, norm: str, groups: int = 1,
                 width_per_group: int = 64) -> None:
        super().__init__()
        if groups != 1 or width_per_group != 64:
            raise ValueError("BasicBlock (ResNet-18/34) supports only groups=1 and width_per_group=64")
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = _norm(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, planes, stride, norm)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else conv_norm(self.downsample[0], self.downsample[1], x)
        out = self.relu(conv_norm(self.conv1, self.bn1, x))
        out = conv_norm(self.conv2, self.bn2, out)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt, carries the stride), 1x1 expand by 4, plus shortcut.

    Tensor[N, Cin, H, W] -> Tensor[N, 4 * planes, H/stride, W/stride].
    """

    expansion = 4

    def __init__(self, *, in_channels: int, planes: int, stride: int, norm: str, groups: int = 1,
                 width_per_group: int = 64) -> None:
        super().__init__()
        # ResNeXt's bottleneck width: e.g. 32x4d has 32 groups of 4 channels per 64 planes.
        width = int(planes * (width_per_group / 64.0)) * groups
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = _norm(norm, width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = _norm(norm, width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = _norm(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, out_channels, stride, norm)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else conv_norm(self.downsample[0], self.downsample[1], x)
        out = self.relu(conv_norm(self.conv1, self.bn1, x))
        out = self.relu(conv_norm(self.conv2, self.bn2, out))
        out = conv_norm(self.conv3, self.bn3, out)
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """ResNet/ResNeXt feature extractor without the classifier.

    Args (keyword-only):
        depth: 18, 34, 50, 101 or 152.
        groups, width_per_group: ResNeXt cardinality and group width (1, 64 for plain ResNet;
            32, 4 for ResNeXt-50-32x4d; 32, 8 for ResNeXt-101-32x8d). Bottleneck depths only.
        norm: "FrozenBN" | "BN" | "SyncBN" | "GN".
        freeze_at: 0 trains everything; k >= 1 freezes the stem (k=1) and the first k-1 residual stages
            (k=2: stem+res2, ..., k=5: the whole trunk). Frozen parameters get requires_grad=False and
            frozen normalisation layers stay in eval mode when the model is put in train mode.

    forward(x: Tensor[N, 3, H, W]) -> OrderedDict {"c2", "c3", "c4", "c5"} of Tensor[N, C_i, H/s_i, W/s_i]
    with strides s = 4, 8, 16, 32 (rounded up for sizes not divisible by s) and C_i = ``out_channels[name]``.
    """

    def __init__(self, *, depth: int = 50, groups: int = 1, width_per_group: int = 64, norm: str = "FrozenBN",
                 freeze_at: int = 2) -> None:
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"depth must be one of {sorted(RESNET_SPECS)}, got {depth!r}")
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"freeze_at must be in 0..5 (0: nothing, 1: stem, 5: all stages), got {freeze_at!r}")
        if groups < 1 or width_per_group < 1:
            raise ValueError(f"groups and width_per_group must be >= 1, got {groups}, {width_per_group}")
        kind, blocks = RESNET_SPECS[depth]
        block_cls = BasicBlock if kind == "basic" else Bottleneck
        self.depth = depth
        self.freeze_at = freeze_at

        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = _norm(norm, 64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        in_channels = 64
        self.out_channels: dict[str, int] = {}
        self.strides: dict[str, int] = {}
        for index, (num_blocks, name) in enumerate(zip(blocks, STAGE_NAMES)):
            planes = 64 * 2**index
            stage = []
            for b in range(num_blocks):
                stage.append(block_cls(in_channels=in_channels, planes=planes, stride=2 if b == 0 and index > 0
                                       else 1, norm=norm, groups=groups, width_per_group=width_per_group))
                in_channels = planes * block_cls.expansion
            self.add_module(f"layer{index + 1}", nn.Sequential(*stage))
            self.out_channels[name] = in_channels
            self.strides[name] = 4 * 2**index

        self._init_weights()
        self._freeze()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def frozen_modules(self) -> list[nn.Module]:
        """The stem and stages frozen by ``freeze_at``, in forward order."""
        parts: list[nn.Module] = [self.conv1, self.bn1] if self.freeze_at >= 1 else []
        parts += [getattr(self, f"layer{i}") for i in range(1, self.freeze_at)]
        return parts

    def _freeze(self) -> None:
        for module in self.frozen_modules():
            for p in module.parameters():
                p.requires_grad_(False)
            module.eval()

    def train(self, mode: bool = True) -> "ResNet":
        super().train(mode)
        # Batch statistics of a frozen stage must not drift either, so it never leaves eval mode.
        for module in self.frozen_modules():
            module.eval()
        return self

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        x = self.maxpool(self.relu(conv_norm(self.conv1, self.bn1, x)))
        out: OrderedDict[str, Tensor] = OrderedDict()
        for index, name in enumerate(STAGE_NAMES):
            x = getattr(self, f"layer{index + 1}")(x)
            out[name] = x
        return out
