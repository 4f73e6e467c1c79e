"""Puts tests/export on sys.path for its helper module (tests/ has no packages)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
