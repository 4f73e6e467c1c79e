"""train.compile: the training forward/backward through torch.compile, checkpoints and evaluation on the eager model.

The dummy-detector tests compile a few small graphs and run in the default suite; the Mask R-CNN ones compile the
real model with inductor (minutes on a loaded 2-core CPU, cold cache) and are marked slow.
"""
import json
import logging
import math

import pytest
import torch

from segdet.engine.checkpoint import find_last_checkpoint, read_checkpoint

from .dummy import make_trainer
from .test_trainer import _CrashAfter
from .train_script import run_train

# First-step losses are computed from the same weights, images and random draws (the samplers' randperm runs
# eagerly between graphs), so only float rounding differs: inductor fuses pointwise ops and reorders reductions
# (GroupNorm statistics, loss means), each off by a few float32 ulps (~1e-7 relative), which a few dozen layers
# grow to ~1e-6. 1e-4 is far above that and far below what a wrong graph (a dropped op, stale weights, another
# sampled set of anchors or RoIs: changes of 1e-2 and more) would give. Observed: <= 2e-7 relative.
LOSS_RTOL = 1e-4


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    # Compiled code is cached per code object; a fresh cache keeps one test's graphs and recompile counts out of
    # the next one.
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_bad_compile_value_fails_naming_the_key(tmp_path, value):
    with pytest.raises(ValueError, match=r"train\.compile"):
        make_trainer(tmp_path, compile=value)


def test_bad_compile_value_fails_in_the_script_before_training(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"train\.compile must be true or false, got 'yes'"):
        run_train(tmp_path, monkeypatch, "train.compile=yes")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def _checkpoint_model_keys(run_dir):
    return list(read_checkpoint(find_last_checkpoint(run_dir))["model"])


def test_compiled_dummy_training_checkpoints_the_eager_model_and_resumes(tmp_path, caplog):
    make_trainer(tmp_path / "eager").train()
    evaluated = []
    counters = torch._dynamo.utils.counters
    counters.clear()
    with caplog.at_level(logging.INFO, logger="segdet.train"):
        straight = make_trainer(tmp_path / "straight", compile=True,
                                evaluate_fn=lambda m: evaluated.append(type(m).__name__) or {})
        straight.train()
    assert counters["stats"]["unique_graphs"] > 0  # the forward went through dynamo
    assert caplog.text.count("First step with torch.compile took") == 1
    assert evaluated == ["DummyDetector"]  # evaluation gets the eager module, not the compiled wrapper
    # The checkpoint holds the eager module's state_dict: no "_orig_mod." prefixes, loadable by eval/predict.
    assert _checkpoint_model_keys(tmp_path / "straight") == _checkpoint_model_keys(tmp_path / "eager")
    assert type(straight.model).__name__ == "DummyDetector"

    first = make_trainer(tmp_path / "resumed", compile=True, hooks=[_CrashAfter(3)])
    with pytest.raises(KeyboardInterrupt):
        first.train()
    resumed = make_trainer(tmp_path / "resumed", compile=True)
    assert resumed.resume_or_start(resume=True) == 3
    assert resumed.train().iteration == 6
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


def _recording_compile(record):
    """torch.compile with an aot_eager-like backend that notes the dtype of every convolution in the forward
    graphs it receives (what inductor would compile)."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func

    def forward_compiler(gm, example_inputs):
        for node in gm.graph.nodes:
            if node.op == "call_function" and node.target is torch.ops.aten.convolution.default:
                record.append(node.meta["val"].dtype)
        return make_boxed_func(gm.forward)

    backend = aot_autograd(fw_compiler=forward_compiler, bw_compiler=lambda gm, _: make_boxed_func(gm.forward))
    real_compile = torch.compile
    return lambda model, **kwargs: real_compile(model, backend=backend, **kwargs)


@pytest.mark.parametrize("amp,dtype", [("bf16", torch.bfloat16), ("none", torch.float32)])
def test_autocast_reaches_the_compiled_graph(tmp_path, monkeypatch, amp, dtype):
    record = []
    monkeypatch.setattr(torch, "compile", _recording_compile(record))
    trainer = make_trainer(tmp_path, compile=True, amp=amp, max_iter=2)
    assert trainer.train().iteration == 2
    assert record and set(record) == {dtype}
    assert math.isfinite(trainer.last_step.loss)


def _train_records(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "loss" in r]


@pytest.mark.slow
def test_compiled_maskrcnn_matches_eager_and_resumes(tmp_path, monkeypatch, caplog):
    # float32: the tolerance is for inductor reordering float32 ops (train.amp=auto would be bf16 on this CPU)
    common = ["train.max_iter=2", "train.checkpoint_period=1", "train.amp=none"]
    assert run_train(tmp_path / "eager", monkeypatch, *common) == 0
    with caplog.at_level(logging.INFO, logger="segdet.train"):
        assert run_train(tmp_path / "compiled", monkeypatch, *common, "train.compile=true") == 0
    assert "First step with torch.compile took" in caplog.text
    eager, compiled = _train_records(tmp_path / "eager" / "run"), _train_records(tmp_path / "compiled" / "run")
    assert [r["iteration"] for r in compiled] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in compiled)
    for key in [k for k in eager[0] if k.startswith("loss")]:
        assert compiled[0][key] == pytest.approx(eager[0][key], rel=LOSS_RTOL), key
    assert _checkpoint_model_keys(tmp_path / "compiled" / "run") == _checkpoint_model_keys(tmp_path / "eager" / "run")

    # Resume the compiled run (same command, one iteration more).
    assert run_train(tmp_path / "compiled", monkeypatch, "train.max_iter=3", "train.checkpoint_period=1",
                     "train.compile=true") == 0
    resumed = _train_records(tmp_path / "compiled" / "run")
    assert [r["iteration"] for r in resumed] == [1, 2, 3]
    assert read_checkpoint(find_last_checkpoint(tmp_path / "compiled" / "run"))["iteration"] == 3


@pytest.mark.slow
def test_compiled_maskrcnn_trains_under_bf16_autocast(tmp_path, monkeypatch):
    assert run_train(tmp_path, monkeypatch, "train.amp=bf16", "train.compile=true") == 0
    records = _train_records(tmp_path / "run")
    assert len(records) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in records)


def _ddp_worker(rank, world_size, init_file, run_dir, queue):
    import torch.distributed as dist

    from segdet.engine.distributed import DistInfo

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        trainer = make_trainer(run_dir, compile=True,
                               dist=DistInfo(rank=rank, world_size=world_size, local_rank=rank,
                                             device=torch.device("cpu")))
        # Each rank its own noise in the dummy's forward: only all-reduced gradients keep the replicas equal, which
        # the CheckpointHook checks after training (it raises otherwise).
        torch.manual_seed(100 + rank)
        trainer.train()
        queue.put((rank, _checkpoint_model_keys(run_dir) if rank == 0 else None))
    except BaseException as exc:  # noqa: BLE001 - report the failure instead of hanging the parent on the queue
        queue.put((rank, repr(exc)))
        raise
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_compiled_training_under_ddp_keeps_replicas_in_sync(tmp_path):
    import torch.multiprocessing as mp

    make_trainer(tmp_path / "eager").train()
    ctx = mp.get_context("spawn")  # a fresh interpreter each: dynamo's and inductor's state do not survive fork
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, str(tmp_path / "init"), str(tmp_path / "ddp"), queue))
             for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=600) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0], results
    assert results[0] == _checkpoint_model_keys(tmp_path / "eager")
