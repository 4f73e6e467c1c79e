"""A small sweep of every segdet op on one device, compared with the CPU kernels.

scripts/gpu_check.sh runs it under compute-sanitizer (memcheck, racecheck, synccheck), so it is
kept small: each kernel variant (roi_align forward, atomic and deterministic backward, nms,
batched_nms, decode_boxes, paste_masks, the aligned pastes) meets NCHW and channels_last input, every dtype, every
sampling mode, boxes outside the map, zero-size boxes and maps, empty inputs and NaN scores a
few times, not thousands. On --device cpu it is a smoke test of the sweep itself (CPU vs CPU).

    python scripts/sweep_ops.py --device cuda        # prints one line per op, exits 1 on a mismatch
"""
import argparse
import itertools
import math
import sys

import torch

import segdet.ops  # noqa: F401  (registers torch.ops.segdet)

ops = torch.ops.segdet


def rois_for(g, k, n, h, w, dtype):
    """Tensor[k, 5]: boxes inside, across and outside an h x w map, zero-size ones, batch in [0, n)."""
    xy = (torch.rand(k, 2, generator=g, dtype=torch.float64) * 1.6 - 0.3) * torch.tensor([w, h])
    wh = torch.rand(k, 2, generator=g, dtype=torch.float64) * torch.tensor([w, h]) * 0.7
    wh[::5] = 0.0
    batch = torch.randint(0, max(n, 1), (k, 1), generator=g).double()
    rois = torch.cat([batch, xy, xy + wh], dim=1)
    if k > 1:
        rois[1, 1:] = torch.tensor([-1.0, -1.0, 0.0, 0.0])  # touching the top-left edge
    return rois.to(dtype)


def same(a, b, exact):
    a = a.cpu()
    if a.dtype == torch.bool or exact:
        return torch.equal(a, b)
    tol = 1e-2 if a.dtype in (torch.float16, torch.bfloat16) else 1e-5
    return torch.allclose(a.double(), b.double(), atol=tol, rtol=tol, equal_nan=True)


def sweep_roi_align(device, report):
    g = torch.Generator().manual_seed(0)
    shapes = [(2, 3, 9, 11), (1, 2, 0, 5), (1, 1, 1, 1), (2, 5, 6, 4)]
    configs = [(1.0, 2, 2, 0, True), (0.5, 3, 2, 2, False), (2.0, 1, 3, -1, True)]
    for (n, c, h, w), (scale, ph, pw, ratio, aligned), dtype, cl in itertools.product(
            shapes, configs, [torch.float32, torch.float64, torch.float16, torch.bfloat16], [False, True]):
        x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64).to(dtype)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        rois = rois_for(g, 7, n, h / scale, w / scale, dtype)
        cpu = ops.roi_align(x, rois, scale, ph, pw, ratio, aligned)
        out = ops.roi_align(x.to(device), rois.to(device), scale, ph, pw, ratio, aligned)
        report("roi_align_forward", same(out, cpu, exact=dtype == torch.float32))
        grad = torch.randn(cpu.shape, generator=g, dtype=torch.float64).to(dtype)
        if cl:
            grad = grad.contiguous(memory_format=torch.channels_last)
        args = (scale, ph, pw, n, c, h, w, ratio, aligned)
        cpu_grad = ops._roi_align_backward(grad, rois, *args)
        for deterministic in (False, True):
            torch.use_deterministic_algorithms(deterministic)
            try:
                got = ops._roi_align_backward(grad.to(device), rois.to(device), *args)
            finally:
                torch.use_deterministic_algorithms(False)
            name = "roi_align_backward_deterministic" if deterministic else "roi_align_backward"
            report(name, same(got, cpu_grad, exact=deterministic and dtype == torch.float32))
    empty = torch.zeros(0, 5)
    out = ops.roi_align(torch.randn(1, 2, 4, 4, device=device), empty.to(device), 1.0, 2, 2, 0, True)
    report("roi_align_forward", tuple(out.shape) == (0, 2, 2, 2))


def sweep_nms(device, report):
    g = torch.Generator().manual_seed(1)
    neg_nan = torch.tensor([0xFFC00000 - (1 << 32)], dtype=torch.int32).view(torch.float32).item()
    for n, dtype, threshold in itertools.product([0, 1, 70, 300], [torch.float32, torch.float64, torch.float16],
                                                 [0.0, 0.5, math.nan]):
        xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 100
        boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g, dtype=torch.float64) * 30], dim=1).to(dtype)
        scores = torch.rand(n, generator=g, dtype=torch.float64).round(decimals=1).to(dtype)
        scores[::17] = neg_nan
        scores[5::23] = math.nan
        idxs = torch.randint(0, 4, (n,), generator=g)
        cpu = ops.nms(boxes, scores, threshold)
        report("nms", same(ops.nms(boxes.to(device), scores.to(device), threshold), cpu, exact=True))
        cpu = ops.batched_nms(boxes, scores, idxs, threshold)
        got = ops.batched_nms(boxes.to(device), scores.to(device), idxs.to(device), threshold)
        report("batched_nms", same(got, cpu, exact=True))


def sweep_decode_boxes(device, report):
    g = torch.Generator().manual_seed(2)
    for n, classes, dtype, size in itertools.product([0, 1, 37], [1, 3], [torch.float32, torch.float64,
                                                                         torch.float16], [None, [50, 70]]):
        xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 60
        boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g, dtype=torch.float64) * 20], dim=1).to(dtype)
        rel = (torch.randn(n, 4 * classes, generator=g, dtype=torch.float64) * 2).to(dtype)
        if n > 3:
            rel[3, 2] = math.nan
        args = ([10.0, 10.0, 5.0, 5.0], math.log(1000.0 / 16), size)
        cpu = ops.decode_boxes(rel, boxes, *args)
        got = ops.decode_boxes(rel.to(device), boxes.to(device), *args)
        # expf on the GPU may differ from the CPU's in the last bit: compared with a tolerance.
        report("decode_boxes", same(got, cpu, exact=False))


def sweep_paste_masks(device, report):
    g = torch.Generator().manual_seed(3)
    for d, s, dtype, (h, w) in itertools.product([0, 1, 9], [1, 7, 28], [torch.float32, torch.float64],
                                                 [(0, 5), (31, 47)]):
        masks = torch.rand(d, s, s, generator=g, dtype=torch.float64).to(dtype)
        xy = (torch.rand(d, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2) * torch.tensor([w, h])
        boxes = torch.cat([xy, xy + torch.rand(d, 2, generator=g, dtype=torch.float64) * 25], dim=1).to(dtype)
        cpu = ops.paste_masks(masks, boxes, h, w, 0.5)
        report("paste_masks", same(ops.paste_masks(masks.to(device), boxes.to(device), h, w, 0.5), cpu, exact=True))
        # Aligned pasting: the CPU and CUDA kernels share paste_masks_aligned_math.h, so the bits must agree.
        cpu = ops.paste_masks_aligned(masks, boxes, h, w, 0.5)
        report("paste_masks_aligned",
               same(ops.paste_masks_aligned(masks.to(device), boxes.to(device), h, w, 0.5), cpu, exact=True))
        crops, regions = ops.paste_masks_aligned_crops(masks.to(device), boxes.to(device), h, w, 0.5)
        cpu_crops, cpu_regions = ops.paste_masks_aligned_crops(masks, boxes, h, w, 0.5)
        report("paste_masks_aligned_crops", same(crops, cpu_crops, exact=True) and same(regions, cpu_regions, exact=True))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)
    counts = {}

    def report(kernel, ok):
        cases, bad = counts.get(kernel, (0, 0))
        counts[kernel] = (cases + 1, bad + (0 if ok else 1))

    for sweep in (sweep_roi_align, sweep_nms, sweep_decode_boxes, sweep_paste_masks):
        sweep(args.device, report)
    if args.device == "cuda":
        torch.cuda.synchronize()
    for kernel, (cases, bad) in counts.items():
        print(f"sweep {kernel} ({args.device}): {cases} cases, {bad} mismatches")
    return 1 if any(bad for _, bad in counts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
