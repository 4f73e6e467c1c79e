"""Wheel metadata (issue 11 §4): the version's local tag names the torch build, torch is pinned to the release,
and importing segdet under another torch than it was built for fails naming both versions."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _setup_module():
    # setup.py's helpers without running setup(): it only calls main() under __main__.
    spec = importlib.util.spec_from_file_location("segdet_setup", ROOT / "setup.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("torch_version, cuda, expected", [
    ("2.14.1+cu130", "13.0", "0.1.0+pt2.14.1cu130"),
    ("2.14.1+cu130", None, "0.1.0+pt2.14.1cpu"),
    ("2.14.1", None, "0.1.0+pt2.14.1cpu"),
    ("2.15.0+cu126", "12.6", "0.1.0+pt2.15.0cu126"),
])
def test_build_version_names_the_torch_build(torch_version, cuda, expected):
    version, requirement = _setup_module().build_version(torch_version, cuda)
    assert version == expected
    assert requirement == "torch==" + torch_version.split("+")[0]


def test_import_under_another_torch_fails_naming_both(monkeypatch):
    from segdet import _build_info, _extension

    monkeypatch.setattr(torch, "__version__", "2.99.0+cpu")
    with pytest.raises(ImportError) as info:
        _extension.load_extension()
    msg = str(info.value)
    assert "2.99.0+cpu" in msg and _build_info.TORCH_VERSION in msg


def test_same_release_other_local_build_is_accepted(monkeypatch):
    from segdet import _build_info, _extension

    monkeypatch.setattr(torch, "__version__", _build_info.TORCH_VERSION.split("+")[0] + "+other")
    assert _extension.load_extension() is not None


def test_version_carries_the_build():
    import segdet
    from segdet import _build_info

    assert segdet.__version__ == _build_info.VERSION
    assert segdet.__version__.startswith("0.1.0+pt" + torch.__version__.split("+")[0])


def test_built_version_is_checked_in_a_fresh_process():
    # The check runs at `import segdet` (not only through load_extension): a torch whose version was changed
    # before the import is refused.
    code = "import torch; torch.__version__ = '1.0.0'; import segdet"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=300)
    assert proc.returncode != 0
    assert "1.0.0" in proc.stderr and "was built for torch" in proc.stderr
