"""Build a detector from a Hydra model config (a ``_target_`` tree), deriving what the parts must agree on.

A Mask R-CNN config states each width, stride and size once. The backbone is built first; it reports its
``out_channels`` and its ``strides`` per named level (p2..p6). The other parts are completed from it:

==========================================  =========================================================
argument                                    derived from
==========================================  =========================================================
rpn.head.in_channels                        the backbone's channels of ``rpn.in_features``
rpn.head.num_anchors                        the anchor generator's anchors per location
rpn.anchor_generator.strides                the backbone's strides of ``rpn.in_features`` (an explicit
                                            null keeps torchvision's "padded size // feature size")
roi_heads.box_pooler.scales                 1 / the backbone's strides of ``roi_heads.box_in_features``
roi_heads.mask_pooler.scales                the same for ``roi_heads.mask_in_features``
roi_heads.box_head.input_shape              (backbone channels, *box_pooler.output_size)
roi_heads.box_predictor.in_features         the box head's output width
roi_heads.mask_head.in_channels             the backbone's channels of ``roi_heads.mask_in_features``
roi_heads.box_predictor/mask_head.num_classes   the model's ``num_classes``
==========================================  =========================================================

Derived arguments are left out of the config files (their nodes are ``_partial_``); a value that is written out
anyway must equal the derived one, else building fails naming both keys. Mismatches that derivation cannot remove
(a feature name the backbone lacks, one anchor size set per RPN level...) fail here too, before any forward pass.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

__all__ = ["ModelConfigError", "build_model", "upgrade_model_config"]

logger = logging.getLogger(__name__)

# The level names of the FPN backbones, finest first: configs written before features were named used indices.
_INDEXED_LEVELS = ("p2", "p3", "p4", "p5", "p6")


class ModelConfigError(ValueError):
    """Two model config keys that must agree do not, or a key names something the model does not have."""


def build_model(cfg_model, num_classes: int | None = None) -> nn.Module:
    """Instantiate the model node of ``conf/model/<name>.yaml``.

    Args:
        cfg_model: the model node (DictConfig or plain dict, e.g. a checkpoint's "model_config"): a ``_target_``
            tree with a top-level ``num_classes``. A ``MaskRCNN`` (or subclass) target is assembled part by part
            with the derived arguments filled in (module docstring); any other target is instantiated as it is.
            Configs of checkpoints written before the derivation are upgraded (``upgrade_model_config``).
        num_classes: if given, overrides the config's ``num_classes`` (foreground classes K).
    Returns:
        the built ``nn.Module`` (e.g. ``MaskRCNN``).
    """
    from hydra.utils import get_object, instantiate
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg_model, DictConfig):
        cfg = OmegaConf.to_container(cfg_model, resolve=True)
    elif isinstance(cfg_model, Mapping):
        cfg = OmegaConf.to_container(OmegaConf.create(copy.deepcopy(dict(cfg_model))), resolve=True)
    else:
        raise TypeError(f"cfg_model must be a DictConfig or a dict (a model config node), got {type(cfg_model).__name__}")
    if "_target_" not in cfg:
        raise ValueError(f"cfg_model has no _target_: pass the model node (conf/model/<name>.yaml), got keys {list(cfg)}")
    if "num_classes" not in cfg:
        raise ValueError("cfg_model has no top-level num_classes (the number of foreground classes)")
    cfg = upgrade_model_config(cfg)
    if num_classes is not None:
        cfg["num_classes"] = int(num_classes)
    target = get_object(cfg["_target_"])

    from .meta_arch import MaskRCNN

    if isinstance(target, type) and issubclass(target, MaskRCNN):
        return _build_mask_rcnn(cfg)
    if not _accepts(target, "num_classes"):
        cfg.pop("num_classes")
    return instantiate(cfg, _convert_="all")


def upgrade_model_config(cfg: Mapping, source: str = "the model config") -> dict:
    """A Mask R-CNN config of the layout before features were named, in today's layout (other configs unchanged).

    The old layout addressed FPN levels by list index (``roi_heads.box_in_features: [0, 1, 2, 3]``) and stored the
    heads' ``num_classes`` next to the top-level one. Indices become names (0 -> "p2", ...), and the heads'
    ``num_classes`` is dropped when it equals the top-level one so that a ``num_classes`` override reaches them.
    Every other written-out value stays and is checked against its derived value when the model is built.
    """
    cfg = copy.deepcopy(dict(cfg))
    heads = cfg.get("roi_heads")
    if not isinstance(heads, Mapping):
        return cfg
    indexed = [k for k in ("box_in_features", "mask_in_features") if _all_ints(heads.get(k))]
    if not indexed:
        return cfg
    for key in indexed:
        bad = [i for i in heads[key] if not 0 <= i < len(_INDEXED_LEVELS)]
        if bad:
            raise ModelConfigError(
                f"{source}: roi_heads.{key}={heads[key]} uses level indices outside 0..{len(_INDEXED_LEVELS) - 1}; "
                f"write level names instead (roi_heads.{key}: [p2, p3, p4, p5]) or rebuild with model=NAME"
            )
        heads[key] = [_INDEXED_LEVELS[i] for i in heads[key]]
    for part in ("box_predictor", "mask_head"):
        node = heads.get(part)
        if isinstance(node, Mapping) and node.get("num_classes") == cfg.get("num_classes"):
            node.pop("num_classes")
    logger.info("%s uses the layout of level indices; read it with level names %s", source,
                heads.get("box_in_features"))
    return cfg


# ---- Mask R-CNN assembly ---------------------------------------------------------------------------------------


def _build_mask_rcnn(cfg: dict) -> nn.Module:
    from hydra.utils import instantiate

    cfg = dict(cfg)
    for part in ("backbone", "rpn", "roi_heads"):
        if not isinstance(cfg.get(part), Mapping) or "_target_" not in cfg[part]:
            raise ModelConfigError(f"model.{part} must be a _target_ node, got {cfg.get(part)!r}")
    num_classes = int(cfg["num_classes"])
    backbone_node = cfg.pop("backbone")
    backbone = instantiate(backbone_node, _convert_="all")
    width_key = "model.backbone.fpn_channels" if "fpn_channels" in backbone_node else "model.backbone's out_channels"
    levels = _Levels(backbone, width_key)
    rpn = _build_rpn(cfg.pop("rpn"), levels)
    roi_heads = _build_roi_heads(cfg.pop("roi_heads"), levels, num_classes)
    return instantiate(cfg, backbone=backbone, rpn=rpn, roi_heads=roi_heads, _convert_="all")


class _Levels:
    """The built backbone's named levels: channels and stride of each (detectron2's ShapeSpec, as a lookup)."""

    def __init__(self, backbone: nn.Module, width_key: str):
        strides = getattr(backbone, "strides", None)
        channels = getattr(backbone, "out_channels", None)
        if not isinstance(strides, Mapping) or channels is None:
            raise ModelConfigError(
                f"model.backbone ({type(backbone).__name__}) must have `strides` (level name -> stride) and "
                "`out_channels` (int or level name -> int) for the heads to be derived from it"
            )
        self.strides = {str(k): int(v) for k, v in strides.items()}
        self.channels = ({str(k): int(v) for k, v in channels.items()} if isinstance(channels, Mapping)
                         else {name: int(channels) for name in self.strides})
        self.width_key = width_key

    def check_names(self, names: Sequence[str], key: str) -> list[str]:
        if isinstance(names, str) or not names:
            raise ModelConfigError(f"{key} must list level names such as [p2, p3, p4, p5], got {names!r}")
        names = [str(n) for n in names]
        unknown = [n for n in names if n not in self.strides]
        if unknown:
            raise ModelConfigError(f"{key}={names} names {unknown}, which model.backbone does not produce "
                                   f"(its levels: {list(self.strides)})")
        return names

    def width(self, names: Sequence[str], key: str) -> int:
        """The one channel count of levels ``names`` (shared heads need all of them equal)."""
        widths = {self.channels[n] for n in names}
        if len(widths) != 1:
            raise ModelConfigError(f"{key}={list(names)} have different channel counts "
                                   f"{[self.channels[n] for n in names]}; a head shared by the levels needs one")
        return widths.pop()


def _build_rpn(node: Mapping, levels: _Levels) -> nn.Module:
    from hydra.utils import instantiate

    node = dict(node)
    node.pop("_partial_", None)
    in_features = levels.check_names(_or(node.get("in_features"), list(levels.strides)), "model.rpn.in_features")
    node["in_features"] = in_features
    strides = [levels.strides[n] for n in in_features]

    ag_node = dict(_pop_node(node, "anchor_generator", "model.rpn"))
    if "strides" in ag_node and ag_node["strides"] is None:
        ag_node.pop("_partial_", None)  # explicit null: torchvision's strides inferred from the image size
    else:
        ag_node = _complete(ag_node, "model.rpn.anchor_generator", strides=(strides, "the backbone strides of "
                                                                                    f"model.rpn.in_features {in_features}"))
    sizes = ag_node.get("sizes")
    if isinstance(sizes, (list, tuple)) and len(sizes) != len(in_features):
        raise ModelConfigError(
            f"model.rpn.anchor_generator.sizes has {len(sizes)} entries but model.rpn.in_features "
            f"names {len(in_features)} levels {in_features}: give one size list per level"
        )
    anchor_generator = instantiate(ag_node, _convert_="all")
    per_location = set(anchor_generator.num_anchors_per_location)
    if len(per_location) != 1:
        raise ModelConfigError(
            "model.rpn.anchor_generator makes a different number of anchors per location on different levels "
            f"{anchor_generator.num_anchors_per_location}; the shared model.rpn.head needs the same on every level"
        )
    head_node = _complete(
        _pop_node(node, "head", "model.rpn"), "model.rpn.head",
        in_channels=(levels.width(in_features, "model.rpn.in_features"), levels.width_key),
        num_anchors=(per_location.pop(), "model.rpn.anchor_generator (sizes x aspect_ratios per level)"),
    )
    head = instantiate(head_node, _convert_="all")
    return instantiate(node, head=head, anchor_generator=anchor_generator, _convert_="all")


def _build_roi_heads(node: Mapping, levels: _Levels, num_classes: int) -> nn.Module:
    from hydra.utils import instantiate

    node = dict(node)
    node.pop("_partial_", None)
    box_in = levels.check_names(node.get("box_in_features"),
                                "model.roi_heads.box_in_features")
    node["box_in_features"] = box_in
    box_pooler = _pooler(_pop_node(node, "box_pooler", "model.roi_heads"), "model.roi_heads.box_pooler", box_in,
                         "model.roi_heads.box_in_features", levels)
    box_width = levels.width(box_in, "model.roi_heads.box_in_features")
    box_head = instantiate(_complete(
        _pop_node(node, "box_head", "model.roi_heads"), "model.roi_heads.box_head",
        input_shape=([box_width, *box_pooler.output_size],
                     f"({levels.width_key}, model.roi_heads.box_pooler.output_size)"),
    ), _convert_="all")
    if not isinstance(getattr(box_head, "output_size", None), int):
        raise ModelConfigError(f"model.roi_heads.box_head ({type(box_head).__name__}) must report its output width "
                               "as an int `output_size` for the box predictor to be derived from it")
    box_predictor = instantiate(_complete(
        _pop_node(node, "box_predictor", "model.roi_heads"), "model.roi_heads.box_predictor",
        in_features=(box_head.output_size, "model.roi_heads.box_head's output width (fc_dims[-1])"),
        num_classes=(num_classes, "model.num_classes"),
    ), _convert_="all")
    parts = {"box_pooler": box_pooler, "box_head": box_head, "box_predictor": box_predictor}

    has_mask = node.get("mask_head") is not None or node.get("mask_pooler") is not None
    if has_mask:
        mask_key = "model.roi_heads.mask_in_features"
        mask_in = levels.check_names(_or(node.get("mask_in_features"), box_in), mask_key)
        node["mask_in_features"] = mask_in
        parts["mask_pooler"] = _pooler(_pop_node(node, "mask_pooler", "model.roi_heads"),
                                       "model.roi_heads.mask_pooler", mask_in, mask_key, levels)
        parts["mask_head"] = instantiate(_complete(
            _pop_node(node, "mask_head", "model.roi_heads"), "model.roi_heads.mask_head",
            in_channels=(levels.width(mask_in, mask_key), levels.width_key),
            num_classes=(num_classes, "model.num_classes"),
        ), _convert_="all")
    else:
        node.pop("mask_head", None)
        node.pop("mask_pooler", None)
    return instantiate(node, **parts, _convert_="all")


def _pooler(node: Mapping, key: str, names: list[str], names_key: str, levels: _Levels) -> nn.Module:
    from hydra.utils import instantiate

    strides = [levels.strides[n] for n in names]
    node = _complete(node, key, scales=([1.0 / s for s in strides], f"1 / the backbone strides {strides} of "
                                                                     f"{names_key} {names}"))
    try:
        return instantiate(node, _convert_="all")
    except Exception as exc:  # noqa: BLE001 - name the keys whatever the pooler rejected
        cause = exc.__cause__ or exc
        raise ModelConfigError(f"{key} over {names_key}={names} (strides {strides}): {cause}") from exc


def _pop_node(node: dict, name: str, parent: str) -> dict:
    child = node.pop(name, None)
    if not isinstance(child, Mapping) or "_target_" not in child:
        raise ModelConfigError(f"{parent}.{name} must be a _target_ node, got {child!r}")
    return dict(child)


def _complete(node: Mapping, key: str, **derived: tuple[Any, str]) -> dict:
    """``node`` with the ``derived`` arguments (name -> (value, where it comes from)) filled in and ``_partial_``
    dropped; a value the node already gives must equal the derived one."""
    node = dict(node)
    node.pop("_partial_", None)
    for name, (value, source) in derived.items():
        if name in node and not _same(node[name], value):
            raise ModelConfigError(
                f"{key}.{name}={node[name]!r} does not match {source} (gives {value!r}); leave {key}.{name} out of "
                "the config: it is derived"
            )
        node[name] = value
    return node


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def _or(value: Any, default: Any) -> Any:
    """``value``, or ``default`` when the config leaves it null (an empty list stays, and is rejected)."""
    return default if value is None else value


def _all_ints(values: Any) -> bool:
    return (isinstance(values, (list, tuple)) and len(values) > 0
            and all(isinstance(v, int) and not isinstance(v, bool) for v in values))


def _accepts(target, name: str) -> bool:
    import inspect

    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
