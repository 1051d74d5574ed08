"""Small distributed helpers: plain ``torch.distributed`` launched by ``torchrun`` or SLURM ``srun``.

Everything the rest of the package needs from ``torch.distributed`` goes through this module
(one small module, as in open_clip's training code), so that the single-process path never touches a process
group and the gloo test path runs the same code as NCCL on GPUs.

Contrastive losses rely on :func:`all_gather_with_grad` (open_clip's
``gather_with_grad``): gathered features keep their autograd graph, and the backward pass sums the
gradients that all ranks send to each rank's slot. Together with DDP's gradient averaging this makes the
per-rank "local" loss produce exactly the gradient of the single-process loss on the global batch.
"""
from __future__ import annotations

import datetime
import functools
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .device import resolve_device

_logger = logging.getLogger(__name__)

__all__ = [
    "DistEnv",
    "world_info_from_env",
    "init_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "barrier",
    "broadcast_object",
    "all_gather_with_grad",
    "all_gather_no_grad",
    "all_reduce_sum",
    "unwrap_model",
    "cleanup",
]

# Environment variables, in order of precedence: torchrun first, then SLURM (srun, one task per process).
_LOCAL_RANK_VARS = ("LOCAL_RANK", "SLURM_LOCALID")
_RANK_VARS = ("RANK", "SLURM_PROCID")
_WORLD_SIZE_VARS = ("WORLD_SIZE", "SLURM_NTASKS")
_DEFAULT_MASTER_PORT = "29500"


@dataclass
class DistEnv:
    """Where this process sits in the job, as returned by :func:`init_distributed`."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _first_env_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return default


def world_info_from_env() -> tuple[int, int, int]:
    """Return ``(local_rank, rank, world_size)`` from torchrun or SLURM variables (defaults ``0, 0, 1``).

    torchrun's ``LOCAL_RANK``/``RANK``/``WORLD_SIZE`` take precedence over SLURM's
    ``SLURM_LOCALID``/``SLURM_PROCID``/``SLURM_NTASKS``, so torchrun started inside a SLURM allocation
    behaves as torchrun.
    """
    local_rank = _first_env_int(_LOCAL_RANK_VARS, 0)
    rank = _first_env_int(_RANK_VARS, 0)
    world_size = _first_env_int(_WORLD_SIZE_VARS, 1)
    return local_rank, rank, world_size


def _launched_by_slurm_only() -> bool:
    return "WORLD_SIZE" not in os.environ and "SLURM_NTASKS" in os.environ


def _prepare_env_init(rank: int, world_size: int) -> None:
    """Make ``env://`` work under plain ``srun``: it needs ``MASTER_ADDR`` (set by the user's job script)."""
    if not _launched_by_slurm_only():
        return
    if "MASTER_ADDR" not in os.environ:
        raise RuntimeError(
            "Running under SLURM with several tasks but MASTER_ADDR is not set; export MASTER_ADDR "
            "(e.g. the first host of $SLURM_JOB_NODELIST) and MASTER_PORT in the job script."
        )
    os.environ.setdefault("MASTER_PORT", _DEFAULT_MASTER_PORT)
    os.environ.setdefault("RANK", str(rank))
    os.environ.setdefault("WORLD_SIZE", str(world_size))


def init_distributed(device: str = "auto", backend: str | None = None, timeout_s: int = 1800) -> DistEnv:
    """Initialise the default process group when launched with several processes; return a :class:`DistEnv`.

    Uses ``env://`` (torchrun or SLURM variables), ``nccl`` on CUDA and ``gloo`` on CPU unless ``backend``
    is given. A single process gets a :class:`DistEnv` without any process group. Calling it again after the
    group exists returns the current state.
    """
    local_rank, rank, world_size = world_info_from_env()
    resolved_device = resolve_device(device, local_rank)
    if resolved_device.type == "cuda":
        torch.cuda.set_device(resolved_device)

    if dist.is_available() and dist.is_initialized():
        return DistEnv(
            rank=dist.get_rank(),
            local_rank=local_rank,
            world_size=dist.get_world_size(),
            device=resolved_device,
            backend=str(dist.get_backend()),
        )
    if world_size <= 1:
        return DistEnv(rank=0, local_rank=local_rank, world_size=1, device=resolved_device, backend=None)

    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this build of PyTorch")
    backend = backend or ("nccl" if resolved_device.type == "cuda" else "gloo")
    _prepare_env_init(rank, world_size)
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    _logger.info("Initialised %s process group: rank %d/%d on %s", backend, rank, world_size, resolved_device)
    return DistEnv(rank=rank, local_rank=local_rank, world_size=world_size, device=resolved_device, backend=backend)


def _is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if _is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if _is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def _is_distributed() -> bool:
    return get_world_size() > 1


def barrier() -> None:
    if _is_distributed():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Return ``src``'s ``obj`` on every rank (picklable objects only); identity in a single process."""
    if not _is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@functools.lru_cache(maxsize=None)
def _autograd_all_gather_fn() -> Callable[[Tensor], Tensor]:
    """Pick the newest differentiable all-gather this torch offers (its API moved between torch releases)."""
    try:
        from torch.distributed import _functional_collectives as fc
    except ImportError:  # pragma: no cover - very old torch
        fc = None
    for name in ("all_gather_single_autograd", "all_gather_tensor_autograd"):
        fn = getattr(fc, name, None) if fc is not None else None
        if fn is not None:
            return lambda x, _fn=fn: _fn(x, 0, dist.group.WORLD)

    import torch.distributed.nn.functional as dist_fn

    return lambda x: torch.cat(dist_fn.all_gather(x), dim=0)


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0, in rank order, keeping the autograd graph.

    Backward sends each slot's gradient back to the rank that owns it, summed over ranks. Only equal
    per-rank sizes are supported (use ``drop_last=True`` samplers); unequal sizes are not detected.
    Identity in a single process.
    """
    if not _is_distributed():
        return x
    return _autograd_all_gather_fn()(x.contiguous())


@torch.no_grad()
def all_gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0, in rank order, without gradient (equal sizes only)."""
    if not _is_distributed():
        return x.detach()
    x = x.detach().contiguous()
    chunks = [torch.empty_like(x) for _ in range(get_world_size())]
    dist.all_gather(chunks, x)
    return torch.cat(chunks, dim=0)


@torch.no_grad()
def all_reduce_sum(x: Tensor) -> Tensor:
    """Return a summed-over-ranks copy of ``x`` (no gradient); a detached copy in a single process."""
    reduced = x.detach().clone()
    if _is_distributed():
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced


def _wrapped_child(m: nn.Module) -> nn.Module | None:
    if isinstance(m, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return m.module
    orig = getattr(m, "_orig_mod", None)  # torch.compile's OptimizedModule
    if isinstance(orig, nn.Module):
        return orig
    return None


def unwrap_model(m: nn.Module) -> nn.Module:
    """Strip DDP / DataParallel / ``torch.compile`` wrappers, in any nesting order."""
    child = _wrapped_child(m)
    while child is not None:
        m = child
        child = _wrapped_child(m)
    return m


def cleanup() -> None:
    """Destroy the default process group if one exists."""
    if _is_initialized():
        dist.destroy_process_group()
