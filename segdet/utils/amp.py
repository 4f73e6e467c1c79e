"""Mixed precision: the one place that turns an ``amp`` setting into an autocast context.

``amp`` is "none", "bf16" or "fp16" everywhere it appears (train.amp, eval/predict amp=,
bench_model --amp). Under autocast the convolutions and linear layers run in the low-precision
dtype; the model casts its heads' outputs to float32, and segdet's box ops register autocast
kernels that run in float32, so box coding, matching, NMS and the losses stay in float32.
"""
from __future__ import annotations

import contextlib
import logging
import os

import torch

logger = logging.getLogger(__name__)

AMP_DTYPES: dict[str, torch.dtype | None] = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_bf16() -> bool:
    """True when this CPU has native bf16 arithmetic (AVX512-BF16 or AMX-BF16), which oneDNN uses."""
    try:
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return True
    except (AttributeError, RuntimeError):
        pass
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def check_amp(amp: str, *, key: str = "amp") -> None:
    """Raise ValueError naming ``key`` unless ``amp`` is one of "none", "bf16", "fp16"."""
    if amp not in AMP_DTYPES:
        raise ValueError(f"{key} must be one of {', '.join(AMP_DTYPES)}, got {amp!r}")


def resolve_amp(amp: str, device: torch.device | str, *, key: str = "amp") -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None for "none").

    Raises ValueError naming ``key`` for an unknown value. Logs a warning when the device cannot
    serve the request well: bf16 on a CPU without native bf16 (emulated, slower than float32), fp16
    on the CPU (few fp16 kernels there), bf16 on a GPU without bf16 support.
    """
    check_amp(amp, key=key)
    dtype = AMP_DTYPES[amp]
    device = torch.device(device)
    if dtype is torch.bfloat16 and device.type == "cpu" and not cpu_has_bf16():
        logger.warning("%s=bf16: this CPU has no native bf16 (avx512_bf16/amx_bf16); bf16 is emulated and "
                       "likely slower than float32", key)
    elif dtype is torch.float16 and device.type == "cpu":
        logger.warning("%s=fp16 on the CPU: few CPU kernels run fp16 natively; bf16 is the CPU's fast format", key)
    elif dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        logger.warning("%s=bf16: this GPU does not support bf16 natively", key)
    return dtype


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """``torch.autocast`` on ``device``'s type with ``dtype``; a no-op context for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
