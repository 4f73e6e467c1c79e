"""Build a detector from a Hydra model config (a ``_target_`` tree)."""
from __future__ import annotations

from collections.abc import Mapping

from torch import nn


def build_model(cfg_model, num_classes: int | None = None) -> nn.Module:
    """Instantiate the model node of ``conf/model/<name>.yaml``.

    Args:
        cfg_model: the model node (DictConfig or plain dict, e.g. a checkpoint's "model_config"):
            a ``_target_`` tree with a top-level ``num_classes`` that the heads reach by interpolation.
        num_classes: if given, overrides the config's ``num_classes`` (foreground classes K).
    Returns:
        the built ``nn.Module`` (e.g. ``MaskRCNN``).
    """
    from hydra.utils import instantiate
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg_model, DictConfig):
        cfg = OmegaConf.create(OmegaConf.to_container(cfg_model, resolve=False))
    elif isinstance(cfg_model, Mapping):
        cfg = OmegaConf.create(dict(cfg_model))
    else:
        raise TypeError(f"cfg_model must be a DictConfig or a dict (a model config node), got {type(cfg_model).__name__}")
    if "_target_" not in cfg:
        raise ValueError(f"cfg_model has no _target_: pass the model node (conf/model/<name>.yaml), got keys {list(cfg)}")
    if "num_classes" not in cfg:
        raise ValueError("cfg_model has no top-level num_classes (the number of foreground classes)")
    if num_classes is not None:
        cfg.num_classes = int(num_classes)
    # The heads read num_classes through interpolations, so resolve while it is still in the tree;
    # the top-level key is then handed to the _target_ only if it accepts it.
    container = OmegaConf.to_container(cfg, resolve=True)
    if not _accepts(container["_target_"], "num_classes"):
        container.pop("num_classes")
    return instantiate(container, _convert_="all")


def _accepts(target: str, name: str) -> bool:
    import inspect

    from hydra.utils import get_object

    obj = get_object(target)
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
