"""Timing helpers for side-by-side operator microbenchmarks (scripts/bench_ops.py).

Candidates are timed in one process and interleaved (a, b, a, b, ...) after a warm-up, so that
frequency scaling and other load on a shared machine hit all of them alike.
"""
import statistics
import time
from collections.abc import Callable, Mapping

import torch


def proposal_boxes(n: int, height: int, width: int, *, generator: torch.Generator, min_size: float = 4.0,
                   max_size: float = 400.0) -> torch.Tensor:
    """Float32 Tensor[n, 4] of RPN-proposal-like boxes (x1, y1, x2, y2), absolute pixels.

    Centres are uniform in the height x width image; sides are log-uniform in [min_size, max_size]
    pixels and independent, and boxes are clipped to the image (as proposals are).
    """
    ctr = torch.rand(n, 2, generator=generator) * torch.tensor([float(width), float(height)])
    log_lo, log_hi = torch.log(torch.tensor(min_size)), torch.log(torch.tensor(max_size))
    size = torch.exp(log_lo + torch.rand(n, 2, generator=generator) * (log_hi - log_lo))
    boxes = torch.cat([ctr - size / 2, ctr + size / 2], dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return boxes


class _Timer:
    """Times one call of a function, in milliseconds, on CPU or on the current CUDA stream."""

    def __init__(self, device: str):
        self.cuda = torch.device(device).type == "cuda"

    def __call__(self, fn: Callable[[], object]) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3


def time_interleaved(
    candidates: Mapping[str, Callable[[], object]],
    *,
    device: str = "cpu",
    warmup: int = 2,
    min_reps: int = 3,
    max_reps: int = 50,
    budget_s: float = 5.0,
) -> dict[str, list[float]]:
    """Per-call times in ms of each candidate, measured round-robin.

    Every round calls each candidate once, in turn. Rounds go on until max_reps, or until budget_s
    seconds have passed and at least min_reps rounds are done: a slow candidate gets fewer
    rounds, never fewer than min_reps. All candidates get the same number of repetitions.
    """
    if not candidates:
        raise ValueError("time_interleaved: candidates must name at least one function")
    if not 1 <= min_reps <= max_reps:
        raise ValueError(f"time_interleaved: need 1 <= min_reps <= max_reps, got {min_reps} and {max_reps}")
    timer = _Timer(device)
    for fn in candidates.values():
        for _ in range(warmup):
            timer(fn)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    start = time.perf_counter()
    for rep in range(max_reps):
        if rep >= min_reps and time.perf_counter() - start > budget_s:
            break
        for name, fn in candidates.items():
            times[name].append(timer(fn))
    return times


def summarize(times_ms: list[float]) -> dict[str, float]:
    """Median, quartiles, min and max (ms) and the repetition count of a list of times."""
    if not times_ms:
        raise ValueError("summarize: times_ms is empty")
    ordered = sorted(times_ms)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {
        "median_ms": statistics.median(ordered),
        "q1_ms": q1,
        "q3_ms": q3,
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
        "reps": len(ordered),
    }


def format_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """Plain-text table: columns are (key, header) pairs; floats are printed with 3 significant decimals."""

    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
        return str(value)

    body = [[cell(row.get(key)) for key, _ in columns] for row in rows]
    headers = [header for _, header in columns]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body]
    return "\n".join(lines)
