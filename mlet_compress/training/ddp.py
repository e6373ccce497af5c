"""Distributed data-parallel helpers: process-group setup from ``torchrun``'s environment and sharding.

Under ``torchrun --nproc-per-node N`` each process reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; the
process group uses ``gloo`` on CPU and ``nccl`` on CUDA. Every rank draws the same seeded permutation
of the training rows per epoch and takes every N-th row of it (DistributedSampler-style, padded by
wrapping so every rank runs the same number of steps). Gloo all-reduces sparse gradients, so sparse
tables stay sparse on CPU; NCCL does not, so on GPU the tables are created with dense gradients.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from ..errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """The process's place in the job (``world_size == 1`` when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes outputs and reports progress."""
        return self.rank == 0


def resolve_device(spec: str, info: DistInfo) -> torch.device:
    """``auto`` → ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``; other values as given.

    Raises:
        ConfigError: CUDA requested but not available.
    """
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r} requested but CUDA is not available; use --device cpu")
        if spec == "cuda":
            spec = f"cuda:{info.local_rank if info.distributed else torch.cuda.current_device()}"
    return torch.device(spec)


def setup(device_spec: str = "auto") -> DistInfo:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE > 1``); no-op otherwise.

    Reuses an already-initialised default group (tests, notebooks).

    Returns:
        The :class:`DistInfo` of this process.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())),
                        dist.get_backend())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    probe = DistInfo(rank, world, local_rank)
    use_cuda = resolve_device(device_spec, probe).type == "cuda"
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local_rank, backend)


def shard_indices(perm: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's share of an epoch permutation: ``perm[rank::world]`` after padding ``perm`` by wrapping
    to a multiple of ``world`` (every rank gets the same number of rows).

    Example:
        >>> shard_indices(torch.arange(5), DistInfo(rank=1, world_size=2)).tolist()
        [1, 3, 0]
    """
    if not info.distributed:
        return perm
    n = perm.numel()
    total = -(-n // info.world_size) * info.world_size
    if total > n:
        perm = torch.cat([perm, perm[: total - n]])
    return perm[info.rank :: info.world_size]


def per_rank_batch(batch_size: int, info: DistInfo) -> int:
    """The per-process batch of a global ``batch_size``.

    Raises:
        ConfigError: ``batch_size`` is not divisible by the world size.
    """
    if batch_size % info.world_size:
        raise ConfigError(
            f"batch_size {batch_size} is not divisible by the {info.world_size} DDP processes; "
            f"use a multiple of {info.world_size} (it is the global batch)"
        )
    return batch_size // info.world_size


class SparseGradSync:
    """All-reduce (mean) the sparse gradients of parameters that DDP was told to ignore.

    DDP only recognises sparse gradients on ``nn.Embedding``/``nn.EmbeddingBag`` modules; other lookup
    modules with sparse tables (MLET's ``table``) are excluded from DDP and synchronised here after each
    backward (gloo all-reduces sparse COO tensors in place).
    """

    def __init__(self, params: list[torch.nn.Parameter], info: DistInfo) -> None:
        self.params = params
        self.info = info

    def __call__(self) -> None:
        for p in self.params:
            g = p.grad
            if g is None:  # every rank must join every all-reduce, in the same order
                g = torch.sparse_coo_tensor(torch.zeros(1, 0, dtype=torch.long, device=p.device),
                                            torch.zeros(0, *p.shape[1:], dtype=p.dtype, device=p.device), p.shape)
            g = g.coalesce()
            dist.all_reduce(g)
            p.grad = g / self.info.world_size


def wrap_ddp(model: torch.nn.Module, device: torch.device, info: DistInfo) -> tuple[torch.nn.Module, Optional[SparseGradSync]]:
    """Wrap ``model`` in ``DistributedDataParallel``; sparse tables DDP cannot reduce get a :class:`SparseGradSync`.

    Sparse lookup tables of modules that are not ``nn.Embedding``/``nn.EmbeddingBag`` (MLET's ``table``)
    are excluded from DDP, broadcast from rank 0 once, and all-reduced sparsely by the returned hook.

    Returns:
        ``(ddp_model, hook_or_None)``: call the hook after every ``backward()``.
    """
    names, params = [], []
    for mname, mod in model.named_modules():
        if isinstance(mod, (torch.nn.Embedding, torch.nn.EmbeddingBag)) or not getattr(mod, "sparse", False):
            continue
        for pname in ("table", "weight"):
            p = getattr(mod, pname, None)
            if isinstance(p, torch.nn.Parameter) and p.requires_grad:
                names.append(f"{mname}.{pname}" if mname else pname)
                params.append(p)
    hook = None
    if params:
        if hasattr(DDP, "_set_params_and_buffers_to_ignore_for_model"):
            DDP._set_params_and_buffers_to_ignore_for_model(model, names)
            with torch.no_grad():
                for p in params:
                    dist.broadcast(p.data, 0)
            hook = SparseGradSync(params, info)
        else:  # pragma: no cover - very old/new torch without the ignore list: fall back to dense gradients
            for mod in model.modules():
                if not isinstance(mod, (torch.nn.Embedding, torch.nn.EmbeddingBag)) and getattr(mod, "sparse", False):
                    mod.sparse = False
    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids), hook


def barrier(info: DistInfo) -> None:
    """Synchronise all ranks (no-op when not distributed)."""
    if info.distributed and dist.is_initialized():
        dist.barrier()


def all_mean(value: float, info: DistInfo) -> float:
    """The mean of a Python float over ranks (the value itself when not distributed)."""
    if not info.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if info.backend == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def is_main_process() -> bool:
    """False on DDP ranks other than 0 of an initialised process group (only rank 0 prints or writes)."""
    return not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)


def teardown() -> None:
    """Leave the process group that :func:`setup` joined (no-op when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed_session() -> Iterator[None]:
    """Run a command that may join a ``torchrun`` process group, and leave the group when it ends.

    ``train``/``compare`` join the group lazily (:func:`setup`); this context destroys it on the way
    out, also after an error, so every rank exits cleanly. Outside ``torchrun`` it does nothing.

    Example:
        >>> with distributed_session():
        ...     is_main_process()
        True
    """
    try:
        yield
    finally:
        teardown()


__all__ = ["DistInfo", "SparseGradSync", "wrap_ddp", "setup", "resolve_device", "shard_indices", "per_rank_batch",
           "barrier", "all_mean", "is_main_process", "teardown", "distributed_session"]
