"""bfloat16 inputs of roi_align and paste_masks on the CPU: native bf16 kernels against casting to float32.

roi_align with a bf16 feature map, forward and forward+backward, two ways in one process, interleaved
call by call after a warm-up (segdet.utils.benchmark):
  native  the CPU kernels read the bf16 map (and write a bf16 result and grad_input), float32 rois,
          float accumulation inside: what CPU autocast runs (csrc/ops/autocast/roi_align_autocast.cpp);
  cast    map.float() -> float32 kernels -> result.bfloat16(), autograd through the casts: what CPU
          autocast ran before (and still runs on CUDA).
Both give bitwise equal results (checked on the first call: "same out"). paste_masks is timed with bf16
mask probabilities against the model's path, probs.float() then paste.

Workloads (sampling_ratio 2, aligned, RoIs assigned to FPN levels as the pooler assigns them):
  small   the small model's training shapes: batch 4, 64 channels, a 128x128 image (p2..p5 =
          32x32 .. 4x4), 128 RoIs -> 7x7 and 32 RoIs -> 14x14;
  r50     R50-FPN: batch 2, 256 channels, an 800x1216 image (p2..p5 = 200x304 .. 25x38),
          1000 RoIs -> 7x7 and 100 RoIs -> 14x14.

    python scripts/bench_bf16_ops.py --threads 2                  # a few minutes on 2 cores
    python scripts/bench_bf16_ops.py --quick --workloads small    # seconds
"""
import argparse
import json
import os
import platform
import sys

import torch

import segdet.ops
from segdet.modeling.poolers import assign_boxes_to_levels
from segdet.utils.benchmark import format_table, proposal_boxes, summarize, time_interleaved

# name: (batch, channels, image height, image width, box-head RoIs, mask-head RoIs)
WORKLOADS = {
    "small": (4, 64, 128, 128, 128, 32),
    "r50": (2, 256, 800, 1216, 1000, 100),
}
STRIDES = (4, 8, 16, 32)  # p2..p5


def _levels(batch, channels, height, width, g):
    """The bf16 FPN maps of one batch, NCHW."""
    return [torch.randn(batch, channels, height // s, width // s, generator=g).bfloat16() for s in STRIDES]


def _level_rois(num, batch, height, width, g):
    """Per level, the float32 Tensor[K_l, 5] rois the pooler would send to it."""
    boxes = proposal_boxes(num, height, width, generator=g, max_size=0.5 * min(height, width))
    index = (torch.arange(num, dtype=torch.float32) % batch)[:, None]
    rois = torch.cat([index, boxes], dim=1)
    level = assign_boxes_to_levels(boxes, 2, 5)
    return [rois[level == i] for i in range(len(STRIDES))]


def roi_align_cases(name, channels_last, g):
    batch, channels, height, width, n_box, n_mask = WORKLOADS[name]
    maps = _levels(batch, channels, height, width, g)
    if channels_last:
        maps = [m.contiguous(memory_format=torch.channels_last) for m in maps]
    cases = []
    for head, num, size in (("box", n_box, 7), ("mask", n_mask, 14)):
        rois = _level_rois(num, batch, height, width, g)
        grads = [torch.randn(r.shape[0], channels, size, size, generator=g).bfloat16() for r in rois]
        if channels_last:
            grads = [gr.contiguous(memory_format=torch.channels_last) for gr in grads]

        def pool(leaves, cast, rois=rois, size=size):
            outs = []
            for leaf, r, s in zip(leaves, rois, STRIDES):
                x = leaf.float() if cast else leaf
                out = segdet.ops.roi_align(x, r, size, 1.0 / s, 2, True)
                outs.append(out.bfloat16() if cast else out)
            return outs

        def forward(cast, pool=pool):
            return lambda: pool(maps, cast)

        def forward_backward(cast, pool=pool, grads=grads):
            def run():
                leaves = [m.detach().requires_grad_(True) for m in maps]
                return torch.autograd.grad(pool(leaves, cast), leaves, grads)
            return run

        layout = "channels_last" if channels_last else "NCHW"
        k = sum(r.shape[0] for r in rois)
        workload = (f"{name} {head} head: {k} RoIs ({'/'.join(str(r.shape[0]) for r in rois)} on p2..p5) x "
                    f"{channels} ch -> {size}x{size}, batch {batch}, {height}x{width} image, {layout}")
        for kind, make in (("fwd", forward), ("fwd+bwd", forward_backward)):
            cases.append((f"roi_align {kind} {name} {head} {layout}", workload, make(False), make(True)))
    return cases


def paste_masks_cases(name, g):
    _, _, height, width, _, _ = WORKLOADS[name]
    num = 100
    boxes = proposal_boxes(num, height, width, generator=g, max_size=0.5 * min(height, width))
    probs = torch.rand(num, 28, 28, generator=g).bfloat16()
    workload = f"{name}: {num} masks 28x28 -> {height}x{width}, threshold 0.5"
    return [(f"paste_masks {name}", workload, lambda: segdet.ops.paste_masks(probs, boxes, height, width, 0.5),
             lambda: segdet.ops.paste_masks(probs.float(), boxes, height, width, 0.5))]


def _same(a, b):
    if isinstance(a, (list, tuple)):
        return all(_same(x, y) for x, y in zip(a, b)) and len(a) == len(b)
    return a.dtype == b.dtype and bool(torch.equal(a, b))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), default=["small", "r50"])
    parser.add_argument("--layouts", nargs="+", choices=["nchw", "channels_last"], default=["nchw", "channels_last"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="a few repetitions per case")
    parser.add_argument("--budget", type=float, default=None, help="seconds of timing per case (default 6, quick 1)")
    parser.add_argument("--json", default="bench_bf16_ops.json", help="where to write the results")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    budget = args.budget if args.budget is not None else (1.0 if args.quick else 6.0)
    g = torch.Generator().manual_seed(args.seed)

    cases = []
    for name in args.workloads:
        for layout in args.layouts:
            cases += roi_align_cases(name, layout == "channels_last", g)
        cases += paste_masks_cases(name, g)
    rows = []
    columns = [("name", "case"), ("native", "native ms"), ("native_iqr", "IQR"), ("cast", "cast ms"),
               ("cast_iqr", "IQR"), ("speedup", "cast/native"), ("same", "same out"), ("reps", "reps")]
    for case_name, workload, native, cast in cases:
        same = _same(native(), cast())
        times = time_interleaved({"native": native, "cast": cast}, warmup=0 if args.quick else 1, min_reps=3,
                                 max_reps=5 if args.quick else 41, budget_s=budget, hard_budget_s=2.5 * budget)
        stats = {k: summarize(v) for k, v in times.items()}
        rows.append({"name": case_name, "workload": workload, "same": same, **stats,
                     "speedup": stats["cast"]["median_ms"] / stats["native"]["median_ms"]})
        print(f"{case_name}: native {stats['native']['median_ms']:.2f} ms, cast {stats['cast']['median_ms']:.2f} ms",
              flush=True)
    table = [{"name": r["name"], "native": r["native"]["median_ms"], "cast": r["cast"]["median_ms"],
              "native_iqr": f"{r['native']['q1_ms']:.3g}-{r['native']['q3_ms']:.3g}",
              "cast_iqr": f"{r['cast']['q1_ms']:.3g}-{r['cast']['q3_ms']:.3g}", "speedup": r["speedup"],
              "same": r["same"], "reps": r["native"]["reps"]} for r in rows]
    print()
    print(format_table(table, columns))
    machine = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
               "python": platform.python_version(), "load_average_1m": os.getloadavg()[0]}
    with open(args.json, "w") as f:
        json.dump({"machine": machine, "quick": args.quick, "results": rows}, f, indent=2)
    print(f"\nwrote {args.json} (load average {machine['load_average_1m']:.2f})")
    return 0 if all(r["same"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
