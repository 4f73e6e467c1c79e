"""scripts/train.py end to end in subprocesses: finish, SIGTERM, SIGKILL + resume, and a 2-process torchrun run.

Kept small: 64 px shapes images (8 train / 4 val, generated once per session into a temporary cache), the small
model at 64 px, a handful of iterations, one thread per process.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from segdet.engine.checkpoint import find_last_checkpoint, read_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TINY = ["optim=sgd", "data.generator.image_size=64", "data.generator.num_train=8", "data.generator.num_val=4",
        "data.num_workers=0", "data.val_batch_size=2", "model.min_size=64", "model.max_size=64",
        "train.batch_size=2", "train.log_period=1", "schedule.warmup_iters=2", "optim.lr=0.005",
        "eval.num_overlays=2"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = dict(os.environ)
    e.update(SEGDET_CACHE=str(tmp_path_factory.mktemp("cache")), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def _cmd(run_dir, *overrides):
    return [sys.executable, str(ROOT / "scripts/train.py"), f"hydra.run.dir={run_dir}", *TINY, *overrides]


def _wait_for(predicate, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"training exited early with {proc.returncode}:\n{out[-3000:]}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("timed out waiting for training progress")


def _iterations_logged(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    its = [json.loads(line).get("iteration", 0) for line in path.read_text().splitlines() if line.endswith("}")]
    return max(its, default=0)


@pytest.mark.slow
def test_sigkill_then_same_command_resumes_and_finishes(tmp_path, env):
    run_dir = tmp_path / "run"
    cmd = _cmd(run_dir, "train.max_iter=8", "train.checkpoint_period=2", "cpu_threads=2")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(lambda: _iterations_logged(run_dir) >= 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    last = find_last_checkpoint(run_dir)
    assert last is not None
    saved_iter = read_checkpoint(last)["iteration"]
    assert saved_iter >= 2 and saved_iter % 2 == 0

    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert f"Resuming from {last} at iteration {saved_iter}" in log
    assert "2 CPU threads" in log  # the env says OMP_NUM_THREADS=1: the key overrides it
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["iteration"] == 8
    for key in ("bbox/AP", "bbox/AP50", "bbox/AP75", "bbox/APs", "bbox/APm", "bbox/APl", "segm/AP", "segm/AP50"):
        assert key in metrics
    assert len(list((run_dir / "overlays").glob("*.png"))) == 2
    ckpt = read_checkpoint(find_last_checkpoint(run_dir))
    assert ckpt["iteration"] == 8 and ckpt["model_config"]["_target_"] == "segdet.modeling.MaskRCNN"
    assert ckpt["class_names"] and ckpt["label_to_category_id"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    its = [r["iteration"] for r in records if "loss" in r]
    assert its == list(range(1, 9))  # iterations logged by the killed run after its checkpoint were dropped


@pytest.mark.slow
def test_sigterm_saves_and_exits_143(tmp_path, env):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_cmd(run_dir, "train.max_iter=1000", "train.checkpoint_period=0"), cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(lambda: _iterations_logged(run_dir) >= 2, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out[-3000:]
    assert "Received SIGTERM" in out
    ckpt = read_checkpoint(find_last_checkpoint(run_dir))
    assert 2 <= ckpt["iteration"] < 1000
    assert not (run_dir / "metrics.json").exists()


def test_bad_cpu_threads_is_named_before_training(tmp_path, env):
    done = subprocess.run(_cmd(tmp_path / "run", "cpu_threads=-2"), cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    assert "cpu_threads must be an integer >= 0" in done.stdout + done.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_share_one_run_dir(tmp_path, env):
    # %f (microseconds) makes every rank's Hydra resolve a different directory: they must still agree on one.
    parent = tmp_path / "runs"
    run_dir_pattern = str(parent / "${now:%H-%M-%S-%f}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-addr=127.0.0.1",
           f"--master-port={_free_port()}", str(ROOT / "scripts/train.py"), f"hydra.run.dir={run_dir_pattern}",
           *TINY, "train.max_iter=3", "train.checkpoint_period=0", "device=cpu"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    dirs = list(parent.iterdir())
    assert len(dirs) == 1, dirs
    run_dir = dirs[0]
    assert "world size 2" in log
    assert "Parameters identical on all 2 ranks" in log
    assert "over 4 images" in log  # rank 0 evaluates the val images gathered from both ranks
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["iteration"] == 3 and "segm/AP" in metrics
    assert (run_dir / ".hydra" / "config.yaml").exists()
    ckpt = read_checkpoint(find_last_checkpoint(run_dir))
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2 and len(ckpt["data"]) == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_torchrun_restart_after_a_killed_worker_resumes(tmp_path, env):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--max-restarts=1",
           "--master-addr=127.0.0.1", f"--master-port={_free_port()}", str(ROOT / "scripts/train.py"),
           f"hydra.run.dir={run_dir}", *TINY, "train.max_iter=5", "train.checkpoint_period=2", "device=cpu",
           "eval.num_overlays=0", "+model.kill_at_call=4", "model._target_=tests.engine.faulty.KillOnceMaskRCNN"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "Resuming from" in log and "at iteration 2" in log, log[-4000:]
    assert json.loads((run_dir / "metrics.json").read_text())["iteration"] == 5
