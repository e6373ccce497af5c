"""Embedding modules ⇄ schema entries: describe a module as a :class:`~mlet_compress.schema.TableEntry`,
rebuild the lookup module an entry describes, and keep each module's stage history.

A module's history (which stages produced it) is a tuple of :class:`~mlet_compress.schema.StageRecord`
kept on the module by :func:`set_stage_chain` and read by :func:`stage_chain`; nothing else touches it.

Example:
    >>> import torch
    >>> from torch import nn
    >>> entry = entry_from_module("emb", nn.EmbeddingBag(10, 4, mode="sum"))
    >>> entry.kind, entry.is_bag, entry.tensor_keys()
    ('plain', True, ['emb.weight'])
    >>> type(module_from_entry(entry, {"emb.weight": torch.zeros(10, 4)})).__name__
    'EmbeddingBag'
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import nn

from .errors import CheckpointError, ConfigError
from .layers._base import module_options
from .layers.hashed import HashedEmbedding, HashedEmbeddingBag
from .layers.lowrank import LowRankEmbedding, LowRankEmbeddingBag
from .layers.mlet import MLETEmbedding, MLETEmbeddingBag
from .layers.quantized import QuantizedEmbedding, QuantizedEmbeddingBag
from .safetensors_io import dtype_name
from .schema import Factor, HashSpec, QuantSpec, StageRecord, TableEntry, table_key

MLET_KINDS = (MLETEmbedding, MLETEmbeddingBag)
LOWRANK_KINDS = (LowRankEmbedding, LowRankEmbeddingBag)
QUANT_KINDS = (QuantizedEmbedding, QuantizedEmbeddingBag)
HASHED_KINDS = (HashedEmbedding, HashedEmbeddingBag)
PLAIN_KINDS = (nn.Embedding, nn.EmbeddingBag)
TABLE_KINDS = PLAIN_KINDS + MLET_KINDS + LOWRANK_KINDS + QUANT_KINDS
BAG_KINDS = (nn.EmbeddingBag, MLETEmbeddingBag, LowRankEmbeddingBag, QuantizedEmbeddingBag)
_CHAIN_ATTR = "_mlet_stages"


def stage_chain(module: nn.Module) -> tuple[StageRecord, ...]:
    """The stages that produced ``module``, oldest first (empty for a table nothing has touched)."""
    return tuple(getattr(module, _CHAIN_ATTR, ()))


def set_stage_chain(module: nn.Module, chain: tuple[StageRecord, ...]) -> nn.Module:
    """Record ``chain`` as ``module``'s history; returns the module."""
    object.__setattr__(module, _CHAIN_ATTR, tuple(chain))
    return module


def table_kind(module: nn.Module) -> Optional[str]:
    """``plain`` / ``mlet`` / ``lowrank`` / ``quantized`` for an embedding module, None for anything else."""
    if isinstance(module, MLET_KINDS):
        return "mlet"
    if isinstance(module, LOWRANK_KINDS):
        return "lowrank"
    if isinstance(module, QUANT_KINDS):
        return "quantized"
    return "plain" if isinstance(module, PLAIN_KINDS) else None


def _hash_spec(mod: nn.Module) -> Optional[HashSpec]:
    buckets = getattr(mod, "num_buckets", None)
    if buckets is None:
        return None
    orig = getattr(mod, "original_num_embeddings", None)
    if isinstance(mod, MLET_KINDS) and mod.origin is not None:
        orig = mod.origin.original_num_embeddings
    return HashSpec(int(buckets), int(orig or buckets))


def _fac(key: str, t: torch.Tensor) -> Factor:
    return Factor(key, tuple(int(s) for s in t.shape), dtype_name(t.dtype))


def _factors(name: str, mod: nn.Module, kind: str) -> tuple[dict[str, Factor], Optional[str], tuple[StageRecord, ...]]:
    """``(factors, base, default history)`` of a module of ``kind``."""
    if kind == "mlet":
        return ({"table": _fac(table_key(name, "table"), mod.table), "proj": _fac(table_key(name, "proj"), mod.proj)},
                None, (StageRecord.make("mlet", inner_dim=mod.inner_dim),))
    if kind == "lowrank":
        return ({"A": _fac(table_key(name, "A"), mod.A), "B": _fac(table_key(name, "B"), mod.B)}, None,
                (StageRecord.make("svd", rank=mod.rank),))
    if kind == "quantized":
        quant = QuantSpec(mod.bits, mod.granularity, table_key(name, "scale"), dtype_name(mod.scale_dtype))
        default = (StageRecord.make("quantize", bits=mod.bits, granularity=mod.granularity),)
        if mod.B is not None:
            return ({"A": Factor(table_key(name, "codes"), (mod.num_embeddings, mod.rank), "float32", quant),
                     "B": _fac(table_key(name, "B"), mod.B)}, "lowrank", default)
        return ({"weight": Factor(table_key(name, "codes"), (mod.num_embeddings, mod.embedding_dim), "float32", quant)},
                "plain", default)
    return {"weight": _fac(table_key(name, "weight"), mod.weight)}, None, ()


def entry_from_module(name: str, module: nn.Module) -> Optional[TableEntry]:
    """The :class:`TableEntry` of an embedding module (None when ``module`` is not an embedding table)."""
    kind = table_kind(module)
    if kind is None:
        return None
    factors, base, default = _factors(name, module, kind)
    return TableEntry(
        name=name, kind=kind, num_embeddings=int(module.num_embeddings), embedding_dim=int(module.embedding_dim),
        factors=factors, module="embedding_bag" if isinstance(module, BAG_KINDS) else "embedding",
        options=module_options(module), stages=stage_chain(module) or default, hash=_hash_spec(module), base=base,
    )


def _tensor(tensors: Mapping[str, torch.Tensor], key: str, name: str) -> torch.Tensor:
    try:
        return tensors[key]
    except KeyError:
        raise CheckpointError(f"table {name!r}: tensor {key!r} is missing from the checkpoint") from None


def _plain(entry: TableEntry, tensors: Mapping[str, torch.Tensor], common: dict) -> nn.Module:
    w = _tensor(tensors, entry.factors["weight"].key, entry.name)
    opts = entry.options
    kw = dict(scale_grad_by_freq=bool(opts.get("scale_grad_by_freq", False)), _weight=w.clone(), dtype=w.dtype,
              padding_idx=common["padding_idx"], sparse=common["sparse"], **common["bag"])
    n, d = entry.num_embeddings, entry.embedding_dim
    if entry.hash:
        cls = HashedEmbeddingBag if entry.is_bag else HashedEmbedding
        return cls(n, d, original_num_embeddings=entry.hash.original_num_embeddings, **kw)
    return (nn.EmbeddingBag if entry.is_bag else nn.Embedding)(n, d, **kw)


def _mlet(entry: TableEntry, tensors: Mapping[str, torch.Tensor], common: dict) -> nn.Module:
    table = _tensor(tensors, entry.factors["table"].key, entry.name)
    proj = _tensor(tensors, entry.factors["proj"].key, entry.name)
    cls = MLETEmbeddingBag if entry.is_bag else MLETEmbedding
    mod = cls(entry.num_embeddings, entry.embedding_dim, int(table.shape[1]), padding_idx=common["padding_idx"],
              sparse=common["sparse"], num_buckets=common["buckets"], dtype=table.dtype, **common["bag"])
    with torch.no_grad():
        mod.table.copy_(table)
        mod.proj.copy_(proj)
    return mod


def _lowrank(entry: TableEntry, tensors: Mapping[str, torch.Tensor], common: dict) -> nn.Module:
    A, B = _tensor(tensors, entry.factors["A"].key, entry.name), _tensor(tensors, entry.factors["B"].key, entry.name)
    cls = LowRankEmbeddingBag if entry.is_bag else LowRankEmbedding
    mod = cls(entry.num_embeddings, entry.embedding_dim, int(A.shape[1]), padding_idx=common["padding_idx"],
              sparse=common["sparse"], num_buckets=common["buckets"], original_num_embeddings=common["orig"],
              dtype=A.dtype, **common["bag"])
    with torch.no_grad():
        mod.A.copy_(A)
        mod.B.copy_(B)
    return mod


def _quantized(entry: TableEntry, tensors: Mapping[str, torch.Tensor], common: dict) -> nn.Module:
    q, name = entry.quant, entry.name
    lowrank = entry.base == "lowrank"
    B = _tensor(tensors, entry.factors["B"].key, name) if lowrank else None
    cls = QuantizedEmbeddingBag if entry.is_bag else QuantizedEmbedding
    mod = cls(entry.num_embeddings, entry.embedding_dim, bits=q.bits, granularity=q.granularity,
              rank=int(B.shape[0]) if lowrank else None, padding_idx=common["padding_idx"],
              num_buckets=common["buckets"], original_num_embeddings=common["orig"], scale_dtype=q.scale_dtype,
              **common["bag"])
    codes = _tensor(tensors, entry.factors["A" if lowrank else "weight"].key, name)
    scale = _tensor(tensors, q.scale_key, name)
    try:
        return mod.load_codes(codes, scale, B)
    except ConfigError as exc:
        raise CheckpointError(f"table {name!r}: quantized tensors {tuple(codes.shape)}/{tuple(scale.shape)} do not match "
                              f"{q.bits}-bit {q.granularity} codes of a {entry.num_embeddings}×{mod.code_dim} table "
                              f"({exc})") from None


_BUILDERS = {"plain": _plain, "mlet": _mlet, "lowrank": _lowrank, "quantized": _quantized}


def module_from_entry(entry: TableEntry, tensors: Mapping[str, torch.Tensor]) -> nn.Module:
    """The lookup module ``entry`` describes, loaded with its tensors (every option restored).

    Plain tables become ``nn.Embedding``/``nn.EmbeddingBag`` (hashed twins when hashed), MLET tables
    ``MLETEmbedding(Bag)``, low-rank ``LowRankEmbedding(Bag)``, quantized ``QuantizedEmbedding(Bag)``.

    Raises:
        CheckpointError: a tensor is missing or does not fit the entry.
    """
    opts = entry.options
    common = {
        "padding_idx": opts.get("padding_idx"), "sparse": bool(opts.get("sparse", False)),
        "buckets": entry.hash.num_buckets if entry.hash else None,
        "orig": entry.hash.original_num_embeddings if entry.hash else None,
        "bag": dict(mode=opts.get("mode", "mean"), include_last_offset=bool(opts.get("include_last_offset", False)))
        if entry.is_bag else {},
    }
    return set_stage_chain(_BUILDERS[entry.kind](entry, tensors, common), entry.stages)


__all__ = ["stage_chain", "set_stage_chain", "table_kind", "entry_from_module", "module_from_entry",
           "TABLE_KINDS", "MLET_KINDS", "LOWRANK_KINDS", "QUANT_KINDS", "HASHED_KINDS", "PLAIN_KINDS"]
