"""Conversion of torchvision Mask R-CNN / ImageNet checkpoints into segdet checkpoints.

A segdet checkpoint is ``{"model": state_dict, "model_config": name or plain dict, ...}``, loadable
with ``torch.load(path, weights_only=True)``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from .backbone_weights import convert_torchvision_imagenet, torchvision_backbone_key_map

TORCHVISION_MODEL_CONFIG = "maskrcnn_r50_fpn_torchvision"

# torchvision detection key -> segdet key, for everything outside the backbone. Both the current
# (Conv2dNormActivation) and the pre-0.13 layouts of the RPN conv and mask head are accepted.
_HEAD_RULES = [
    (r"^rpn\.head\.conv\.0\.0\.(weight|bias)$", r"rpn.head.conv.\1"),
    (r"^rpn\.head\.conv\.(weight|bias)$", r"rpn.head.conv.\1"),
    (r"^rpn\.head\.cls_logits\.(weight|bias)$", r"rpn.head.objectness_logits.\1"),
    (r"^rpn\.head\.bbox_pred\.(weight|bias)$", r"rpn.head.anchor_deltas.\1"),
    (r"^roi_heads\.box_head\.fc6\.(weight|bias)$", r"roi_heads.box_head.fcs.0.\1"),
    (r"^roi_heads\.box_head\.fc7\.(weight|bias)$", r"roi_heads.box_head.fcs.2.\1"),
    (r"^roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)$", r"roi_heads.box_predictor.\1.\2"),
    (r"^roi_heads\.mask_predictor\.conv5_mask\.(weight|bias)$", r"roi_heads.mask_head.deconv.\1"),
    (r"^roi_heads\.mask_predictor\.mask_fcn_logits\.(weight|bias)$", r"roi_heads.mask_head.predictor.\1"),
]
_MASK_CONV_NEW = re.compile(r"^roi_heads\.mask_head\.(\d)\.0\.(weight|bias)$")
_MASK_CONV_OLD = re.compile(r"^roi_heads\.mask_head\.mask_fcn(\d)\.(weight|bias)$")
_REQUIRED = ("backbone.body.conv1.weight", "rpn.head.cls_logits.weight", "roi_heads.box_predictor.cls_score.weight")


def convert_torchvision_maskrcnn(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a torchvision ``maskrcnn_resnet50_fpn`` state dict onto segdet's ``MaskRCNN`` names.

    Class indices are kept: score column / label ``c`` means the same class in both. torchvision's
    mask predictor also has a background channel (index 0) which segdet does not, so it is dropped.

    Raises:
        ValueError: the mapping does not look like a torchvision Mask R-CNN state dict.
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"expected a torchvision Mask R-CNN state_dict (a dict of tensors), got {type(state_dict).__name__}")
    missing = [k for k in _REQUIRED if k not in state_dict]
    if missing:
        raise ValueError(
            f"this does not look like a torchvision Mask R-CNN state_dict: it lacks {missing} "
            f"(first keys: {list(state_dict)[:5]})"
        )
    out: dict[str, torch.Tensor] = {}
    for src, dst in torchvision_backbone_key_map(state_dict.keys()).items():
        if not src.endswith("num_batches_tracked"):
            out["backbone." + dst] = state_dict[src]
    unknown = []
    for key, value in state_dict.items():
        if key.startswith("backbone."):
            continue
        new = None
        for pattern, repl in _HEAD_RULES:
            if re.match(pattern, key):
                new = re.sub(pattern, repl, key)
                break
        m = _MASK_CONV_NEW.match(key) or _MASK_CONV_OLD.match(key)
        if m:
            index = int(m.group(1)) - (1 if key.startswith("roi_heads.mask_head.mask_fcn") else 0)
            # segdet's conv stack interleaves ReLUs: conv i sits at Sequential index 2 i.
            new = f"roi_heads.mask_head.convs.{2 * index}.{m.group(2)}"
        if new is None:
            unknown.append(key)
            continue
        if new.startswith("roi_heads.mask_head.predictor."):
            value = value[1:]
        out[new] = value
    if unknown:
        raise ValueError(f"unexpected keys in the torchvision Mask R-CNN state_dict: {unknown[:5]}")
    return {k: v.detach().clone() for k, v in out.items()}


def torchvision_model_config() -> dict:
    """The plain-dict model config (conf/model/maskrcnn_r50_fpn_torchvision.yaml, composed with the config it
    starts from) that the converted weights belong to; ``segdet.modeling.build_model`` builds it."""
    from segdet.config import compose_model_config

    return compose_model_config(TORCHVISION_MODEL_CONFIG)


def convert_checkpoint(source: str, src_path: str, dst_path: str, arch: str | None = None) -> dict:
    """Read ``src_path``, convert it and ``torch.save`` a segdet checkpoint to ``dst_path``.

    Args:
        source: "torchvision" (a Mask R-CNN state dict, e.g. torchvision's published
            maskrcnn_resnet50_fpn weights) or "torchvision-imagenet" (a classification ResNet/ResNeXt,
            giving trunk-only weights for ``backbone.weights`` / fine-tuning).
        arch: for "torchvision-imagenet", the torchvision builder name (e.g. "resnet50"), checked
            against the tensors.
    Returns:
        the checkpoint dict that was saved.
    """
    try:
        state = torch.load(src_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same actionable message
        raise ValueError(f"could not read {src_path!r} as a torch checkpoint: {exc}") from exc
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    if source == "torchvision":
        ckpt = {"model": convert_torchvision_maskrcnn(state), "model_config": torchvision_model_config(),
                "model_config_name": TORCHVISION_MODEL_CONFIG, "source": f"torchvision:{src_path}"}
    elif source == "torchvision-imagenet":
        from .backbone_weights import TORCHVISION_ARCHS

        if arch is None or arch not in TORCHVISION_ARCHS:
            raise ValueError(f"--arch must be one of {sorted(TORCHVISION_ARCHS)} for torchvision-imagenet, got {arch!r}")
        depth, groups, width = TORCHVISION_ARCHS[arch]
        try:
            trunk = convert_torchvision_imagenet(state, depth=depth, groups=groups, width_per_group=width, prefix="backbone.body.")
        except ValueError as exc:
            raise ValueError(f"{src_path!r} is not a torchvision {arch} ImageNet state_dict: {exc}") from exc
        ckpt = {"model": trunk, "source": f"torchvision-imagenet:{arch}:{src_path}"}
    else:
        raise ValueError(f"source must be 'torchvision' or 'torchvision-imagenet', got {source!r}")
    torch.save(ckpt, dst_path)
    return ckpt
