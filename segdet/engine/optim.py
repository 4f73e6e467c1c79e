"""Optimizers with separate weight decay for normalisation layers and biases."""
from __future__ import annotations

import torch
from torch import nn

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def param_groups(
    model: nn.Module, *, weight_decay: float, weight_decay_norm: float | None = None,
    weight_decay_bias: float | None = None,
) -> list[dict]:
    """Trainable parameters split by weight decay: normalisation weights/biases get ``weight_decay_norm`` and other
    biases ``weight_decay_bias`` (each defaults to ``weight_decay``). Decaying a norm's scale only fights the
    normalisation it follows, so detectron2-style configs set it to 0. Frozen parameters are left out.
    """
    wd_norm = weight_decay if weight_decay_norm is None else weight_decay_norm
    wd_bias = weight_decay if weight_decay_bias is None else weight_decay_bias
    groups: dict[float, list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module in model.modules():
        is_norm = isinstance(module, _NORM_TYPES)
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            wd = wd_norm if is_norm else wd_bias if name == "bias" else weight_decay
            groups.setdefault(float(wd), []).append(p)
    if not groups:
        raise ValueError("model has no trainable parameters (every parameter has requires_grad=False)")
    # Sorted so the group order, and thus the optimizer state_dict layout, is the same in every process.
    return [{"params": ps, "weight_decay": wd} for wd, ps in sorted(groups.items())]


def _use_fused(groups: list[dict], fused: bool | None) -> bool:
    """``fused=None`` picks the fused (single-kernel) update when torch has one for every parameter: floating point
    tensors on the CPU or CUDA. On the CPU it is ~4x faster than the per-parameter loop (maskrcnn_small's 12M
    parameters: AdamW step 12 ms vs 53 ms); the results match up to float rounding."""
    if fused is not None:
        return bool(fused)
    params = [p for g in groups for p in g["params"]]
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def build_sgd(
    model: nn.Module, *, lr: float, momentum: float = 0.9, weight_decay: float = 1e-4,
    weight_decay_norm: float | None = 0.0, weight_decay_bias: float | None = None, nesterov: bool = False,
    fused: bool | None = None,
) -> torch.optim.SGD:
    """SGD with momentum over :func:`param_groups` of ``model``; ``lr`` is the learning rate for the global batch.
    ``fused``: None = the fused update where torch has one (see :func:`_use_fused`)."""
    groups = param_groups(
        model, weight_decay=weight_decay, weight_decay_norm=weight_decay_norm, weight_decay_bias=weight_decay_bias
    )
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, fused=_use_fused(groups, fused))


def build_adamw(
    model: nn.Module, *, lr: float, betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.05,
    weight_decay_norm: float | None = 0.0, weight_decay_bias: float | None = 0.0, eps: float = 1e-8,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` of ``model``; ``fused``: None = the fused update where torch has one."""
    groups = param_groups(
        model, weight_decay=weight_decay, weight_decay_norm=weight_decay_norm, weight_decay_bias=weight_decay_bias
    )
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=_use_fused(groups, fused))
