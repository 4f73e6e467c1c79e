import functools
import io

import pytest
import torch

from segdet.engine.lr_scheduler import WarmupLR, build_lr_scheduler, describe_max_iter_change


def _lrs(sched, n):
    out = []
    for _ in range(n):
        out.append(sched.optimizer.param_groups[0]["lr"])
        sched.optimizer.step()
        sched.step()
    return out


def _opt(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_linear_warmup_then_steps():
    sched = build_lr_scheduler(_opt(2.0), max_iter=100, policy="step", steps=(0.5, 0.8), gamma=0.1,
                               warmup_iters=10, warmup_factor=0.01)
    lrs = _lrs(sched, 100)
    assert lrs[0] == pytest.approx(0.02)
    assert lrs[5] == pytest.approx(2.0 * (0.01 * 0.5 + 0.5))
    assert lrs[10] == pytest.approx(2.0) and lrs[49] == pytest.approx(2.0)
    assert lrs[50] == pytest.approx(0.2) and lrs[79] == pytest.approx(0.2)
    assert lrs[80] == pytest.approx(0.02)


def test_cosine_reaches_final_factor():
    sched = WarmupLR(_opt(1.0), max_iter=50, policy="cosine", warmup_iters=0, final_factor=0.1)
    lrs = _lrs(sched, 51)
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[25] == pytest.approx(0.1 + 0.9 * 0.5)
    assert lrs[50] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_state_round_trip_is_weights_only_loadable():
    sched = build_lr_scheduler(_opt(), max_iter=20, steps=(0.5,), warmup_iters=4)
    _lrs(sched, 7)
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    fresh = build_lr_scheduler(_opt(), max_iter=20, steps=(0.5,), warmup_iters=4)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert _lrs(fresh, 13) == _lrs(sched, 13)


@pytest.mark.parametrize("kwargs, match", [
    ({"policy": "linear"}, "policy"),
    ({"steps": (1.5,)}, "fractions"),
    ({"warmup_factor": 0.0}, "warmup_factor"),
])
def test_bad_values_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_lr_scheduler(_opt(), max_iter=10, **kwargs)


def test_schedule_shape_comes_from_the_resuming_config():
    short = build_lr_scheduler(_opt(), max_iter=10, steps=(0.5,), warmup_iters=0)
    _lrs(short, 4)
    longer = build_lr_scheduler(_opt(), max_iter=100, steps=(0.5,), warmup_iters=0)
    longer.load_state_dict(short.state_dict())
    assert longer.last_epoch == 4 and longer.milestones == [50]
    lrs = _lrs(longer, 47)  # iterations 4..50
    assert lrs[-2] == 1.0 and lrs[-1] == pytest.approx(0.1)


def test_describe_max_iter_change_names_what_moves():
    step = functools.partial(build_lr_scheduler, policy="step", steps=(0.5,), warmup_iters=10)
    new = step(_opt(2.0), max_iter=200)
    text = describe_max_iter_change(step, new, old_max_iter=100, iteration=60)
    # old: lr drop at 50, so 0.2 at iteration 60; new: drop at 100, still 2.0
    assert text == ("step schedule stretched: lr drops moved from iterations [50] to [100]; "
                    "lr at resume (iteration 60) 2, 0.2 under the old schedule")
    constant = functools.partial(build_lr_scheduler, policy="constant", warmup_iters=0, warmup_factor=1.0)
    text = describe_max_iter_change(constant, constant(_opt(), max_iter=30), old_max_iter=20, iteration=5)
    assert text.startswith("constant schedule unchanged;")
    assert "no lr schedule" in describe_max_iter_change(None, None, old_max_iter=20, iteration=5)
