"""Mapping torchvision weights onto segdet's backbone.

segdet's ``ResNetFPNBackbone`` uses torchvision's parameter names (see ``torchvision_backbone_key_map``),
so conversion is mostly prefixing and dropping what the detector has no use for (the classifier).
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from .backbone.resnet import RESNET_SPECS, ResNet

__all__ = [
    "TORCHVISION_ARCHS",
    "convert_torchvision_imagenet",
    "infer_resnet_config",
    "load_trunk_weights",
    "torchvision_backbone_key_map",
]

# torchvision.models builder name -> ResNet(depth, groups, width_per_group).
TORCHVISION_ARCHS = {
    "resnet18": (18, 1, 64),
    "resnet34": (34, 1, 64),
    "resnet50": (50, 1, 64),
    "resnet101": (101, 1, 64),
    "resnet152": (152, 1, 64),
    "resnext50_32x4d": (50, 32, 4),
    "resnext101_32x8d": (101, 32, 8),
    "resnext101_64x4d": (101, 64, 4),
}

# Old torchvision (< 0.13) FPN convs were bare Conv2d; now each sits at index 0 of a Sequential.
_OLD_FPN_KEY = re.compile(r"^fpn\.(inner_blocks|layer_blocks)\.(\d+)\.(weight|bias)$")
_STATS_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def torchvision_backbone_key_map(keys: Iterable[str], prefix: str = "backbone.") -> dict[str, str]:
    """Map torchvision detection-model keys to ``ResNetFPNBackbone`` state-dict keys.

    torchvision ``maskrcnn_resnet50_fpn().state_dict()`` key -> segdet backbone key:
        ``backbone.body.<name>``                       -> ``body.<name>`` (conv1, bn1, layer1..4, identical)
        ``backbone.fpn.inner_blocks.<i>.0.<w|b>``      -> ``fpn.inner_blocks.<i>.0.<w|b>`` (lateral 1x1)
        ``backbone.fpn.layer_blocks.<i>.0.<w|b>``      -> ``fpn.layer_blocks.<i>.0.<w|b>`` (output 3x3)
        ``backbone.fpn.inner_blocks.<i>.<w|b>``        -> same with ``.0`` inserted (torchvision < 0.13)
    Input level i = 0..3 is C2..C5 / output P2..P5 in both; P6 (LastLevelMaxPool) has no weights.
    Keys not starting with ``prefix`` (RPN, RoI heads) are left out of the result; a model that holds
    the backbone as ``backbone`` re-adds the prefix: ``{"backbone." + v: sd[k] for k, v in map.items()}``.
    """
    mapping: dict[str, str] = {}
    for key in keys:
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        match = _OLD_FPN_KEY.match(name)
        if match:
            name = f"fpn.{match.group(1)}.{match.group(2)}.0.{match.group(3)}"
        if name.startswith("body.") or name.startswith("fpn."):
            mapping[key] = name
    return mapping


def infer_resnet_config(state_dict: Mapping[str, Tensor]) -> tuple[int, int, int]:
    """(depth, groups, width_per_group) of a torchvision ImageNet ResNet/ResNeXt ``state_dict``."""
    blocks = []
    for stage in range(1, 5):
        indices = {int(k.split(".")[1]) for k in state_dict if k.startswith(f"layer{stage}.")}
        if not indices:
            raise ValueError(f"state_dict has no 'layer{stage}.*' keys: not a torchvision ResNet state dict")
        blocks.append(max(indices) + 1)
    bottleneck = "layer1.0.conv3.weight" in state_dict
    for depth, (kind, spec) in RESNET_SPECS.items():
        if tuple(blocks) == spec and (kind == "bottleneck") == bottleneck:
            break
    else:
        raise ValueError(f"state_dict has {blocks} blocks per stage, which matches no ResNet depth")
    if not bottleneck:
        return depth, 1, 64
    # layer1 bottleneck: conv2 is width x (width / groups) x 3 x 3 with width = groups * width_per_group.
    width, per_group = state_dict["layer1.0.conv2.weight"].shape[:2]
    groups = int(width) // int(per_group)
    return depth, groups, int(width) // groups


def convert_torchvision_imagenet(
    state_dict: Mapping[str, Tensor],
    *,
    depth: int | None = None,
    groups: int | None = None,
    width_per_group: int | None = None,
    prefix: str = "body.",
) -> dict[str, Tensor]:
    """Convert a torchvision ImageNet ``resnet*``/``resnext*`` state dict to segdet trunk weights.

    Args:
        state_dict: e.g. ``torchvision.models.resnet50().state_dict()`` (keys conv1.*, bn1.*, layer*.*, fc.*).
        depth, groups, width_per_group: expected architecture; any left None is inferred from the
            tensors, and given values are checked against them.
        prefix: prepended to every key; "body." gives keys of ``ResNetFPNBackbone`` (load with
            ``strict=False``, the FPN stays random), "" gives keys of a bare ``ResNet``.

    Returns a new dict: the classifier ``fc.*`` dropped, every other tensor under ``prefix`` with its name,
    checked against the shapes of a ``ResNet`` of that architecture.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
    inferred = infer_resnet_config(state_dict)
    wanted = (depth, groups, width_per_group)
    for label, want, got in zip(("depth", "groups", "width_per_group"), wanted, inferred):
        if want is not None and want != got:
            raise ValueError(f"{label}={want} was requested but the state_dict is {label}={got} "
                             f"(depth, groups, width_per_group = {inferred})")
    reference = ResNet(depth=inferred[0], groups=inferred[1], width_per_group=inferred[2], norm="BN",
                       freeze_at=0).state_dict()
    converted: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("fc."):
            continue
        if key not in reference:
            raise ValueError(f"unexpected key {key!r} in the torchvision state_dict")
        if tuple(value.shape) != tuple(reference[key].shape):
            raise ValueError(f"{key!r} has shape {tuple(value.shape)}, expected {tuple(reference[key].shape)}")
        converted[prefix + key] = value.detach().clone()
    missing = sorted(k for k in reference if k not in state_dict and not k.endswith("num_batches_tracked"))
    if missing:
        raise ValueError(f"state_dict lacks {len(missing)} trunk tensors, e.g. {missing[:3]}")
    return converted


def load_trunk_weights(body: ResNet, source: str | os.PathLike | Mapping[str, Tensor]) -> None:
    """Load trunk weights into ``body`` from a path or a state dict, in place.

    Accepted forms: a torchvision ImageNet state dict (converted here), a dict from
    ``convert_torchvision_imagenet`` (keys ``body.*``), a backbone/model state dict (keys ``body.*`` or
    ``backbone.body.*``; other keys ignored), or a checkpoint ``{"model": state_dict, ...}``. Files are read
    with ``torch.load(weights_only=True)``. Batch-norm statistics are skipped when ``body`` uses GroupNorm.
    """
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"backbone weights file {os.fspath(source)!r} does not exist")
        source = torch.load(source, map_location="cpu", weights_only=True)
    if not isinstance(source, Mapping):
        raise TypeError(f"backbone weights must be a state dict (mapping), got {type(source).__name__}")
    if "model" in source and isinstance(source["model"], Mapping):
        source = source["model"]
    if "conv1.weight" in source and "layer1.0.conv1.weight" in source:
        trunk = convert_torchvision_imagenet(source, prefix="")
    else:
        trunk = {}
        for marker in ("backbone.body.", "body."):
            trunk = {k[len(marker):]: v for k, v in source.items() if k.startswith(marker)}
            if trunk:
                break
        if not trunk:
            raise ValueError("backbone weights hold no trunk tensors (expected keys conv1.*, body.* or backbone.body.*)")
    target = body.state_dict()
    trunk = {k: v for k, v in trunk.items() if k in target or not k.endswith(_STATS_SUFFIXES)}
    _load_strict(body, trunk)


def _load_strict(module: nn.Module, state_dict: dict[str, Tensor]) -> None:
    result = module.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"backbone weights do not fit the trunk: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
