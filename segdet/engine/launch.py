"""Launch-time helpers for the Hydra entry points under torchrun: one run directory for all ranks, quiet
non-main ranks.

Every torchrun worker runs Hydra on its own, so a run directory containing ``${now:...}`` may resolve differently
on two ranks that started on either side of a second boundary. Non-main ranks therefore write nothing into their
Hydra directory (:func:`nonmain_rank_overrides`) and adopt rank 0's directory after the process group is up
(:func:`agree_on_run_dir`), removing their own if it is a different, empty directory.
"""
from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from . import distributed as du

logger = logging.getLogger(__name__)


def nonmain_rank_overrides(argv: list[str]) -> list[str]:
    """Hydra overrides appended to ``argv`` of torchrun ranks > 0: no .hydra/ config copy, log to stdout only."""
    if du.env_rank() == 0:
        return []
    extra = []
    if not any(a.startswith("hydra.output_subdir=") for a in argv):
        extra.append("hydra.output_subdir=null")
    if not any(a.startswith(("hydra/job_logging=", "override hydra/job_logging=")) for a in argv):
        extra.append("hydra/job_logging=stdout")
    return extra


def _remove_empty_dirs(path: Path, stop: Path) -> None:
    path, stop = path.resolve(), stop.resolve()
    while path != stop and stop in path.parents:
        try:
            path.rmdir()  # only ever removes an empty directory
        except OSError:
            return
        path = path.parent


def agree_on_run_dir(run_dir: str | os.PathLike) -> Path:
    """Rank 0's run directory, on every rank (collective). A non-main rank whose Hydra directory differs removes it
    when it is empty (it is: :func:`nonmain_rank_overrides` keeps Hydra from writing there)."""
    mine = Path(run_dir).resolve()
    chosen = Path(du.broadcast_object(str(mine)))
    if chosen != mine and not du.is_main_process():
        logger.warning("Rank %d resolved run dir %s; using rank 0's %s", du.get_rank(), mine, chosen)
        _remove_empty_dirs(mine, Path.cwd())
    return chosen


def configure_rank_logging(rank: int) -> None:
    """Non-main ranks log warnings and errors only, so the console shows one copy of the progress lines."""
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("segdet").setLevel(logging.WARNING)


# build_trainer arguments that are built objects or decided by the script, never plain config values.
_BUILT_TRAINER_ARGS = {"model", "optimizer", "schedule", "data_loader", "run_dir", "device", "dist", "sampler",
                       "evaluate_fn", "checkpoint_extra", "hooks"}


def split_train_options(train: Mapping) -> tuple[int, dict]:
    """(global batch size, build_trainer keyword arguments) from the plain ``train`` config block. Unknown keys
    fail here, before any data or model is built: a typo in an experiment file is otherwise merged in silently."""
    from .defaults import build_trainer

    options = dict(train)
    if "batch_size" not in options:
        raise ValueError("the train config needs batch_size (the global batch size)")
    batch_size = int(options.pop("batch_size"))
    allowed = set(inspect.signature(build_trainer).parameters) - _BUILT_TRAINER_ARGS
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"unknown key(s) in the train config: {unknown}; known: {sorted(allowed | {'batch_size'})}")
    return batch_size, options
