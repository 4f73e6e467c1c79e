"""Time segdet.ops.nms / batched_nms against torchvision.ops on CPU (and CUDA when present).

Usage: .venv/bin/python scripts/bench_nms.py [--n 20000] [--classes 80] [--threads 2] [--device cpu]

Boxes are uniform in a 1000 px square with sides up to 200 px; scores uniform. Reports the
minimum over repetitions of wall time and (CPU only) process CPU time, which is the fairer
number on a shared machine. Results of both libraries are checked to be identical first.
"""
import argparse
import time

import torch

import segdet.ops as ops


def timed(fn, reps, device):
    fn()
    wall, cpu = [], []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return min(wall) * 1e3, min(cpu) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    import torchvision

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(args.n, 2, generator=g) * 1000
    boxes = torch.cat([xy, xy + torch.rand(args.n, 2, generator=g) * 200], 1).to(args.device)
    scores = torch.rand(args.n, generator=g).to(args.device)
    idxs = torch.randint(0, args.classes, (args.n,), generator=g).to(args.device)
    print(f"device={args.device} threads={args.threads} n={args.n}; times in ms: wall / process CPU")
    for thr in (0.5, 0.7):
        cases = [
            ("nms", lambda: ops.nms(boxes, scores, thr), lambda: torchvision.ops.nms(boxes, scores, thr)),
            (f"batched_nms {args.classes} classes", lambda: ops.batched_nms(boxes, scores, idxs, thr),
             lambda: torchvision.ops.batched_nms(boxes, scores, idxs, thr)),
        ]
        for name, ours, theirs in cases:
            same = torch.equal(ours(), theirs()) if args.device == "cpu" else None
            a = timed(ours, args.reps, args.device)
            b = timed(theirs, max(1, args.reps // 2), args.device)
            print(f"{name:<24} thr={thr}: segdet {a[0]:8.2f} / {a[1]:8.2f}   torchvision {b[0]:8.2f} / {b[1]:8.2f}"
                  f"   speedup wall x{b[0] / a[0]:.1f} cpu x{b[1] / max(a[1], 1e-3):.1f}   identical={same}")


if __name__ == "__main__":
    main()
