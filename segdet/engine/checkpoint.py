"""Checkpoint files: atomic writes, retention, discovery of the newest complete one, and strict loading.

Layout inside a run directory::

    run_dir/checkpoints/model_0000500.pt     one file per saved iteration (7 digits, so names sort by iteration)

The newest complete file is found by listing the directory (no pointer file to go stale).

A checkpoint is ``torch.save`` of a plain dict (tensors, numbers, strings, lists, dicts only, so that
``torch.load(weights_only=True)`` can read it)::

    {"model": state_dict, "model_config": dict | str | None, "iteration": int, "max_iter": int,
     "world_size": int, "optimizer": ..., "scheduler": ..., "grad_scaler": ..., "rng": [per-rank RNG states],
     "data": [per-rank sampler states], "label_to_category_id": {label: category_id}, "class_names": [...]}

Files written before the trainer stored ``max_iter`` lack it and load the same way.

Files are written to a temporary name in the same directory, fsync'ed and renamed with ``os.replace``, so a reader
(or a process killed at any moment) sees either the previous complete file or the new complete file.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_NAME_RE = re.compile(r"^model_(\d+)\.pt$")
_MAX_LISTED = 20


class CheckpointError(RuntimeError):
    """A checkpoint could not be read, or does not fit the model/optimizer it is loaded into."""


class CheckpointReadError(CheckpointError):
    """The file is not a readable segdet checkpoint (truncated, corrupt, unsafe pickle, wrong layout)."""


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def checkpoint_name(iteration: int) -> str:
    return f"model_{int(iteration):07d}.pt"


def _fsync_dir(path: Path) -> None:
    # The rename itself lives in the directory entry; without this a power loss can forget the new name.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write_fn) -> None:
    """Call ``write_fn(binary_file)`` on a temporary file next to ``path``, fsync it, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def save_checkpoint(
    run_dir: str | os.PathLike, state: Mapping, *, iteration: int, keep: int | None = None
) -> Path:
    """Write ``state`` as ``run_dir/checkpoints/model_<iteration>.pt`` and delete all but the newest ``keep``
    checkpoint files (``keep=None`` or ``<= 0`` keeps every one). Returns the written path.
    """
    if "model" not in state:
        raise ValueError("save_checkpoint: state must contain the key 'model' (the model's state_dict)")
    ckpt_dir = checkpoint_dir(run_dir)
    path = ckpt_dir / checkpoint_name(iteration)
    atomic_write(path, lambda f: torch.save(dict(state), f))
    if keep is not None and keep > 0:
        for old in list_checkpoints(run_dir)[keep:]:
            if old != path:
                old.unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint files of a run, newest iteration first (temporary files are never listed)."""
    ckpt_dir = checkpoint_dir(run_dir)
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.iterdir():
        m = _NAME_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found, reverse=True)]


def find_last_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """Path of the newest complete checkpoint of ``run_dir``, or None when it has none. Every ``model_*.pt`` is
    complete: they only appear through ``os.replace``."""
    candidates = list_checkpoints(run_dir)
    return candidates[0] if candidates else None


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """``torch.load(path, weights_only=True)`` with errors that name the file and say what was expected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001  (torch raises several types for corrupt or unsafe files)
        raise CheckpointReadError(
            f"cannot read checkpoint {path} with torch.load(weights_only=True): {exc}. A segdet checkpoint holds "
            "only tensors, numbers, strings, lists and dicts; the file may be truncated, corrupt or not a checkpoint."
        ) from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), Mapping):
        got = type(ckpt).__name__ if not isinstance(ckpt, dict) else f"dict with keys {sorted(map(str, ckpt))[:10]}"
        raise CheckpointReadError(
            f"checkpoint {path} must be a dict with a 'model' state_dict entry "
            f"({{'model': state_dict, 'model_config': ..., ...}}), got {got}"
        )
    return ckpt


def _flatten(cfg, prefix: str = "") -> dict:
    if isinstance(cfg, Mapping):
        out = {}
        for k, v in cfg.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: cfg}


def config_differences(saved, current) -> list[str]:
    """Human-readable differences between two model configs (plain dicts, or names given as strings)."""
    if saved is None or current is None:
        return []
    if isinstance(saved, str) or isinstance(current, str):
        # Converted checkpoints name their config instead of storing it; only two names can be compared.
        if isinstance(saved, str) and isinstance(current, str) and saved != current:
            return [f"model config: checkpoint {saved!r}, model {current!r}"]
        return []
    a, b = _flatten(saved), _flatten(current)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key not in b:
            diffs.append(f"{key}: only in checkpoint ({a[key]!r})")
        elif key not in a:
            diffs.append(f"{key}: only in model ({b[key]!r})")
        elif a[key] != b[key]:
            diffs.append(f"{key}: checkpoint {a[key]!r}, model {b[key]!r}")
    return diffs


def _summarise(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f", ... ({more} more)" if more > 0 else "")


def load_model_state(
    model: torch.nn.Module, state_dict: Mapping, *, strict: bool = True, source: str = "checkpoint",
    config_diffs: list[str] | None = None,
) -> None:
    """``model.load_state_dict`` that first lists every missing/unexpected key and shape mismatch in one error."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and hasattr(state_dict[k], "shape") and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if mismatched:
        problems.append(f"shape mismatch for {len(mismatched)} entries: {_summarise(mismatched)}")
    if strict and missing:
        problems.append(f"{len(missing)} keys missing from the checkpoint: {_summarise(missing)}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected keys in the checkpoint: {_summarise(unexpected)}")
    if problems:
        msg = f"{source} does not fit the model: " + "; ".join(problems)
        if config_diffs:
            msg += (
                ". The checkpoint was saved with another model config (differences: "
                + _summarise(config_diffs) + ")"
            )
        raise CheckpointError(msg)
    model.load_state_dict(dict(state_dict), strict=strict)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module inside DistributedDataParallel / DataParallel wrappers."""
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model


def load_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    *,
    grad_scaler=None,
    model_config: Mapping | str | None = None,
    strict: bool = True,
    map_location="cpu",
) -> dict:
    """Load a checkpoint into ``model`` (and, when given, ``optimizer``, ``scheduler``, ``grad_scaler``).

    ``model_config`` is the plain-dict config the model was built from; when the checkpoint stores a different one the
    differences are named (in the error when the weights do not fit, as a warning otherwise - test-time options such
    as score thresholds may legitimately differ). Returns the whole checkpoint dict so the caller can read
    ``iteration``, ``rng``, ``data``, ``label_to_category_id``...
    """
    ckpt = read_checkpoint(path, map_location=map_location)
    diffs = config_differences(ckpt.get("model_config"), model_config)
    load_model_state(unwrap_model(model), ckpt["model"], strict=strict, source=f"checkpoint {path}", config_diffs=diffs)
    if diffs:
        logger.warning("Checkpoint %s was saved with a different model config: %s", path, _summarise(diffs))
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("grad_scaler", grad_scaler)):
        if obj is None:
            continue
        if name not in ckpt:
            raise CheckpointError(f"checkpoint {path} has no '{name}' state to resume from (it holds weights only?)")
        try:
            obj.load_state_dict(ckpt[name])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{name} state in checkpoint {path} does not fit: {exc}") from exc
    return ckpt


def resolve_checkpoint(checkpoint: str | os.PathLike, *, argument: str = "checkpoint") -> Path:
    """The checkpoint file a ``checkpoint=`` argument names: a file as given, a run directory's newest complete
    checkpoint (``run_dir/checkpoints/model_*.pt``). Errors name the argument and what was looked at."""
    path = Path(checkpoint)
    if path.is_dir():
        found = find_last_checkpoint(path)
        if found is None:
            raise FileNotFoundError(
                f"{argument}={path} is a directory without checkpoints (looked in {checkpoint_dir(path)})"
            )
        return found
    if not path.is_file():
        raise FileNotFoundError(f"{argument}={path}: checkpoint file not found (expected a .pt file or a run "
                                "directory)")
    return path


def model_config_to_build(ckpt: Mapping, cfg_model, path: str | os.PathLike, *,
                          num_classes: int | None = None) -> tuple[dict, bool]:
    """(plain-dict, resolved model config, chosen explicitly): ``cfg_model`` when it names a model (has
    ``_target_``), with ``num_classes`` set before resolving when given (the heads reach it by interpolation), else
    the config stored in checkpoint ``ckpt`` (read from ``path``). A converted checkpoint that only names its config
    needs ``model=NAME``; the error says so."""
    if cfg_model is not None and "_target_" in cfg_model:
        import copy

        from omegaconf import DictConfig, OmegaConf, open_dict

        # A copy keeps the node's place in its config, so interpolations into the rest of it (eval's
        # ${data.num_classes}) still resolve, and the caller's config is left as it was.
        node = copy.deepcopy(cfg_model) if isinstance(cfg_model, DictConfig) else OmegaConf.create(dict(cfg_model))
        if num_classes is not None:
            with open_dict(node):
                node.num_classes = int(num_classes)
        return OmegaConf.to_container(node, resolve=True), True
    saved = ckpt.get("model_config")
    if isinstance(saved, Mapping):
        return dict(saved), False
    raise ValueError(f"checkpoint {path} stores no model config dict ({saved!r}); choose one with model=NAME")
