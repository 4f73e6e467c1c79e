"""Running scripts/train.py's ``run`` in process on a tiny shapes set (shared by the script-level tests)."""
import importlib.util
from pathlib import Path

from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[2]
TINY = ["data.generator.image_size=64", "data.generator.num_train=4", "data.generator.num_val=2",
        "data.num_workers=0", "model.min_size=64", "model.max_size=64", "train.batch_size=2", "train.log_period=1",
        "eval.num_overlays=0", "train.checkpoint_period=0", "train.max_iter=2", "cpu_threads=1"]


def run_train(tmp_path, monkeypatch, *overrides) -> int:
    """scripts/train.py's run() with TINY + ``overrides``; the run directory is tmp_path/run."""
    monkeypatch.setenv("SEGDET_CACHE", str(tmp_path / "cache"))
    spec = importlib.util.spec_from_file_location("segdet_train_script", ROOT / "scripts" / "train.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", [*TINY, *overrides])
    return script.run(cfg, str(tmp_path / "run"))
