"""Sharded MLET training with TorchRec's ``DistributedModelParallel`` (stock sharder, fused optimizers).

The inner k-dim ``EmbeddingBagCollection`` of each :class:`~.torchrec.MLETEmbeddingBagCollection` is an
ordinary EBC, so DMP shards it with ``EmbeddingBagCollectionSharder``; the k→d projections are dense
parameters that DMP wraps in DDP (data-parallel, gradients averaged). The sparse n×k tables train with
FBGEMM's fused optimizer, chosen by the sharder's ``fused_params``; the default here is
``EXACT_ROWWISE_ADAGRAD`` (one accumulator per row: n floats of state instead of n×k)::

    sharder = EmbeddingBagCollectionSharder(fused_params={
        "optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": 0.01, "eps": 1e-8})
    # or, before DMP: apply_optimizer_in_backward(RowWiseAdagrad, model.ebc.inner.parameters(), {"lr": 0.01})

Two CPU facts (torchrec 1.9, gloo): the planner offers data-parallel, table-wise, column-wise and
table-column-wise sharding only (row-wise, table-row-wise and grid need ``compute_device`` "cuda"/"tpu":
``BaseEmbeddingSharder.sharding_types``); and a sharded EBC built from a CPU module is **re-initialised**
from each table's ``init_fn`` (torchrec copies the unsharded weights only for non-CPU devices), so
:func:`shard_model` loads the pre-sharding state dict back into the DMP module.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError
from .torchrec_model import find_ebcs

from fbgemm_gpu.split_embedding_configs import EmbOptimType  # noqa: E402  (torchrec imported above)
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder  # noqa: E402
from torchrec.distributed.model_parallel import DistributedModelParallel  # noqa: E402
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology  # noqa: E402
from torchrec.distributed.planner.types import ParameterConstraints  # noqa: E402

OPTIMIZERS = {
    "sgd": EmbOptimType.EXACT_SGD,
    "rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD,  # FBGEMM/TorchRec's default for embeddings
    "adagrad": EmbOptimType.EXACT_ADAGRAD,  # full Adagrad: n×k accumulators
    "adam": EmbOptimType.ADAM,
}
ShardingTypes = Union[str, Sequence[str], Mapping[str, Sequence[str]]]


def ebc_sharder(optimizer: str = "rowwise_adagrad", learning_rate: float = 0.01, eps: float = 1e-8,
                **fused_params) -> EmbeddingBagCollectionSharder:
    """The stock ``EmbeddingBagCollectionSharder`` with a fused optimizer for the sparse tables.

    Args:
        optimizer: one of :data:`OPTIMIZERS` ("rowwise_adagrad": FBGEMM's EXACT_ROWWISE_ADAGRAD).
        learning_rate, eps: optimizer settings. fused_params: more FBGEMM TBE options (e.g. ``weight_decay``).

    Raises:
        ConfigError: unknown optimizer.

    Example:
        >>> ebc_sharder("rowwise_adagrad", 0.05).fused_params["optimizer"]
        <EmbOptimType.EXACT_ROWWISE_ADAGRAD: 'exact_row_wise_adagrad'>
    """
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer={optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
    params = {"optimizer": OPTIMIZERS[optimizer], "learning_rate": learning_rate, "eps": eps, **fused_params}
    return EmbeddingBagCollectionSharder(fused_params=params)


def sharding_constraints(model: nn.Module, sharding_types: ShardingTypes,
                         min_partition: Optional[int] = None) -> dict[str, ParameterConstraints]:
    """Planner constraints forcing the sharding type(s) of every table of every (MLET-)EBC in ``model``.

    Args:
        sharding_types: "table_wise" / "column_wise" / ..., a list of allowed types, or a per-table mapping.
        min_partition: smallest column-wise shard width (a multiple of 4 that divides the table width).

    Example:
        >>> from mlet_compress.integrations.torchrec import EmbeddingBagCollection, EmbeddingBagConfig
        >>> ebc = EmbeddingBagCollection([EmbeddingBagConfig(name="t0", embedding_dim=8, num_embeddings=10)])
        >>> sharding_constraints(ebc, "column_wise")["t0"].sharding_types
        ['column_wise']
    """
    out = {}
    for mod in find_ebcs(model).values():
        for c in mod.embedding_bag_configs():
            types = sharding_types.get(c.name) if isinstance(sharding_types, Mapping) else sharding_types
            if types is None:
                continue
            types = [types] if isinstance(types, str) else list(types)
            out[c.name] = ParameterConstraints(sharding_types=types, min_partition=min_partition)
    return out


def shard_model(model: nn.Module, sharding_types: ShardingTypes = "table_wise", optimizer: str = "rowwise_adagrad",
                learning_rate: float = 0.01, eps: float = 1e-8, *, pg: Optional[dist.ProcessGroup] = None,
                device: Optional[torch.device] = None, min_partition: Optional[int] = None,
                fused_params: Optional[dict] = None) -> DistributedModelParallel:
    """Wrap ``model`` in ``DistributedModelParallel`` with a forced sharding type and a fused sparse optimizer.

    Tables keep their current values (reloaded after sharding, see the module docstring); the dense
    parameters (MLET projections included) go to DDP: give them an ordinary optimizer, e.g.
    ``torch.optim.SGD([p for n, p in dmp.named_parameters() if "embedding_bags" not in n], lr)``.

    Args:
        model: a model holding (MLET-)EBCs. sharding_types / min_partition: see :func:`sharding_constraints`.
        optimizer, learning_rate, eps, fused_params: see :func:`ebc_sharder`.
        pg: process group (default: the world group, which must be initialised). device: default CPU.

    Returns:
        The DMP-wrapped model (``dmp.plan`` holds the plan).

    Raises:
        ConfigError: no process group initialised, or an unknown optimizer.
        RuntimeError: from the planner, when no allowed sharding type fits (e.g. row-wise on CPU).

    Example:
        >>> dmp = shard_model(model, "column_wise", "rowwise_adagrad", 0.01, min_partition=4)  # doctest: +SKIP
    """
    if not dist.is_initialized():
        raise ConfigError("shard_model: no process group; call torch.distributed.init_process_group first")
    pg = pg or dist.GroupMember.WORLD
    device = device or torch.device("cpu")
    sharder = ebc_sharder(optimizer, learning_rate, eps, **(fused_params or {}))
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=dist.get_world_size(pg), compute_device=device.type),
        constraints=sharding_constraints(model, sharding_types, min_partition))
    plan = planner.collective_plan(model, [sharder], pg)
    state = model.state_dict()  # references, not copies: DMP builds new storage for the sharded tables
    dmp = DistributedModelParallel(model, device=device, plan=plan, sharders=[sharder])
    if not any(t.is_meta for t in state.values()):
        dmp.load_state_dict(state, strict=True)
    return dmp


def gather_state_dict(dmp: nn.Module, dst: int = 0, pg: Optional[dist.ProcessGroup] = None) -> Optional[dict]:
    """The full, unsharded state dict of a DMP model on rank ``dst`` (None elsewhere); a collective: call on every rank.

    Keys are the unsharded model's, so the result loads with ``strict=True`` into an unsharded copy of the
    model, which :func:`~.torchrec_model.collapse_ebcs_` then collapses for inference.

    Example:
        >>> full = gather_state_dict(dmp)  # doctest: +SKIP
        >>> if full is not None: model.load_state_dict(full); collapse_ebcs_(model)  # doctest: +SKIP
    """
    rank = dist.get_rank(pg)
    out = {}
    for key, value in dmp.state_dict().items():
        if hasattr(value, "local_shards") and hasattr(value, "gather"):  # ShardedTensor
            full = torch.empty(value.size(), dtype=value.dtype) if rank == dst else None
            value.gather(dst=dst, out=full)
            out[key] = full
        else:
            out[key] = value.detach().clone() if isinstance(value, torch.Tensor) else value
    return out if rank == dst else None


__all__ = ["OPTIMIZERS", "ebc_sharder", "sharding_constraints", "shard_model", "gather_state_dict"]
