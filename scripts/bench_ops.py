"""Microbenchmarks of segdet's ops against torchvision's on Mask R-CNN-sized workloads.

Both libraries run in this one process on identical inputs, interleaved call by call after a
warm-up; the table gives the median time, the interquartile range and the speedup
(torchvision median / segdet median). Without torchvision only segdet is timed.

    python scripts/bench_ops.py                      # CPU, every op, a few minutes on 2 cores
    python scripts/bench_ops.py --quick --ops nms    # short run of the nms cases
    python scripts/bench_ops.py --device cuda --json bench_cuda.json
"""
import argparse
import json
import math
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

import segdet.ops
from segdet.utils.benchmark import format_table, proposal_boxes, summarize, time_interleaved

try:
    import torchvision
    import torchvision.ops as tv_ops
    from torchvision.models.detection._utils import BoxCoder
except ImportError:
    torchvision = None

IMAGE_H, IMAGE_W = 800, 1216  # a COCO image resized to the 800 px short side, padded to /32


@dataclass
class Case:
    name: str
    op: str
    workload: str
    segdet: Callable[[], object]
    torchvision: Callable[[], object] | None
    outputs_match: Callable[[object, object], bool]
    heavy: bool = False  # ~1 s per call on CPU: fewer warm-up calls


def _scaled(n: int, scale: float) -> int:
    return max(1, round(n * scale))


def _rois(num: int, batch: int, g: torch.Generator, device: str) -> torch.Tensor:
    """Tensor[num, 5] (batch index, x1, y1, x2, y2) of proposals spread over the batch."""
    boxes = proposal_boxes(num, IMAGE_H, IMAGE_W, generator=g)
    index = torch.arange(num, dtype=torch.float32)[:, None] % batch
    return torch.cat([index, boxes], dim=1).to(device)


def _close(a, b) -> bool:
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-4))


def _equal(a, b) -> bool:
    return bool(torch.equal(a, b))


def roi_align_cases(device: str, scale: float, g: torch.Generator) -> list[Case]:
    channels = _scaled(256, scale)
    # P2 of a 2-image batch at stride 4.
    features = torch.randn(2, channels, IMAGE_H // 4, IMAGE_W // 4, generator=g).to(device)
    cases = []
    for head, num, size in (("box head", 1024, 7), ("mask head", 256, 14)):
        rois = _rois(_scaled(num, scale), 2, g, device)
        args = ((size, size), 0.25, 2, True)
        workload = f"{head}: {rois.shape[0]} RoIs x {channels} ch -> {size}x{size}, map 2x{channels}x200x304, sampling 2, aligned"

        def forward(fn, rois=rois, args=args):
            return lambda: fn(features, rois, *args)

        grad_out = torch.randn(rois.shape[0], channels, size, size, generator=g).to(device)
        leaf = features.clone().requires_grad_(True)

        def forward_backward(fn, rois=rois, args=args, grad_out=grad_out):
            return lambda: torch.autograd.grad(fn(leaf, rois, *args), leaf, grad_out)[0]

        tv = tv_ops.roi_align if torchvision is not None else None
        cases.append(Case(f"roi_align fwd ({head})", "roi_align", workload, forward(segdet.ops.roi_align),
                          forward(tv) if tv else None, _close, heavy=True))
        cases.append(Case(f"roi_align fwd+bwd ({head})", "roi_align", workload,
                          forward_backward(segdet.ops.roi_align), forward_backward(tv) if tv else None, _close,
                          heavy=True))
    return cases


def nms_cases(device: str, scale: float, g: torch.Generator) -> list[Case]:
    cases = []
    for n in (1000, 5000, 20000, 100000):
        n = _scaled(n, scale)
        boxes = proposal_boxes(n, IMAGE_H, IMAGE_W, generator=g).to(device)
        scores = torch.rand(n, generator=g).to(device)
        cases.append(Case(
            f"nms {n}", "nms", f"{n} proposal boxes, IoU 0.7",
            lambda b=boxes, s=scores: segdet.ops.nms(b, s, 0.7),
            (lambda b=boxes, s=scores: tv_ops.nms(b, s, 0.7)) if torchvision else None, _equal,
        ))
    for n in (20000, 100000):
        n = _scaled(n, scale)
        boxes = proposal_boxes(n, IMAGE_H, IMAGE_W, generator=g).to(device)
        scores = torch.rand(n, generator=g).to(device)
        idxs = torch.randint(0, 80, (n,), generator=g).to(device)
        cases.append(Case(
            f"batched_nms {n}", "batched_nms", f"{n} boxes over 80 classes, IoU 0.5",
            lambda b=boxes, s=scores, i=idxs: segdet.ops.batched_nms(b, s, i, 0.5),
            (lambda b=boxes, s=scores, i=idxs: tv_ops.batched_nms(b, s, i, 0.5)) if torchvision else None, _equal,
        ))
    return cases


def decode_boxes_cases(device: str, scale: float, g: torch.Generator) -> list[Case]:
    clip = math.log(1000.0 / 16)
    cases = []
    # RPN: 240k anchors of a 5-level FPN on an 800x1216 image, class-agnostic deltas.
    n = _scaled(240000, scale)
    anchors = proposal_boxes(n, IMAGE_H, IMAGE_W, generator=g).to(device)
    deltas = (torch.randn(n, 4, generator=g) * 0.5).to(device)
    tv_coder = BoxCoder((1.0, 1.0, 1.0, 1.0), clip) if torchvision else None
    cases.append(Case(
        f"decode_boxes {n} anchors", "decode_boxes", f"RPN: {n} anchors x 1 class, weights 1, no clip",
        lambda: segdet.ops.decode_boxes(deltas, anchors),
        (lambda: tv_coder.decode_single(deltas, anchors)) if tv_coder else None, _close,
    ))
    # Box head: 1000 proposals x 91 COCO classes, weights (10, 10, 5, 5), clipped to the image.
    n = _scaled(1000, scale)
    proposals = proposal_boxes(n, IMAGE_H, IMAGE_W, generator=g).to(device)
    class_deltas = torch.randn(n, 4 * 91, generator=g).to(device)
    head_coder = BoxCoder((10.0, 10.0, 5.0, 5.0), clip) if torchvision else None

    def tv_head():
        out = head_coder.decode_single(class_deltas, proposals)
        return tv_ops.clip_boxes_to_image(out.reshape(n, -1, 4), (IMAGE_H, IMAGE_W)).reshape(n, -1)

    cases.append(Case(
        f"decode_boxes {n}x91 +clip", "decode_boxes", f"box head: {n} proposals x 91 classes, weights (10,10,5,5), clip",
        lambda: segdet.ops.decode_boxes(class_deltas, proposals, (10.0, 10.0, 5.0, 5.0), clip, (IMAGE_H, IMAGE_W)),
        tv_head if head_coder else None, _close,
    ))
    return cases


def grid_sample_paste(masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int, threshold: float,
                      full: bool = True):
    """Pixel-centre pasting the way detectron2 does it on the CPU: per detection, F.grid_sample (align_corners=False,
    zero padding) over the pixel centres of its box grown by one pixel. The same semantics as
    segdet.ops.paste_masks_aligned; the baseline for it, as torchvision has no such pasting. full: the bool
    [D, height, width] masks; else the flat crops, as paste_masks_aligned_crops returns them (its regions differ)."""
    out = torch.zeros(len(masks), height, width, dtype=torch.bool, device=masks.device) if full else []
    for i, (m, b) in enumerate(zip(masks, boxes.tolist())):
        x0, y0 = max(int(math.floor(b[0])) - 1, 0), max(int(math.floor(b[1])) - 1, 0)
        x1, y1 = min(int(math.ceil(b[2])) + 1, width), min(int(math.ceil(b[3])) + 1, height)
        if x1 <= x0 or y1 <= y0 or b[2] <= b[0] or b[3] <= b[1]:
            continue
        xs = (torch.arange(x0, x1, device=masks.device, dtype=torch.float32) + 0.5 - b[0]) / (b[2] - b[0]) * 2 - 1
        ys = (torch.arange(y0, y1, device=masks.device, dtype=torch.float32) + 0.5 - b[1]) / (b[3] - b[1]) * 2 - 1
        grid = torch.stack([xs[None, :].expand(len(ys), -1), ys[:, None].expand(-1, len(xs))], dim=-1)[None]
        crop = torch.nn.functional.grid_sample(m[None, None], grid, align_corners=False)[0, 0] > threshold
        if full:
            out[i, y0:y1, x0:x1] = crop
        else:
            out.append(crop.reshape(-1))
    return out if full else torch.cat(out)


def _mostly_equal(a, b) -> bool:
    # Different arithmetic: only pixels within rounding of the threshold may differ.
    return a.shape == b.shape and float((a != b).float().mean()) < 1e-4


def _same_foreground(segdet_out, crops) -> bool:
    # The two crop the boxes differently (segdet grows each by a mask cell, the baseline by a pixel); both must hold
    # the same foreground pixels, up to pixels within rounding of the threshold.
    count = int(segdet_out[0].sum())
    return abs(count - int(crops.sum())) <= max(1, count // 10000)


def paste_masks_cases(device: str, scale: float, g: torch.Generator) -> list[Case]:
    if torchvision:
        from torchvision.models.detection.roi_heads import paste_masks_in_image
    n = _scaled(100, scale)
    boxes = proposal_boxes(n, IMAGE_H, IMAGE_W, generator=g).to(device)
    masks = torch.rand(n, 28, 28, generator=g).to(device)
    return [
        Case(f"paste_masks {n}", "paste_masks", f"{n} 28x28 masks into 800x1216, torchvision's pasting, > 0.5",
             lambda: segdet.ops.paste_masks(masks, boxes, IMAGE_H, IMAGE_W, 0.5),
             (lambda: paste_masks_in_image(masks[:, None], boxes, (IMAGE_H, IMAGE_W))[:, 0] > 0.5) if torchvision
             else None, _equal),
        # Not torchvision: its pasting is the other one; the baseline is detectron2's grid_sample method.
        Case(f"paste_masks_aligned {n}", "paste_masks", f"{n} masks, pixel-centre pasting vs F.grid_sample per box",
             lambda: segdet.ops.paste_masks_aligned(masks, boxes, IMAGE_H, IMAGE_W, 0.5),
             (lambda: grid_sample_paste(masks, boxes, IMAGE_H, IMAGE_W, 0.5)) if torchvision else None,
             _mostly_equal),
        # What evaluation and prediction run: box-sized crops, no D x H x W image.
        Case(f"paste_masks_aligned_crops {n}", "paste_masks", f"{n} masks, crops vs F.grid_sample per box",
             lambda: segdet.ops.paste_masks_aligned_crops(masks, boxes, IMAGE_H, IMAGE_W, 0.5),
             (lambda: grid_sample_paste(masks, boxes, IMAGE_H, IMAGE_W, 0.5, full=False)) if torchvision else None,
             _same_foreground),
    ]


BUILDERS = {"roi_align": roi_align_cases, "nms": nms_cases, "decode_boxes": decode_boxes_cases,
            "paste_masks": paste_masks_cases}


def machine_info(device: str) -> dict:
    info = {
        "device": device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__ if torchvision else None,
        "torch_threads": torch.get_num_threads(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],  # other processes' load skews CPU timings
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_case(case: Case, device: str, quick: bool, budget_s: float) -> dict:
    row = {"name": case.name, "op": case.op, "workload": case.workload}
    try:
        candidates = {"segdet": case.segdet}
        if case.torchvision is not None:
            candidates["torchvision"] = case.torchvision
            # Also the first warm-up call of each library.
            row["outputs_match"] = case.outputs_match(case.segdet(), case.torchvision())
        if quick:
            times = time_interleaved(candidates, device=device, warmup=0, min_reps=2, max_reps=5, budget_s=budget_s,
                                     hard_budget_s=budget_s)
        else:
            # torchvision's CPU nms on 100k boxes takes tens of seconds a call: past 2.5x the budget
            # a single round is enough.
            times = time_interleaved(candidates, device=device, warmup=0 if case.heavy else 2, min_reps=3,
                                     max_reps=100, budget_s=budget_s, hard_budget_s=2.5 * budget_s)
    except Exception as exc:  # one broken op must not hide the others' numbers
        row["error"] = f"{type(exc).__name__}: {exc}"
        return row
    for name, t in times.items():
        row[name] = summarize(t)
    if "torchvision" in row:
        row["speedup"] = row["torchvision"]["median_ms"] / row["segdet"]["median_ms"]
    return row


def _table_row(row: dict) -> dict:
    out = {"name": row["name"], "speedup": row.get("speedup"), "match": row.get("outputs_match")}
    for lib in ("segdet", "torchvision"):
        s = row.get(lib)
        if s:
            out[f"{lib}_median"] = s["median_ms"]
            out[f"{lib}_iqr"] = f"{s['q1_ms']:.3g}-{s['q3_ms']:.3g}"
            out["reps"] = s["reps"]
    if "error" in row:
        out["name"] += f"  [{row['error'][:60]}]"
    return out


COLUMNS = [
    ("name", "case"), ("segdet_median", "segdet ms"), ("segdet_iqr", "segdet IQR"),
    ("torchvision_median", "tv ms"), ("torchvision_iqr", "tv IQR"), ("speedup", "speedup"),
    ("match", "same out"), ("reps", "reps"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--ops", nargs="+", choices=sorted(BUILDERS), default=sorted(BUILDERS),
                        help="which ops to benchmark (batched_nms runs with nms)")
    parser.add_argument("--quick", action="store_true", help="a few repetitions per case")
    parser.add_argument("--budget", type=float, default=None, help="seconds of timing per case (default 8, quick 1)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply workload sizes (tests use a tiny one)")
    parser.add_argument("--json", default="bench_ops.json", help="where to write the results")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); 1 is steadier on a loaded machine")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    if args.scale <= 0:
        parser.error("--scale must be positive")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    budget = args.budget if args.budget is not None else (1.0 if args.quick else 8.0)

    g = torch.Generator().manual_seed(args.seed)
    rows = []
    for op in args.ops:
        for case in BUILDERS[op](args.device, args.scale, g):
            row = run_case(case, args.device, args.quick, budget)
            rows.append(row)
            print(format_table([_table_row(row)], COLUMNS).splitlines()[-1], flush=True)
    print()
    print(format_table([_table_row(r) for r in rows], COLUMNS))
    result = {"machine": machine_info(args.device), "quick": args.quick, "scale": args.scale, "results": rows}
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwrote {args.json}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
