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
    hard_budget_s: float | None = None,
) -> dict[str, list[float]]:
    """Per-call times in ms of each candidate, measured round-robin.

    Every round calls each candidate once, in turn. Rounds go on until max_reps, or until budget_s
    seconds have passed and at least min_reps rounds are done, or until hard_budget_s seconds
    have passed and at least one round is done (for calls that take many seconds each). All
    candidates get the same number of repetitions.
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
        elapsed = time.perf_counter() - start
        over_hard = hard_budget_s is not None and elapsed > hard_budget_s
        if (rep >= min_reps and elapsed > budget_s) or (rep >= 1 and over_hard):
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


# ---- whole-model benchmarks (scripts/bench_model.py) -------------------------------------------


def synthetic_scene(
    height: int, width: int, *, generator: torch.Generator, num_objects: int = 12, num_classes: int = 90
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A shapes-style scene and its instance annotations.

    Ellipses, rectangles and triangles (sides 4 % .. 35 % of the image, striped, random colours)
    over a noisy colour gradient; later shapes occlude earlier ones and fully hidden shapes are
    dropped.

    Returns:
        (uint8 Tensor[3, height, width] RGB, {"boxes": float Tensor[M, 4] (x1, y1, x2, y2)
        absolute pixels, tight around each visible mask, "labels": int64 Tensor[M] in
        1..num_classes, "masks": uint8 Tensor[M, height, width]}).
    """
    if height < 8 or width < 8:
        raise ValueError(f"synthetic_scene: height and width must be >= 8 pixels, got ({height}, {width})")
    g = generator
    yy = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    xx = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
    ramp = (xx / width + yy / height) / 2
    start, end = torch.rand(3, 1, 1, generator=g), torch.rand(3, 1, 1, generator=g)
    image = start * (1 - ramp) + end * ramp + 0.04 * torch.randn(3, height, width, generator=g)
    masks = []
    for _ in range(num_objects):
        cx, cy = (torch.rand(2, generator=g) * torch.tensor([width, height])).tolist()
        rx, ry = ((0.02 + 0.155 * torch.rand(2, generator=g)) * torch.tensor([width, height])).tolist()
        kind = int(torch.randint(3, (1,), generator=g))
        if kind == 0:
            mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        elif kind == 1:
            mask = ((xx - cx).abs() <= rx) & ((yy - cy).abs() <= ry)
        else:
            depth = (yy - (cy - ry)) / (2 * ry)
            mask = (depth >= 0) & (depth <= 1) & ((xx - cx).abs() <= rx * depth)
        colour = torch.rand(3, 1, 1, generator=g)
        period = float(4 + 12 * torch.rand(1, generator=g))
        stripes = 0.85 + 0.15 * torch.sin((xx + yy) * (6.2832 / period))
        image = torch.where(mask, colour * stripes, image)
        masks = [m & ~mask for m in masks] + [mask]
    masks = [m for m in masks if m.any()]
    boxes = []
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        boxes.append([float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1])
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.randint(1, num_classes + 1, (len(masks),), generator=g),
        "masks": torch.stack(masks).to(torch.uint8) if masks else torch.zeros(0, height, width, dtype=torch.uint8),
    }
    return (image.clamp(0, 1) * 255).round().to(torch.uint8), target


def make_maskrcnn_weights_detect(state_dict: dict[str, torch.Tensor], *, generator: torch.Generator) -> None:
    """Perturb a randomly initialised torchvision-layout Mask R-CNN state dict in place so that it
    makes confident, varied detections (and thus exercises the mask branch and pasting).

    Frozen-BN statistics and affine terms get non-trivial values, the RPN becomes confident, the
    box head's features RoI-dependent, the classifier spread over classes and the mask logits
    biased per class. Keys are torchvision's ``maskrcnn_resnet50_fpn`` names.
    """
    g = generator
    for key, value in state_dict.items():
        in_trunk_norm = key.startswith("backbone.body") and (".bn" in key or "downsample.1" in key)
        if key.endswith("running_mean"):
            value.copy_(torch.randn(value.shape, generator=g) * 0.1)
        elif key.endswith("running_var"):
            value.copy_(torch.rand(value.shape, generator=g) * 0.5 + 0.75)
        elif in_trunk_norm and key.endswith("weight"):
            value.copy_(torch.rand(value.shape, generator=g) * 0.5 + 0.5)
        elif in_trunk_norm and key.endswith("bias"):
            value.copy_(torch.randn(value.shape, generator=g) * 0.1)
    updates = {
        "rpn.head.cls_logits.weight": lambda v: v.normal_(0, 0.5, generator=g),
        "rpn.head.cls_logits.bias": lambda v: v.fill_(-2.0),
        "roi_heads.box_head.fc7.weight": lambda v: v.normal_(0, 0.02, generator=g),
        "roi_heads.box_predictor.cls_score.weight": lambda v: v.normal_(0, 0.3, generator=g),
        "roi_heads.box_predictor.cls_score.bias": lambda v: v.zero_().index_fill_(0, torch.tensor([0]), -1.0),
        "roi_heads.box_predictor.bbox_pred.weight": lambda v: v.normal_(0, 0.002, generator=g),
        "roi_heads.mask_predictor.mask_fcn_logits.bias": lambda v: v.normal_(0, 1.0, generator=g),
    }
    for key, update in updates.items():
        if key not in state_dict:
            raise KeyError(f"make_maskrcnn_weights_detect: state_dict has no {key!r} (not a torchvision Mask R-CNN?)")
        update(state_dict[key])


def _autocast(model: torch.nn.Module, amp: torch.dtype | None):
    from segdet.utils.amp import autocast

    return autocast(next(model.parameters()).device, amp)


def inference_call(model: torch.nn.Module, images: list[torch.Tensor], *, amp: torch.dtype | None = None
                   ) -> Callable[[], object]:
    """A no-argument function running ``model(images)`` in eval mode under ``torch.no_grad``
    (and under ``torch.autocast`` with dtype ``amp`` when given)."""

    def run():
        with torch.no_grad(), _autocast(model, amp):
            return model(images)

    model.eval()
    return run


def training_step_call(
    model: torch.nn.Module, images: list[torch.Tensor], targets: list[dict], *, lr: float = 1e-3,
    amp: torch.dtype | None = None,
) -> Callable[[], object]:
    """A no-argument function doing one SGD step (momentum 0.9, weight decay 1e-4) of ``model``
    in train mode: forward with targets (under ``torch.autocast`` with dtype ``amp`` when given),
    sum of the loss dict, backward, step. No gradient scaling: a timing harness, not a trainer."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    model.train()

    def step():
        with _autocast(model, amp):
            losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def compare_models(
    candidates: Mapping[str, Callable[[], object]], *, baseline: str, device: str = "cpu", warmup: int = 1,
    reps: int = 5
) -> dict:
    """Time ``candidates`` interleaved (``reps`` rounds after ``warmup`` calls each) and summarise.

    Returns:
        {name: summarize(times) for each candidate, "speedup": {name: baseline median / name
        median for each other candidate}}.
    """
    if baseline not in candidates:
        raise ValueError(f"compare_models: baseline {baseline!r} is not one of {list(candidates)}")
    times = time_interleaved(candidates, device=device, warmup=warmup, min_reps=reps, max_reps=reps, budget_s=0.0)
    out: dict = {name: summarize(t) for name, t in times.items()}
    base = out[baseline]["median_ms"]
    out["speedup"] = {name: base / out[name]["median_ms"] for name in candidates if name != baseline}
    return out
