"""Peak memory and time of turning Mask R-CNN's RoI masks into COCO RLEs: today's full-image paste against the
box-by-box crops path (issue 14).

    python scripts/bench_paste_masks_memory.py                       # 100 detections on a 4000 x 3000 image
    python scripts/bench_paste_masks_memory.py --detections 50 --height 1080 --width 1920 --repeats 3

Paths (each measured in a fresh interpreter, so one's allocations cannot hide in another's peak):
  full   segdet.ops.paste_masks -> bool [D, H, W] -> encode_mask_results (what prediction and evaluation did)
  crops  segdet.evaluation.coco_results.mask_probs_to_rles: paste_masks_crops in bounded chunks, RLE from crops
Peak memory is the child's peak resident set (getrusage ru_maxrss) minus its resident set just before the first
call, after the inputs exist: torch's allocations are invisible to tracemalloc. Time is the median of --repeats
calls. Box sets: "typical" sides 2 %..40 % of the image; "large" sides 50 %..100 % (the worst case for crops).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys


def _child(args) -> None:
    import hashlib
    import resource
    import statistics
    import time

    import torch

    from segdet.evaluation.coco_results import encode_mask_results, mask_probs_to_rles
    from segdet.ops import paste_masks

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    d, h, w = args.detections, args.height, args.width
    lo, hi = (0.02, 0.4) if args.boxes == "typical" else (0.5, 1.0)
    size = torch.tensor([w, h], dtype=torch.float32)
    side = (lo + (hi - lo) * torch.rand(d, 2, generator=g)) * size
    ctr = side / 2 + torch.rand(d, 2, generator=g) * (size - side)
    boxes = torch.cat([ctr - side / 2, ctr + side / 2], 1)
    probs = torch.rand(d, 28, 28, generator=g)

    def full():
        return encode_mask_results(paste_masks(probs, boxes, h, w, 0.5))

    def crops():
        return mask_probs_to_rles(probs, boxes, h, w, 0.5)

    fn = full if args.child == "full" else crops
    base_kib = _rss_kib()
    times = []
    result = None
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"path": args.child, "boxes": args.boxes, "peak_mib": (peak_kib - base_kib) / 1024,
                      "median_s": statistics.median(times), "num_rles": len(result),
                      "rle_sha1": hashlib.sha1("".join(r["counts"] for r in result).encode()).hexdigest()}))


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--boxes", choices=("typical", "large", "both"), default="both")
    parser.add_argument("--child", choices=("full", "crops"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    rows = []
    for boxes in (("typical", "large") if args.boxes == "both" else (args.boxes,)):
        for path in ("full", "crops"):
            cmd = [sys.executable, __file__, "--child", path, "--boxes", boxes, "--detections", str(args.detections),
                   "--height", str(args.height), "--width", str(args.width), "--repeats", str(args.repeats),
                   "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ.copy())
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{args.detections} detections on a {args.width} x {args.height} image, {args.threads} torch threads, "
          f"median of {args.repeats}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print("| boxes | path | peak memory (MiB) | time (s) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['boxes']} | {r['path']} | {r['peak_mib']:.0f} | {r['median_s']:.3f} |")
    by = {(r["boxes"], r["path"]): r for r in rows}
    for boxes in {r["boxes"] for r in rows}:
        if by[(boxes, "full")]["rle_sha1"] != by[(boxes, "crops")]["rle_sha1"]:
            raise SystemExit(f"{boxes}: the two paths gave different RLEs")


if __name__ == "__main__":
    main()
