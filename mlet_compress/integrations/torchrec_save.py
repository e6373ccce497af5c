"""Save a DMP-sharded model's checkpoint without holding every table on one rank.

:func:`save_sharded_checkpoint` walks the tables one at a time: every rank sends its shards of the table
(``ShardedTensor.gather``) to rank ``dst``, which collapses it (MLET: ``T @ P.T``, the product of
:func:`~.torchrec_ebc.product_chunks`) and streams it into the output safetensors file; then the dense
parameters. Rank ``dst`` writes atomically (temp file, fsync, rename), so its extra memory is one gathered
table (n×k, plus one n×d chunk of rows) at a time instead of the whole model. The file is the one
``gather_state_dict`` + ``mc.collapse`` + ``mc.save_checkpoint`` would write, byte for byte.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import torch
import torch.distributed as dist
from safetensors.torch import save as st_save
from torch import nn

from .. import collapse
from ..atomic import atomic_path
from ..checkpoint import PRODUCER, _dedupe, describe_model
from ..errors import CheckpointError, ConfigError
from ..safetensors_io import StreamingWriter
from ..schema import CheckpointHeader
from .torchrec_ebc import MLETEmbeddingBagCollection, product_chunks
from .torchrec_model import describe_tables, find_ebcs

ChunkFn = Callable[[], Iterator[torch.Tensor]]


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the meta device (its structure, no data): what :func:`save_sharded_checkpoint` reads.

    Call it before ``DistributedModelParallel`` (which swaps the model's EBCs for sharded ones in place).
    Costs no table memory: every parameter and buffer is replaced by a meta tensor of its shape and dtype.

    Example:
        >>> skel = meta_copy(nn.Linear(3, 2)); skel.weight.device
        device(type='meta')
    """
    memo: dict[int, Any] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in memo:
            continue
        empty = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(empty, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else empty
    return copy.deepcopy(model, memo)


def _is_sharded(value: Any) -> bool:
    return hasattr(value, "local_shards") and hasattr(value, "gather")


def _gather(value: Any, rank: int, dst: int) -> Optional[torch.Tensor]:
    """The whole tensor on ``dst`` (None elsewhere); a collective for a ShardedTensor."""
    if _is_sharded(value):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*deprecating ShardedTensor", category=FutureWarning)
            full = torch.empty(value.size(), dtype=value.dtype) if rank == dst else None
            value.gather(dst=dst, out=full)
        return full
    return value.detach() if rank == dst else None


def _file_order(entries: dict[str, tuple[torch.dtype, tuple[int, ...]]]) -> list[str]:
    """The order ``safetensors.torch.save_file`` lays these tensors out in (asked of safetensors itself, on
    one-element stand-ins, so the streamed file matches what ``save_checkpoint`` writes)."""
    raw = st_save({k: torch.zeros(1, dtype=dt) for k, (dt, _) in entries.items()})
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    return sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])


def save_sharded_checkpoint(
    dmp: nn.Module,
    path: Union[str, Path],
    model: nn.Module,
    *,
    collapse_mlet: bool = True,
    model_info: Optional[dict] = None,
    extra: Optional[dict] = None,
    dst: int = 0,
    pg: Optional[dist.ProcessGroup] = None,
    chunk_rows: int = 65536,
) -> Optional[Path]:
    """Write the checkpoint of a ``DistributedModelParallel`` model, one table at a time; a collective.

    Every rank calls it. For each table in file order, the ranks send their shards to rank ``dst``
    (``ShardedTensor.gather``; table-wise, column-wise and data-parallel plans alike), which collapses it
    when it is MLET (n×k times the d×k projection, in row chunks) and streams it into ``path``; then the
    dense parameters (rank ``dst``'s replicas). Rank ``dst`` holds one gathered table at a time.

    The file equals (byte for byte) what gathering everything (:func:`~.torchrec_shard.gather_state_dict`),
    loading it into ``model``, ``mc.collapse`` and ``mc.save_checkpoint`` write: collapsed keys, so it loads
    with ``strict=True`` into the original unwrapped TorchRec model; ``eval`` / ``inspect`` / ``quantize``
    read it as any checkpoint.

    Args:
        dmp: the DMP-wrapped model (its ``state_dict`` holds ShardedTensors for the sharded tables).
        path: the ``.safetensors`` file (written by rank ``dst`` only, atomically).
        model: an unsharded model of the same architecture (MLET-wrapped as ``dmp`` was), for its
            structure only: use :func:`meta_copy` of the model taken before sharding (no data needed).
        collapse_mlet: False writes the MLET factors as they are (the ``factors.safetensors`` of a run).
        model_info / extra: stored in the header, as ``save_checkpoint``'s.
        dst: the writing rank. pg: the process group (default: the world group).
        chunk_rows: rows per collapse product chunk (keep the default for byte equality with ``collapse``).

    Returns:
        ``path`` on rank ``dst``, None elsewhere.

    Raises:
        ConfigError: no process group, or ``model`` holds no (MLET-)EBC.
        CheckpointError: a table's state-dict key is missing from ``dmp``, or the file cannot be written.

    Example:
        >>> skel = meta_copy(model); dmp = shard_model(model, "table_wise")  # doctest: +SKIP
        >>> save_sharded_checkpoint(dmp, "model.safetensors", skel)          # doctest: +SKIP
    """
    if not dist.is_initialized():
        raise ConfigError("save_sharded_checkpoint: no process group; call torch.distributed.init_process_group first")
    rank = dist.get_rank(pg)
    if not find_ebcs(model):
        raise ConfigError("save_sharded_checkpoint: the model holds no torchrec EmbeddingBagCollection")
    tables = describe_tables(model)
    skel = meta_copy(model)
    if collapse_mlet and any(isinstance(m, MLETEmbeddingBagCollection) for m in find_ebcs(skel).values()):
        collapse(skel, check=False)  # meta tensors: the collapsed structure and stage history, no arithmetic
    shapes = {k: (v.dtype, tuple(v.shape)) for k, v in skel.state_dict().items()}
    state = dmp.state_dict()  # views of the shards and replicas, no copies

    sources: dict[str, ChunkFn] = {}  # file key -> its chunks on rank dst (a collective to call on every rank)
    table_keys: set[str] = set()
    for info in tables.values():
        if collapse_mlet:
            if info["proj_key"]:
                sources[info["collapsed_key"]] = _product(state, info["table_key"], info["proj_key"], rank, dst,
                                                           chunk_rows, shapes[info["collapsed_key"]][0])
                table_keys.update((info["table_key"], info["proj_key"]))
            else:  # single-layer table inside an MLET-EBC, or a plain EBC's table: moved as it is
                src = info["weight_key"]
                sources[info["collapsed_key"]] = _whole(state, src, rank, dst)
                table_keys.add(src)
        else:
            for key in (info["table_key"], info["proj_key"], info["weight_key"]):
                if key:
                    sources[key] = _whole(state, key, rank, dst)
                    table_keys.add(key)
    dense = {k: v for k, v in state.items() if k not in table_keys and k in shapes and not _is_sharded(v)}
    for key in shapes:
        if key not in sources:
            if key not in state:
                raise CheckpointError(f"save_sharded_checkpoint: {key!r} of the model is not in the DMP state dict; "
                                      "pass the model DMP wrapped (before sharding, e.g. meta_copy(model))")
            sources[key] = _whole(state, key, rank, dst)

    # the header, as save_checkpoint builds it: tables described from the (collapsed) structure, dense aliases
    # found on the real replicas (tables are never aliased in a TorchRec model)
    _, aliases = _dedupe(dense)
    kept = {k: v for k, v in shapes.items() if k not in aliases}
    header = CheckpointHeader(describe_model(skel), aliases, model_info, extra or {})
    header.validate({k: _Shape(s) for k, (_, s) in shapes.items()}, str(path))
    order = _file_order(kept)
    path = Path(path)
    if rank != dst:
        for key in order:
            for _ in sources[key]():
                pass
        return None
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            writer = StreamingWriter(fh, [(k, kept[k][0], kept[k][1]) for k in order], header.to_metadata(PRODUCER))
            for key in order:
                for chunk in sources[key]():
                    writer.write(key, chunk)
            writer.close()
    return path


class _Shape:
    """A stand-in tensor info for ``CheckpointHeader.validate`` (it reads ``shape`` only)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape


def _whole(state: dict, key: str, rank: int, dst: int) -> ChunkFn:
    def chunks() -> Iterator[torch.Tensor]:
        full = _gather(state[key], rank, dst)
        if full is not None:
            yield full
    if key not in state:
        raise CheckpointError(f"save_sharded_checkpoint: {key!r} is not in the DMP state dict")
    return chunks


def _product(state: dict, table_key: str, proj_key: str, rank: int, dst: int, chunk_rows: int,
             dtype: torch.dtype) -> ChunkFn:
    def chunks() -> Iterator[torch.Tensor]:
        table = _gather(state[table_key], rank, dst)
        proj = _gather(state[proj_key], rank, dst)
        if table is None:
            return
        for _, rows in product_chunks(table, proj, chunk_rows):
            yield rows.to(dtype)
        del table
    for key in (table_key, proj_key):
        if key not in state:
            raise CheckpointError(f"save_sharded_checkpoint: {key!r} is not in the DMP state dict")
    return chunks


__all__ = ["save_sharded_checkpoint", "meta_copy"]
