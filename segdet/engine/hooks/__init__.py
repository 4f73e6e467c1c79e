"""Hooks of the training loop (segdet.engine.trainer.Trainer), one concept per module; base.py lists the events."""
from .base import HookBase
from .checkpoint import CheckpointHook
from .evaluation import EvalHook
from .metrics import MetricsHook
from .nonfinite import NonFiniteHook
from .overlays import OverlayHook
from .signals import SignalHook, StopRequest

__all__ = ["HookBase", "CheckpointHook", "EvalHook", "MetricsHook", "NonFiniteHook", "OverlayHook", "SignalHook",
           "StopRequest"]
