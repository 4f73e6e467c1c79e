"""Puts tests/export on sys.path for its helper module (tests/ has no packages); the one exported package the
tests of this folder share (AOTInductor compiles for minutes)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def small_package(tmp_path_factory):
    from tests_export_helpers import export_small_package

    return export_small_package(tmp_path_factory.mktemp("export"))
