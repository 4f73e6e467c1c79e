"""Emulated CUDA kernel tests: torch.ops.segdet_emu.* (the CUDA glue and kernels compiled by g++ and
run in the CPU emulator of csrc/emu) against the CPU kernels torch.ops.segdet.* and the references.

These run only from scripts/run_cuda_emulation.sh, which builds the sanitized library and sets
SEGDET_EMU_LIB; a normal pytest run collects nothing here. Every comparison is tallied per kernel;
the tally goes to the JSON file named by SEGDET_EMU_SUMMARY at the end of the session, from which the
script prints its "emulated <kernel>: <N> cases, <M> mismatches" lines.
"""
import json
import os

import pytest

LIB = os.environ.get("SEGDET_EMU_LIB")
if not LIB:
    collect_ignore_glob = ["test_*.py"]

KERNELS = [
    "roi_align_forward",
    "roi_align_backward",
    "roi_align_backward_deterministic",
    "nms",
    "batched_nms",
    "decode_boxes",
    "paste_masks",
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


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("SEGDET_EMU_SUMMARY")
    if LIB and path:
        with open(path, "w") as f:
            json.dump({k: {"cases": c, "mismatches": m} for k, (c, m) in _tally.items()}, f, indent=1)


@pytest.fixture(scope="session", autouse=True)
def emu_library():
    import torch

    import segdet  # noqa: F401  (the CPU kernels, the oracle)

    torch.ops.load_library(LIB)
    return torch.ops.segdet_emu


@pytest.fixture(params=SCHEDULES, ids=lambda s: f"{s[0]}{s[1] if s[0] == 'random' else ''}")
def schedule(request, emu_library):
    emu_library.set_schedule(*request.param)
    return request.param
