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
