"""Process-group set-up for torchrun launches and small collective helpers.

A single process (no ``WORLD_SIZE`` in the environment, or ``WORLD_SIZE=1``) needs no process group; every helper
here then degrades to the local answer, so the trainer has one code path for 1 and N processes.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job: global rank, world size, rank on its node, and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from exc


def env_world_size() -> int:
    """World size announced by the launcher (torchrun sets ``WORLD_SIZE``), 1 when launched directly."""
    return _env_int("WORLD_SIZE", 1)


def env_rank() -> int:
    return _env_int("RANK", 0)


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """Map the ``device`` option ("auto" | "cpu" | "cuda" | "cuda:N") to a torch.device for this process.

    "auto" picks CUDA when a GPU is visible. Under torchrun each process takes the GPU of its local rank.
    """
    if not isinstance(device, str):
        raise TypeError(f"device must be a string 'auto', 'cpu' or 'cuda', got {type(device).__name__}")
    name = device.lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device={device!r} was requested but CUDA is not available on this machine")
        if name == "cuda":
            index = local_rank % torch.cuda.device_count()
            return torch.device("cuda", index)
        return torch.device(name)
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def _rendezvous_store(rank: int, world_size: int, timeout: datetime.timedelta) -> dist.Store:
    """The key-value store the process group is set up through, one namespace per torchrun attempt.

    Under ``torchrun --max-restarts`` the store outlives the workers; with plain ``env://`` the restarted
    workers found the previous attempt's gloo addresses in it and failed connecting to dead peers. Keys are
    therefore prefixed with TORCHELASTIC_RESTART_COUNT.
    """
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    base = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
        is_master=(rank == 0 and not agent_store), timeout=timeout, wait_for_workers=False,
    )
    return dist.PrefixStore(f"segdet/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", base)


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...).

    CPU jobs use gloo, CUDA jobs use NCCL for CUDA tensors; gloo is registered for CPU tensors in both cases because
    small bookkeeping collectives (stop flags, pickled objects) run on the CPU. Calling it again is harmless.
    """
    world_size = env_world_size()
    rank = env_rank()
    local_rank = _env_int("LOCAL_RANK", rank)
    torch_device = resolve_device(device, local_rank)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    if world_size > 1 and not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch_device.type == "cuda" else "gloo"
        kwargs = {}
        if torch_device.type == "cuda":
            kwargs["device_id"] = torch_device
        timeout = datetime.timedelta(seconds=timeout_s)
        dist.init_process_group(
            backend=backend, store=_rendezvous_store(rank, world_size, timeout), rank=rank, world_size=world_size,
            timeout=timeout, **kwargs
        )
        logger.info("Joined process group: rank %d of world size %d (backend %s)", rank, world_size, backend)
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=torch_device)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_initialized() and get_world_size() > 1:
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """Every rank receives ``src``'s (picklable) ``obj``."""
    if not is_initialized() or get_world_size() == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_object(obj) -> list:
    """List of every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not is_initialized() or get_world_size() == 1:
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def any_across_ranks(*flags: bool) -> list[bool]:
    """Element-wise logical OR of boolean flags over all ranks, so every rank takes the same branch."""
    if not is_initialized() or get_world_size() == 1:
        return [bool(f) for f in flags]
    t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def destroy() -> None:
    if is_initialized():
        dist.destroy_process_group()
