"""Config checks run by the entry points before any work: every key must be one the code reads.

Hydra already rejects an override of a key that does not exist (``train.max_itr=5``), but not a key added with
``+``, one set by an experiment file, or a misspelt argument of a ``_target_`` node. ``check_config`` walks the
composed config once:

- a node with a ``_target_`` may only hold that callable's keyword arguments (plus Hydra's ``_partial_``,
  ``_recursive_``, ``_convert_``, ``_args_``); nested ``_target_`` nodes are checked the same way;
- every other section (``train``, ``eval``, the top level...) may only hold the keys its primary config file
  (``conf/<name>.yaml``) declares, so adding a key to that file is all it takes to make it known.

Values are not type-checked here; the code that consumes them names a bad value.
"""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["CONF_DIR", "ConfigKeyError", "check_config", "check_node", "compose_model_config", "resolve_num_classes"]

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})


class ConfigKeyError(ValueError):
    """A config key that nothing reads (a typo, or a key of another version of the config)."""


def check_config(cfg: Any, config_name: str, conf_dir: str | Path = CONF_DIR) -> None:
    """Raise ``ConfigKeyError`` naming the first unknown key of the composed config ``cfg``.

    Args:
        cfg: the composed config (DictConfig or dict) of the primary config ``config_name``.
        config_name: "train", "eval" or "predict": the primary file ``<conf_dir>/<config_name>.yaml`` whose keys
            (outside its ``defaults`` list) declare what the plain sections may hold.
    """
    from omegaconf import DictConfig, OmegaConf

    primary_path = Path(conf_dir) / f"{config_name}.yaml"
    if not primary_path.is_file():
        raise FileNotFoundError(f"primary config {primary_path} does not exist")
    primary = OmegaConf.to_container(OmegaConf.load(primary_path), resolve=False)
    groups = _group_names(primary.pop("defaults", []))
    primary.pop("hydra", None)
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=False)
    for key, value in cfg.items():
        if key == "hydra":
            continue
        if key in groups or (isinstance(value, Mapping) and "_target_" in value):
            if isinstance(value, Mapping) and "_target_" in value:
                check_node(value, key)
            elif isinstance(value, Mapping):
                _check_plain(value, primary.get(key) or {}, key)
            continue
        if key not in primary:
            _unknown(key, "", primary)
        if isinstance(primary[key], Mapping) and isinstance(value, Mapping):
            _check_plain(value, primary[key], key)


def check_node(node: Mapping, path: str) -> None:
    """Check a ``_target_`` node (and the ``_target_`` nodes inside it) against its callable's signature.

    ``path`` is the node's dotted key for the message (e.g. "model.rpn").
    """
    from hydra.utils import get_object

    target = node["_target_"]
    try:
        obj = get_object(target)
    except Exception as exc:  # noqa: BLE001 - any import failure gets the key that names it
        raise ConfigKeyError(f"{path}._target_={target!r} cannot be imported: {exc}") from exc
    params = _parameters(obj)
    for key, value in node.items():
        if key in HYDRA_KEYS:
            continue
        if params is not None and key not in params:
            raise ConfigKeyError(
                f"unknown config key '{path}.{key}': {target} takes {', '.join(sorted(params)) or 'no arguments'}"
                + _suggestion(key, params)
            )
        _check_children(value, f"{path}.{key}")


def _check_children(value: Any, path: str) -> None:
    if isinstance(value, Mapping):
        if "_target_" in value:
            check_node(value, path)
        else:
            for k, v in value.items():
                _check_children(v, f"{path}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_children(v, f"{path}[{i}]")


def _check_plain(section: Mapping, declared: Mapping, path: str) -> None:
    for key, value in section.items():
        if key not in declared:
            _unknown(key, path, declared)
        if isinstance(value, Mapping) and "_target_" in value:
            check_node(value, f"{path}.{key}")
        elif isinstance(value, Mapping) and isinstance(declared[key], Mapping):
            _check_plain(value, declared[key], f"{path}.{key}")


def _unknown(key: str, path: str, declared: Mapping) -> None:
    where = f"{path}.{key}" if path else key
    section = f"the {path} section" if path else "the top level"
    raise ConfigKeyError(
        f"unknown config key {where!r}: {section} has {', '.join(sorted(map(str, declared)))}"
        + _suggestion(key, declared)
    )


def _suggestion(key: str, known) -> str:
    close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _parameters(obj) -> set[str] | None:
    """Keyword names ``obj`` accepts; None when it takes ``**kwargs`` (anything goes)."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    names = set()
    for p in signature.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            names.add(p.name)
    return names


def _group_names(defaults: list) -> set[str]:
    """Config groups named by a primary config's defaults list ("model" of ``- model: maskrcnn_small``)."""
    names = set()
    for entry in defaults:
        if isinstance(entry, Mapping):
            for key in entry:
                key = str(key)
                if not key.startswith("override ") and "/" not in key:
                    names.add(key.split("@")[0])
    return names


def resolve_num_classes(given: int | None, dataset, key: str = "model.num_classes") -> int:
    """The model's foreground class count: ``dataset.num_classes`` (its annotation file's categories) when the
    config leaves ``key`` null, else ``given`` after checking it agrees (ValueError with both numbers)."""
    found = int(dataset.num_classes)
    if given is None:
        return found
    if int(given) != found:
        raise ValueError(f"{key}={given} but {getattr(dataset, 'ann_file', 'the dataset')} has {found} categories")
    return int(given)


def compose_model_config(name: str, overrides: list[str] | tuple[str, ...] = (), conf_dir: str | Path = CONF_DIR) -> dict:
    """``conf/model/<name>.yaml`` composed with the configs its ``defaults`` list starts from, as a plain dict
    (interpolations kept). For code outside a Hydra application (converters, benchmarks, tests)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    path = Path(conf_dir) / "model" / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"model config {path} not found (segdet must run from its checkout)")
    with initialize_config_dir(config_dir=str(Path(conf_dir) / "model"), version_base=None):
        cfg = compose(config_name=name, overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=False)
