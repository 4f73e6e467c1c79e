"""Tally and call helpers shared by the emulated tests and their conftest (one module instance, so
the tests' records and the session summary see the same counts)."""
import os

KERNELS = [
    "roi_align_forward",
    "roi_align_backward",
    "roi_align_backward_deterministic",
    "nms",
    "batched_nms",
    "decode_boxes",
    "paste_masks",
    "paste_masks_crops",
    "paste_masks_aligned",
    "paste_masks_aligned_crops",
]

# (order, seed): every case runs under each. Forward and reverse resume the threads of a barrier in
# opposite orders, which exposes a read of a value another thread has not yet written.
SCHEDULES = [("forward", 0), ("reverse", 0), ("random", int(os.environ.get("SEGDET_EMU_SEED", "20261201")))]

_tally = {k: [0, 0] for k in KERNELS}


def record(kernel: str, ok: bool) -> None:
    _tally[kernel][0] += 1
    _tally[kernel][1] += 0 if ok else 1


def emulated(op, *args, source: str, must_launch: bool):
    """Calls the emulated op; with must_launch, checks that it really ran a kernel launched from
    csrc/ops/cuda/<source> in the emulator (not some host fallback) and returns its result."""
    import torch

    torch.ops.segdet_emu.reset_launch_counts()
    out = op(*args)
    if must_launch:
        sites = torch.ops.segdet_emu.launch_sites()
        assert source in sites, f"no kernel launch from {source} recorded; launches: {sites!r}"
    return out
