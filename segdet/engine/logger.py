"""Training metrics: a JSON-lines log, TensorBoard scalars, and progress on the console.

Only the main process writes (the trainer passes ``enabled=False`` elsewhere). On a terminal a tqdm bar shows the
progress and ETA; when stderr is a file or pipe (batch jobs, CI) a plain line is logged every ``log_period``
iterations instead, because redrawn bars make unreadable log files.
"""
from __future__ import annotations

import datetime
import json
import logging
import math
import os
import resource
import sys
import time
from collections import deque
from pathlib import Path

import torch

logger = logging.getLogger("segdet.train")

METRICS_FILE = "metrics.jsonl"


def max_memory_mb(device: torch.device) -> float:
    """Peak memory of this process in MiB: allocated CUDA memory on a GPU, maximum resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def _truncate_jsonl(path: Path, last_iteration: int) -> None:
    """Drop records past ``last_iteration``: a run killed after its last checkpoint logged iterations that the
    resumed run will log again."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if rec.get("iteration", 0) <= last_iteration:
            kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(k + "\n" for k in kept))
    os.replace(tmp, path)


class MetricsLogger:
    """Writes per-iteration scalars of the main process.

    Args:
        run_dir: where ``metrics.jsonl`` and the TensorBoard event files (``tb/``) go.
        max_iter: total iterations (for the progress bar and ETA).
        start_iter: first iteration of this process (after resuming); later records are purged.
        log_period: iterations between console lines / JSON records.
        enabled: False on non-main ranks (nothing is written).
        tensorboard: write TensorBoard events.
        progress_bar: None = tqdm bar when stderr is a terminal, else plain lines.
    """

    def __init__(
        self, *, run_dir: str | os.PathLike, max_iter: int, start_iter: int = 0, log_period: int = 20,
        enabled: bool = True, tensorboard: bool = True, progress_bar: bool | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.max_iter = max_iter
        self.start_iter = start_iter
        self.log_period = max(1, int(log_period))
        self.enabled = enabled
        self._times: deque[float] = deque(maxlen=50)
        self._sums: dict[str, float] = {}
        self._count = 0
        self._writer = None
        self._bar = None
        self._jsonl = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / METRICS_FILE
        _truncate_jsonl(path, start_iter)
        self._jsonl = open(path, "a", buffering=1)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides events a killed run wrote past the checkpoint we resume from.
            self._writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=start_iter if start_iter else None)
        if progress_bar is None:
            progress_bar = sys.stderr.isatty()
        if progress_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=max_iter, initial=start_iter, desc="train", dynamic_ncols=True, file=sys.stderr)

    def eta_seconds(self, iteration: int) -> float | None:
        if not self._times:
            return None
        return sum(self._times) / len(self._times) * max(0, self.max_iter - iteration)

    def log_iteration(self, iteration: int, scalars: dict[str, float]) -> None:
        """Record ``scalars`` (losses, lr, time, data_time, ...) of the completed iteration ``iteration`` (1-based:
        the number of optimizer steps taken so far). Every ``log_period`` iterations one record is written with
        the mean of each value over those iterations (single-iteration losses are too noisy to read), except lr
        and memory, which are the current values. Timing is smoothed over recent iterations for the ETA."""
        if "time" in scalars:
            self._times.append(float(scalars["time"]))
        if not self.enabled:
            return
        for k, v in scalars.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v)
        self._count += 1
        if self._bar is not None:
            self._bar.update(iteration - self._bar.n)
            if "loss" in scalars:
                self._bar.set_postfix(loss=f"{scalars['loss']:.3f}", lr=f"{scalars.get('lr', 0):.2g}", refresh=False)
        if iteration % self.log_period and iteration != self.max_iter:
            return
        scalars = {k: (float(scalars[k]) if k in ("lr", "memory_mb") else total / self._count)
                   for k, total in self._sums.items() if k in scalars}
        self._sums.clear()
        self._count = 0
        record = {"iteration": iteration, **scalars}
        self._jsonl.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for k, v in scalars.items():
                self._writer.add_scalar(f"train/{k}", v, iteration)
        if self._bar is None:
            eta = self.eta_seconds(iteration)
            eta_s = str(datetime.timedelta(seconds=round(eta))) if eta is not None else "?"
            losses = "  ".join(f"{k} {v:.4f}" for k, v in scalars.items() if k.startswith("loss_"))
            logger.info(
                "iter %d/%d  %s  total %.4f  lr %.3g  time %.3fs  data %.3fs  mem %.0fMB  eta %s",
                iteration, self.max_iter, losses, scalars.get("loss", math.nan), scalars.get("lr", math.nan),
                scalars.get("time", math.nan), scalars.get("data_time", math.nan), scalars.get("memory_mb", math.nan),
                eta_s,
            )

    def log_metrics(self, iteration: int, metrics: dict[str, float], prefix: str = "val") -> None:
        """Evaluation results: one JSON record and TensorBoard scalars ``<prefix>/<name>``."""
        if not self.enabled:
            return
        self._jsonl.write(json.dumps({"iteration": iteration, **{f"{prefix}/{k}": v for k, v in metrics.items()}})
                          + "\n")
        if self._writer is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._writer.add_scalar(f"{prefix}/{k}", v, iteration)
            self._writer.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None


def format_seconds(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class Timer:
    """Wall-clock seconds since construction."""

    def __init__(self):
        self._t0 = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self._t0
