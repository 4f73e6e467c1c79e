"""Paths shared by the modeling tests."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODEL_CONF_DIR = str(REPO / "conf" / "model")
