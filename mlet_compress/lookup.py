"""Build lookup modules from any checkpoint with no model code; dense reconstructions; model loading."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
from torch import nn

from .checkpoint import Checkpoint, load_checkpoint
from .errors import CheckpointError
from .layers.hashed import HashedEmbedding, HashedEmbeddingBag
from .layers.lowrank import LowRankEmbedding, LowRankEmbeddingBag
from .layers.mlet import MLETEmbedding, MLETEmbeddingBag
from .layers.quantized import QuantizedEmbedding, QuantizedEmbeddingBag
from .ops.collapse import collapse_weight


def _tensor(tensors: dict[str, torch.Tensor], key: str, name: str) -> torch.Tensor:
    try:
        return tensors[key]
    except KeyError:
        raise CheckpointError(f"table {name!r}: tensor {key!r} is missing from the checkpoint") from None


def build_lookup_module(name: str, entry: dict, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """The lookup module a table entry describes, loaded with its tensors.

    Plain tables become ``nn.Embedding``/``nn.EmbeddingBag`` (hashed twins when ``hash`` is set), MLET
    tables ``MLETEmbedding(Bag)``, low-rank ``LowRankEmbedding(Bag)``, quantized
    ``QuantizedEmbedding(Bag)``; every option (mode, padding_idx, include_last_offset, modulus) is restored.
    """
    bag = entry.get("module") == "embedding_bag"
    opts = entry.get("options") or {}
    n, d = int(entry["num_embeddings"]), int(entry["embedding_dim"])
    hashed = entry.get("hash") or None
    buckets = hashed["num_buckets"] if hashed else None
    orig = hashed["original_num_embeddings"] if hashed else None
    pad = opts.get("padding_idx")
    bag_kw = dict(mode=opts.get("mode", "mean"), include_last_offset=bool(opts.get("include_last_offset", False))) if bag else {}
    fac = entry["factors"]
    kind = entry["kind"]
    if kind == "plain":
        w = _tensor(tensors, fac["weight"]["key"], name)
        kw = dict(padding_idx=pad, scale_grad_by_freq=bool(opts.get("scale_grad_by_freq", False)),
                  sparse=bool(opts.get("sparse", False)), _weight=w.clone(), dtype=w.dtype, **bag_kw)
        if hashed:
            cls = HashedEmbeddingBag if bag else HashedEmbedding
            mod = cls(n, d, original_num_embeddings=orig, **kw)
        else:
            mod = (nn.EmbeddingBag if bag else nn.Embedding)(n, d, **kw)
    elif kind == "mlet":
        table, proj = _tensor(tensors, fac["table"]["key"], name), _tensor(tensors, fac["proj"]["key"], name)
        cls = MLETEmbeddingBag if bag else MLETEmbedding
        mod = cls(n, d, int(table.shape[1]), padding_idx=pad, sparse=bool(opts.get("sparse", False)),
                  num_buckets=buckets, dtype=table.dtype, **bag_kw)
        with torch.no_grad():
            mod.table.copy_(table)
            mod.proj.copy_(proj)
    elif kind == "lowrank":
        A, B = _tensor(tensors, fac["A"]["key"], name), _tensor(tensors, fac["B"]["key"], name)
        cls = LowRankEmbeddingBag if bag else LowRankEmbedding
        mod = cls(n, d, int(A.shape[1]), padding_idx=pad, sparse=bool(opts.get("sparse", False)),
                  num_buckets=buckets, original_num_embeddings=orig, dtype=A.dtype, **bag_kw)
        with torch.no_grad():
            mod.A.copy_(A)
            mod.B.copy_(B)
    elif kind == "quantized":
        lowrank = entry.get("base") == "lowrank"
        qf = fac["A"] if lowrank else fac["weight"]
        q = qf["quant"]
        cls = QuantizedEmbeddingBag if bag else QuantizedEmbedding
        proj = _tensor(tensors, fac["B"]["key"], name) if lowrank else None
        mod = cls(n, d, bits=int(q["bits"]), granularity=q["granularity"],
                  rank=int(proj.shape[0]) if lowrank else None, padding_idx=pad, num_buckets=buckets,
                  original_num_embeddings=orig, **bag_kw)
        qweight, scale = _tensor(tensors, qf["key"], name), _tensor(tensors, q["scale_key"], name)
        if tuple(qweight.shape) != tuple(mod.qweight.shape) or tuple(scale.shape) != tuple(mod.scale.shape):
            raise CheckpointError(
                f"table {name!r}: quantized tensors {tuple(qweight.shape)}/{tuple(scale.shape)} do not match "
                f"{q['bits']}-bit {q['granularity']} codes of a {n}×{mod.code_dim} table"
            )
        with torch.no_grad():
            mod.qweight.copy_(qweight)
            mod.scale.copy_(scale)
            if lowrank:
                mod.proj.copy_(proj)
    else:
        raise CheckpointError(f"table {name!r}: unknown kind {kind!r}")
    mod.stage_chain = list(entry.get("stages") or [])
    return mod


def _as_checkpoint(src: Union[str, Path, Checkpoint]) -> Checkpoint:
    return src if isinstance(src, Checkpoint) else load_checkpoint(src)


def load_lookup_modules(src: Union[str, Path, Checkpoint]) -> dict[str, nn.Module]:
    """Every embedding table of a checkpoint as a ready lookup module, keyed by module name (no model code).

    Example:
        >>> mods = load_lookup_modules("model.safetensors")  # doctest: +SKIP
        >>> mods["emb.tables.C1"](torch.tensor([3, 4]))       # doctest: +SKIP
    """
    ck = _as_checkpoint(src)
    return {name: build_lookup_module(name, e, ck.tensors) for name, e in ck.tables.items()}


def dense_weight(mod: nn.Module) -> torch.Tensor:
    """The float32 rows×d table a lookup module's lookups equal (rows = buckets for hashed tables)."""
    with torch.no_grad():
        if isinstance(mod, (MLETEmbedding, MLETEmbeddingBag)):
            return collapse_weight(mod.table, mod.proj, torch.float32)
        if isinstance(mod, (LowRankEmbedding, LowRankEmbeddingBag)):
            return (mod.A.float() @ mod.B.float())
        if isinstance(mod, (QuantizedEmbedding, QuantizedEmbeddingBag)):
            return mod.dequantized_weight().float()
        return mod.weight.detach().float()


def reconstruct(src: Union[str, Path, Checkpoint]) -> dict[str, torch.Tensor]:
    """Each embedding table's dense float32 reconstruction, what inference lookups equal.

    For hashed tables the result has ``num_buckets`` rows and a lookup of ``idx`` reads row ``idx % m``.

    Example:
        >>> w = reconstruct("model.q8.safetensors")["emb.tables.C1"]  # doctest: +SKIP
    """
    return {name: dense_weight(m) for name, m in load_lookup_modules(src).items()}


def load_model_state(model: nn.Module, src: Union[str, Path, Checkpoint], *, strict: bool = True) -> nn.Module:
    """Load a checkpoint of any kind into ``model``: swap in the lookup module of each compressed table
    (low-rank, quantized, hashed, MLET), then load the state dict (``strict`` by default).

    Raises:
        CheckpointError: a checkpoint table has no module of that name in the model.
    """
    ck = _as_checkpoint(src)
    from .targeting import replace_module

    modules = dict(model.named_modules(remove_duplicate=False))
    for name, entry in ck.tables.items():
        if name not in modules:
            raise CheckpointError(f"checkpoint table {name!r} has no module of that name in {type(model).__name__}")
        current = modules[name]
        plain_fits = (
            entry["kind"] == "plain" and not entry.get("hash") and type(current) in (nn.Embedding, nn.EmbeddingBag)
        )
        if plain_fits:
            continue
        new = build_lookup_module(name, entry, ck.tensors)
        names = [name] + [a for a in entry.get("aliases", []) if a in modules]
        replace_module(model, names, new)
    try:
        model.load_state_dict(ck.state_dict(), strict=strict)
    except RuntimeError as exc:  # missing/unexpected keys or shape mismatches: say which, in one line
        detail = " ".join(str(exc).split())
        raise CheckpointError(f"checkpoint does not fit {type(model).__name__}: {detail[:300]}") from None
    return model
