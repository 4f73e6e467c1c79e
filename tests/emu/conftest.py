"""Emulated CUDA kernel tests: torch.ops.segdet_emu.* (the CUDA glue and kernels compiled by g++ and
run in the CPU emulator of csrc/emu) against the CPU kernels torch.ops.segdet.* and the references.

These run only from scripts/run_cuda_emulation.sh, which builds the sanitized library and sets
SEGDET_EMU_LIB; a normal pytest run collects nothing here. Every comparison is tallied per kernel;
the tally goes to the JSON file named by SEGDET_EMU_SUMMARY at the end of the session, from which the
script prints its "emulated <kernel>: <N> cases, <M> mismatches" lines.
"""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # _harness and _cases, imported by the test modules too
from _harness import SCHEDULES, _tally  # noqa: E402

LIB = os.environ.get("SEGDET_EMU_LIB")
if not LIB:
    collect_ignore_glob = ["test_*.py"]


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
