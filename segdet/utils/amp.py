"""Mixed precision: the one place that turns an ``amp`` setting into an autocast context.

``amp`` is "none", "bf16", "fp16" or "auto" everywhere it appears (train.amp, eval/predict amp=,
bench_model --amp); "auto" is bf16 where the device runs it natively (a CPU with avx512_bf16/amx_bf16,
a GPU with bf16) and float32 elsewhere, so a default of "auto" never makes an old CPU emulate bf16. Under autocast the convolutions and linear layers run in the low-precision
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
    """True when this CPU has native bf16 arithmetic (x86 AVX512-BF16 or AMX-BF16, Arm BF16), which oneDNN uses.

    The CPU's flags decide where they can be read: torch's own check
    (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) is also true on AVX-512 CPUs without bf16 instructions,
    where oneDNN emulates bf16 (slower than float32)."""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            words = set(f.read().split())
        return bool(words & {"avx512_bf16", "amx_bf16", "bf16"})
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


AMP_CHOICES = (*AMP_DTYPES, "auto")


def check_amp(amp: str, *, key: str = "amp") -> None:
    """Raise ValueError naming ``key`` unless ``amp`` is one of "none", "bf16", "fp16", "auto"."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"{key} must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")


def native_bf16(device: torch.device | str) -> bool:
    """True when ``device`` runs bf16 natively: a CPU with avx512_bf16/amx_bf16, a CUDA GPU with bf16."""
    device = torch.device(device)
    if device.type == "cpu":
        return cpu_has_bf16()
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return False


def resolve_amp(amp: str, device: torch.device | str, *, key: str = "amp") -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None for "none").

    "auto": bf16 where ``native_bf16(device)``, else None (logged either way). Raises ValueError naming ``key``
    for an unknown value. Logs a warning when the device cannot
    serve the request well: bf16 on a CPU without native bf16 (emulated, slower than float32), fp16
    on the CPU (few fp16 kernels there), bf16 on a GPU without bf16 support.
    """
    check_amp(amp, key=key)
    device = torch.device(device)
    if amp == "auto":
        dtype = torch.bfloat16 if native_bf16(device) else None
        logger.info("%s=auto: %s on %s", key, "bf16 autocast" if dtype is not None else
                    "float32 (no native bf16 here)", device)
        return dtype
    dtype = AMP_DTYPES[amp]
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
