import pytest
import torch
from torch import nn

from segdet.engine.optim import build_adamw, build_sgd, param_groups


def _model():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.GroupNorm(2, 4), nn.Conv2d(4, 2, 1, bias=False))
    m[3].weight.requires_grad_(False)
    return m


def test_norm_and_bias_decay_groups():
    m = _model()
    groups = {g["weight_decay"]: g["params"] for g in param_groups(m, weight_decay=1e-4, weight_decay_norm=0.0,
                                                                     weight_decay_bias=1e-5)}
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(groups[0.0]) == ids([m[1].weight, m[1].bias, m[2].weight, m[2].bias])
    assert ids(groups[1e-5]) == ids([m[0].bias])
    assert ids(groups[1e-4]) == ids([m[0].weight])  # the frozen conv is left out


def test_builders():
    opt = build_sgd(_model(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 1e-4}
    assert isinstance(build_adamw(_model(), lr=1e-3), torch.optim.AdamW)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_sgd(frozen, lr=0.1)


@pytest.mark.parametrize("build,kwargs", [(build_sgd, {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2}),
                                          (build_adamw, {"lr": 1e-2, "weight_decay": 0.05})])
def test_fused_is_default_on_cpu_and_matches_the_loop(build, kwargs):
    # No parameter whose gradient is pure rounding noise (a conv bias right before a norm), which Adam would amplify.
    def make():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.GroupNorm(2, 4), nn.Conv2d(4, 2, 1))

    torch.manual_seed(0)
    m_fused, m_loop = make(), make()
    m_loop.load_state_dict(m_fused.state_dict())
    initial = [p.detach().clone() for p in m_fused.parameters()]
    opt_fused, opt_loop = build(m_fused, **kwargs), build(m_loop, fused=False, **kwargs)
    assert opt_fused.defaults["fused"] is True and not opt_loop.defaults["fused"]
    x = torch.randn(2, 3, 8, 8)
    for _ in range(5):
        for m, opt in ((m_fused, opt_fused), (m_loop, opt_loop)):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
    for a, b in zip(m_fused.parameters(), m_loop.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all((a != a0).any() for a, a0 in zip(m_fused.parameters(), initial))  # every parameter was updated
