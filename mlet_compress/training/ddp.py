"""Distributed data-parallel helpers: process-group setup from ``torchrun``'s environment and sharding.

Under ``torchrun --nproc-per-node N`` each process reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; the
process group uses ``gloo`` on CPU and ``nccl`` on CUDA. Every rank draws the same seeded permutation
of the training rows per epoch and takes every N-th row of it (DistributedSampler-style, padded by
wrapping so every rank runs the same number of steps). Gloo all-reduces sparse gradients, so sparse
tables stay sparse on CPU; NCCL does not, so on GPU the tables are created with dense gradients.

Sparse table gradients never go through DDP's reducer: :func:`wrap_ddp` excludes every table with
sparse gradients (``nn.Embedding(sparse=True)`` included) from DDP and :class:`SparseGradSync`
all-reduces them after ``backward()``, one blocking all-reduce at a time on the training thread, each on
a coalesced gradient that owns its memory. DDP's reducer would instead launch one asynchronous gloo
sparse all-reduce per table from inside ``backward()``; ProcessGroupGloo runs those on its two worker
threads, concurrently with each other and with the rest of the backward pass, on gradients whose
indices and values are autograd views sharing storage with the batch's id tensor and with the other
tables' gradients. That raced and corrupted the heap (``munmap_chunk(): invalid pointer``,
``malloc(): unaligned tcache chunk detected``, SIGSEGV): issue 9's crash of ``torchrun
--nproc-per-node 2 ... train --compare`` in the single-layer run.
"""

from __future__ import annotations

import contextlib
import os
import warnings
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
            raise ConfigError(f"device {spec!r} requested but CUDA is not available; use {{option}}", option="device", value="cpu")
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
    _avoid_detail_debug_crash(backend)
    dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local_rank, backend)


def _avoid_detail_debug_crash(backend: str) -> None:
    """Lower ``TORCH_DISTRIBUTED_DEBUG=DETAIL`` to ``INFO`` for a gloo group (with a warning).

    Under DETAIL, ``init_process_group`` wraps the gloo backend in a ``ProcessGroupWrapper``, and the
    ``DistributedDataParallel`` constructor's logger (``c10d::Logger::set_env_variables``)
    casts that wrapper (``static_cast``) to ``ProcessGroupGloo`` to read its thread count: every rank dies
    with SIGSEGV inside ``DistributedDataParallel(...)``, whatever the model (seen with torch 2.13; the
    cast is in every torch since backends became per-device).
    """
    if backend != "gloo" or not hasattr(dist, "get_debug_level"):
        return
    if dist.get_debug_level() == dist.DebugLevel.DETAIL:
        warnings.warn(
            "TORCH_DISTRIBUTED_DEBUG=DETAIL crashes DistributedDataParallel on the gloo backend (torch's DDP logger "
            "casts the debug wrapper of the process group to ProcessGroupGloo); using INFO instead",
            RuntimeWarning, stacklevel=3,
        )
        dist.set_debug_level(dist.DebugLevel.INFO)


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


#: Parameter names of lookup tables inside a module with ``sparse=True`` (``nn.Embedding``/``EmbeddingBag``
#: and hashed twins: ``weight``; MLET: ``table``; low-rank: ``A``).
SPARSE_TABLE_PARAM_NAMES = ("weight", "table", "A")


def sparse_table_params(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """``(qualified name, parameter)`` of every trainable lookup table whose module has ``sparse=True``.

    These are the parameters that receive sparse COO gradients; the names are those of
    ``model.named_parameters()`` (a table shared by several modules is listed once).

    Example:
        >>> m = torch.nn.ModuleDict({"a": torch.nn.Embedding(4, 2, sparse=True), "b": torch.nn.Linear(2, 1)})
        >>> [name for name, _ in sparse_table_params(m)]
        ['a.weight']
    """
    names = {id(p): n for n, p in model.named_parameters()}
    out, seen = [], set()
    for _, mod in model.named_modules():
        if not getattr(mod, "sparse", False):
            continue
        for pname in SPARSE_TABLE_PARAM_NAMES:
            p = mod._parameters.get(pname)
            if isinstance(p, torch.nn.Parameter) and p.requires_grad and id(p) not in seen and id(p) in names:
                seen.add(id(p))
                out.append((names[id(p)], p))
    return out


def empty_sparse_grad(p: torch.Tensor) -> torch.Tensor:
    """A valid, coalesced sparse COO gradient of ``p`` with no rows (a rank whose batch touched none).

    Built with ``check_invariants=True``: indices ``[1, 0]`` (int64), values ``[0, *p.shape[1:]]``.

    Example:
        >>> g = empty_sparse_grad(torch.zeros(5, 3))
        >>> g.shape, g._nnz(), g.is_coalesced()
        (torch.Size([5, 3]), 0, True)
    """
    return torch.sparse_coo_tensor(
        torch.empty(1, 0, dtype=torch.long, device=p.device),
        torch.empty(0, *p.shape[1:], dtype=p.dtype, device=p.device),
        tuple(p.shape), check_invariants=True, is_coalesced=True,
    )


def check_sparse_grad(g: torch.Tensor, p: torch.Tensor, where: str) -> None:
    """Validate a sparse table gradient: COO layout, ``p``'s shape and dtype, one sparse dim, int64 indices
    inside ``[0, p.shape[0])`` (what torch's ``check_sparse_tensor_invariants`` checks; about 6 µs).

    A gradient that breaks these would make the gloo all-reduce or the optimizer's unchecked
    ``index_add`` read or write out of bounds; this turns that into a ``RuntimeError``.

    Raises:
        RuntimeError: the gradient is malformed (``where`` says at which stage).
    """
    if g.layout != torch.sparse_coo or g.shape != p.shape or g.dtype != p.dtype or g.sparse_dim() != 1:
        raise RuntimeError(
            f"sparse gradient {where}: expected a sparse COO tensor of shape {tuple(p.shape)} and dtype {p.dtype} "
            f"with 1 sparse dim, got layout={g.layout}, shape={tuple(g.shape)}, dtype={g.dtype}"
        )
    try:
        torch._validate_sparse_coo_tensor_args(g._indices(), g._values(), g.shape)
    except RuntimeError as exc:
        raise RuntimeError(f"sparse gradient {where} violates the COO invariants: {exc}") from exc


class SparseGradSync:
    """All-reduce (mean) the sparse gradients of the lookup tables that :func:`wrap_ddp` kept out of DDP.

    Call it after every ``backward()`` (``fit(..., after_backward=hook)``). For each table, in a fixed
    order on every rank, it takes a coalesced copy of the gradient that owns its memory (never a view of
    the batch's ids or of the upstream gradient; an absent gradient becomes :func:`empty_sparse_grad`),
    validates it, all-reduces it with one blocking gloo sparse all-reduce, validates the result and sets
    ``p.grad`` to the mean. One all-reduce runs at a time, after backward has finished, so no gloo worker
    thread touches a tensor that another thread is using (see the module docstring).
    """

    def __init__(self, params: list[torch.nn.Parameter], info: DistInfo) -> None:
        self.params = params
        self.info = info

    def __call__(self) -> None:
        for p in self.params:
            g = self._owned_grad(p)
            dist.all_reduce(g)  # blocking; every rank joins every all-reduce, in the same order
            check_sparse_grad(g, p, "after the all-reduce")
            p.grad = g.div_(self.info.world_size)

    @staticmethod
    def _owned_grad(p: torch.nn.Parameter) -> torch.Tensor:
        g = p.grad
        if g is None:
            return empty_sparse_grad(p)
        if g.layout != torch.sparse_coo:  # a dense gradient on a sparse table: keep every rank on the sparse path
            g = g.to_sparse(1)
        check_sparse_grad(g, p, "before the all-reduce")
        c = g.coalesce()
        return c.clone() if c is g else c  # coalesce() returns the tensor itself when already coalesced


def wrap_ddp(model: torch.nn.Module, device: torch.device, info: DistInfo) -> tuple[torch.nn.Module, Optional[SparseGradSync]]:
    """Wrap ``model`` in ``DistributedDataParallel``; lookup tables with sparse gradients get a :class:`SparseGradSync`.

    Every table with sparse gradients (``nn.Embedding``/``nn.EmbeddingBag`` with ``sparse=True`` as well
    as MLET, hashed and low-rank tables) is excluded from DDP, broadcast from rank 0 once, and
    all-reduced by the returned hook after each ``backward()``; DDP reduces the dense parameters.

    Returns:
        ``(ddp_model, hook_or_None)``: call the hook after every ``backward()``. When every trainable
        parameter is a sparse table, ``ddp_model`` is ``model`` itself (DDP needs a dense parameter).
    """
    tables = sparse_table_params(model)
    hook = None
    if tables and not hasattr(DDP, "_set_params_and_buffers_to_ignore_for_model"):  # pragma: no cover - very old/new torch
        for mod in model.modules():  # no ignore list: fall back to dense table gradients, reduced by DDP
            if getattr(mod, "sparse", False):
                mod.sparse = False
        tables = []
    if tables:
        names = [n for n, _ in tables]
        ignored = list(getattr(model, "_ddp_params_and_buffers_to_ignore", []) or [])
        DDP._set_params_and_buffers_to_ignore_for_model(model, ignored + [n for n in names if n not in ignored])
        with torch.no_grad():
            for _, p in tables:
                dist.broadcast(p.data, 0)
        hook = SparseGradSync([p for _, p in tables], info)
    table_ids = {id(p) for _, p in tables}
    if not any(p.requires_grad and id(p) not in table_ids for p in model.parameters()):
        return model, hook
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


__all__ = ["DistInfo", "SparseGradSync", "wrap_ddp", "sparse_table_params", "empty_sparse_grad", "check_sparse_grad",
           "setup", "resolve_device", "shard_indices", "per_rank_batch", "barrier", "all_mean", "is_main_process",
           "teardown", "distributed_session"]
