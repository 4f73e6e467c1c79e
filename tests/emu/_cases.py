"""The CPU tests' case sweeps and input makers, imported from tests/ops so that the emulated tests
run the cases the CPU kernels are tested on (and follow them when those change)."""
from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import pytest

_PARAM = type(pytest.param(0))
OPS_TESTS = Path(__file__).resolve().parent.parent / "ops"


def cpu_test_module(name: str):
    """tests/ops/<name>.py, imported under a private name (it is not a package)."""
    key = f"_segdet_cpu_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, OPS_TESTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def sweep(test_fn, drop=("device",)) -> list[dict]:
    """The cartesian product of a test's @pytest.mark.parametrize arguments, as dicts of keyword
    arguments; arguments named in `drop` (the device axis) are left out, pytest.param values unwrapped."""
    axes = []
    for mark in getattr(test_fn, "pytestmark", []):
        if mark.name != "parametrize":
            continue
        names, values = mark.args[0], mark.args[1]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        if names == list(drop[:1]) or set(names) <= set(drop):
            continue
        rows = []
        for v in values:
            if isinstance(v, _PARAM):
                v = v.values if len(names) > 1 else v.values[0]
            rows.append({names[0]: v} if len(names) == 1 else dict(zip(names, v)))
        axes.append(rows)
    cases = []
    for combo in itertools.product(*axes):
        merged = {}
        for part in combo:
            merged.update(part)
        cases.append(merged)
    return cases


def case_id(case: dict) -> str:
    def fmt(v):
        s = str(v)
        return s.replace("torch.", "").replace(" ", "")

    return "-".join(f"{k}={fmt(v)}" for k, v in case.items())
