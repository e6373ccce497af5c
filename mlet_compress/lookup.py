"""Lookup modules from any checkpoint with no model code; dense reconstructions; loading into a model."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
from torch import nn

from .checkpoint import Checkpoint, load_checkpoint
from .errors import CheckpointError
from .integrations import ebc_tables
from .layers.lowrank import LowRankEmbedding, LowRankEmbeddingBag
from .layers.mlet import MLETEmbedding, MLETEmbeddingBag
from .layers.quantized import QuantizedEmbedding, QuantizedEmbeddingBag
from .ops.collapse import collapse_weight
from .table_modules import module_from_entry
from .targeting import replace_module


def _as_checkpoint(src: Union[str, Path, Checkpoint]) -> Checkpoint:
    return src if isinstance(src, Checkpoint) else load_checkpoint(src)


def load_lookup_modules(src: Union[str, Path, Checkpoint]) -> dict[str, nn.Module]:
    """Every embedding table of a checkpoint as a ready lookup module, keyed by module name (no model code).

    Example:
        >>> mods = load_lookup_modules("model.safetensors")  # doctest: +SKIP
        >>> mods["emb.tables.C1"](torch.tensor([3, 4]))       # doctest: +SKIP
    """
    ck = _as_checkpoint(src)
    return {name: module_from_entry(e, ck.tensors) for name, e in ck.tables.items()}


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

    TorchRec ``EmbeddingBagCollection`` tables: plain and collapsed checkpoints load as they are; MLET
    checkpoints load into the MLET-wrapped model, and a plain EBC holding MLET tables is wrapped first
    (same k). A TorchRec EBC holds float tables only, so low-rank and quantized entries for its tables are
    refused: serve quantized tables with ``to_torchrec_quant`` instead.

    Raises:
        CheckpointError: a checkpoint table has no module of that name in the model, or a compressed
            table for a TorchRec EBC.
    """
    ck = _as_checkpoint(src)
    handled = ebc_tables.prepare_load(model, ck.tables)
    modules = dict(model.named_modules(remove_duplicate=False))
    for name, entry in ck.tables.items():
        if name in handled:
            continue
        if name not in modules:
            raise CheckpointError(f"checkpoint table {name!r} has no module of that name in {type(model).__name__}")
        current = modules[name]
        plain_fits = entry.kind == "plain" and not entry.hash and type(current) in (nn.Embedding, nn.EmbeddingBag)
        if plain_fits:
            continue
        new = module_from_entry(entry, ck.tensors)
        names = [name] + [a for a in entry.aliases if a in modules]
        replace_module(model, names, new)
    try:
        model.load_state_dict(ck.state_dict(), strict=strict)
    except RuntimeError as exc:  # missing/unexpected keys or shape mismatches: say which, in one line
        detail = " ".join(str(exc).split())
        raise CheckpointError(f"checkpoint does not fit {type(model).__name__}: {detail[:300]}") from None
    return model
