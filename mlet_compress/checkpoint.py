"""The mlet-compress checkpoint: a safetensors file plus one metadata entry of versioned JSON.

The metadata key ``"mlet_compress"`` holds ``{"schema_version", "producer", "tables", "aliases", "model",
"extra"}``; ``tables`` describes every embedding table (kind, tensor keys, shapes, options, stage chain)
so command-line tools can process a checkpoint with no model code. See ``docs/checkpoint-format.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import CheckpointError
from .layers._base import module_options
from .layers.lowrank import LowRankEmbedding, LowRankEmbeddingBag
from .layers.mlet import MLETEmbedding, MLETEmbeddingBag
from .layers.quantized import QuantizedEmbedding, QuantizedEmbeddingBag
from .atomic import atomic_path
from .safetensors_io import dtype_name, read_header

META_KEY = "mlet_compress"
SCHEMA_VERSION = 1
KINDS = ("plain", "mlet", "lowrank", "quantized")


def _producer() -> str:
    from . import __version__

    return f"mlet-compress {__version__}"


def _factor(key: str, t: torch.Tensor, **extra: Any) -> dict:
    return {"key": key, "shape": list(t.shape), "dtype": dtype_name(t.dtype), **extra}


def _stages(mod: nn.Module) -> list[dict]:
    return [dict(s) for s in getattr(mod, "stage_chain", [])]


def describe_module(name: str, mod: nn.Module) -> Optional[dict]:
    """The schema entry of one embedding module, or ``None`` when ``mod`` is not an embedding table."""

    bag_kinds = (nn.EmbeddingBag, MLETEmbeddingBag, LowRankEmbeddingBag, QuantizedEmbeddingBag)
    p = f"{name}." if name else ""
    entry: dict[str, Any] = {"module": "embedding_bag" if isinstance(mod, bag_kinds) else "embedding"}
    if isinstance(mod, (MLETEmbedding, MLETEmbeddingBag)):
        entry["kind"] = "mlet"
        entry["factors"] = {"table": _factor(p + "table", mod.table), "proj": _factor(p + "proj", mod.proj)}
        stages = _stages(mod) or [{"stage": "mlet", "inner_dim": mod.inner_dim}]
    elif isinstance(mod, (LowRankEmbedding, LowRankEmbeddingBag)):
        entry["kind"] = "lowrank"
        entry["factors"] = {"A": _factor(p + "A", mod.A), "B": _factor(p + "B", mod.B)}
        stages = _stages(mod) or [{"stage": "svd", "rank": mod.rank}]
    elif isinstance(mod, (QuantizedEmbedding, QuantizedEmbeddingBag)):
        entry["kind"] = "quantized"
        quant = {"bits": mod.bits, "granularity": mod.granularity, "scale_key": p + "scale"}
        logical_rows = mod.num_embeddings
        proj = getattr(mod, "proj", None)
        if proj is not None:
            entry["base"] = "lowrank"
            a_shape = [logical_rows, proj.shape[0]]
            entry["factors"] = {
                "A": {"key": p + "qweight", "shape": a_shape, "dtype": "float32", "quant": quant},
                "B": _factor(p + "proj", proj),
            }
        else:
            entry["base"] = "plain"
            entry["factors"] = {
                "weight": {"key": p + "qweight", "shape": [logical_rows, mod.embedding_dim], "dtype": "float32", "quant": quant}
            }
        stages = _stages(mod) or [{"stage": "quantize", "bits": mod.bits, "granularity": mod.granularity}]
    elif isinstance(mod, (nn.Embedding, nn.EmbeddingBag)):
        entry["kind"] = "plain"
        entry["factors"] = {"weight": _factor(p + "weight", mod.weight)}
        stages = _stages(mod)
    else:
        return None
    n = int(getattr(mod, "num_embeddings"))
    entry["num_embeddings"] = n
    entry["embedding_dim"] = int(getattr(mod, "embedding_dim"))
    entry["options"] = module_options(mod)
    buckets = getattr(mod, "num_buckets", None)
    if buckets is not None:
        orig = getattr(mod, "original_num_embeddings", None) or (mod._mlet_origin.get("original_num_embeddings") if hasattr(mod, "_mlet_origin") else None)
        entry["hash"] = {"num_buckets": int(buckets), "original_num_embeddings": int(orig or n)}
    else:
        entry["hash"] = None
    entry["stages"] = stages
    return entry


def describe_model(model: nn.Module) -> dict[str, dict]:
    """Schema entries of every embedding table in ``model`` (aliases recorded once, under the first name)."""
    seen: dict[int, str] = {}
    tables: dict[str, dict] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        if id(mod) in seen:
            if seen[id(mod)] in tables:
                tables[seen[id(mod)]].setdefault("aliases", []).append(name)
            continue
        seen[id(mod)] = name
        entry = describe_module(name, mod)
        if entry is not None:
            tables[name] = entry
    return tables


def infer_tables(state_dict: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Schema entries recoverable from a bare state dict: MLET pairs ``<name>.table`` + ``<name>.proj``.

    Plain tables cannot be told from other 2-D weights without the model; pass ``tables=`` or save the
    model itself to describe them.
    """
    tables = {}
    for key, t in state_dict.items():
        if key.endswith(".table") and t.dim() == 2:
            name = key[: -len(".table")]
            proj = state_dict.get(name + ".proj")
            if proj is not None and proj.dim() == 2 and proj.shape[1] == t.shape[1]:
                tables[name] = {
                    "module": "embedding", "kind": "mlet", "num_embeddings": int(t.shape[0]),
                    "embedding_dim": int(proj.shape[0]), "options": {"padding_idx": None}, "hash": None,
                    "factors": {"table": _factor(key, t), "proj": _factor(name + ".proj", proj)},
                    "stages": [{"stage": "mlet", "inner_dim": int(t.shape[1])}],
                }
    return tables


def _dedupe(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Drop tensors that share storage with an earlier key (aliases); return the kept dict and alias map."""
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for key, t in state.items():
        t = t.detach()
        if t.layout != torch.strided:
            raise CheckpointError(f"tensor {key!r} is {t.layout}; only dense tensors can be saved")
        sig = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype) if t.numel() else None
        if sig is not None and sig in seen:
            aliases[key] = seen[sig]
            continue
        if sig is not None:
            seen[sig] = key
        kept[key] = t.contiguous().cpu()
    # distinct keys that overlap in memory in other ways must be copied, or safetensors refuses them
    ptrs: dict[int, str] = {}
    for key, t in list(kept.items()):
        if t.numel() == 0:
            continue
        ptr = t.untyped_storage().data_ptr()
        if ptr in ptrs:
            kept[key] = t.clone()
        else:
            ptrs[ptr] = key
    return kept, aliases


def _fold_aliased_tables(tables: dict[str, dict], aliases: dict[str, str]) -> None:
    """Entries whose tensors are all aliases of another table's become that table's ``aliases``."""
    owner = {f["key"]: name for name, e in tables.items() for f in e["factors"].values()}
    for name in list(tables):
        keys = [f["key"] for f in tables[name]["factors"].values()]
        if keys and all(k in aliases for k in keys):
            target = owner.get(aliases[keys[0]])
            if target is not None and target != name and target in tables:
                tables[target].setdefault("aliases", []).append(name)
                del tables[name]
    # alias keys of a table's tensors under another module name make that name an alias of the table
    for alias_key, key in aliases.items():
        name = owner.get(key)
        if name is None or name not in tables or not key.startswith(name + "."):
            continue
        suffix = key[len(name):]
        if alias_key.endswith(suffix):
            alias_mod = alias_key[: -len(suffix)]
            known = tables[name].setdefault("aliases", [])
            if alias_mod not in tables and alias_mod not in known:
                known.append(alias_mod)


def build_metadata(tables: dict, aliases: dict, model_info: Optional[dict], extra: Optional[dict]) -> dict[str, str]:
    """The safetensors ``__metadata__`` dict of a checkpoint."""
    doc = {
        "schema_version": SCHEMA_VERSION,
        "producer": _producer(),
        "tables": tables,
        "aliases": aliases,
        "model": model_info,
        "extra": extra or {},
    }
    return {META_KEY: json.dumps(doc, sort_keys=True)}


def save_checkpoint(
    model_or_state_dict: Union[nn.Module, dict[str, torch.Tensor]],
    path: Union[str, Path],
    *,
    model_info: Optional[dict] = None,
    extra: Optional[dict] = None,
    tables: Optional[dict[str, dict]] = None,
) -> Path:
    """Save a model (or state dict) as a safetensors checkpoint with the table schema, atomically.

    Args:
        model_or_state_dict: an ``nn.Module`` (its embedding tables are described from the modules) or
            a state dict (MLET pairs ``<name>.table``/``<name>.proj`` are recognised; pass ``tables``
            for anything else).
        path: destination ``.safetensors`` path (written to a temp file, then renamed into place).
        model_info: JSON-able description of the model (e.g. ``{"name": "dlrm", "config": {...}}``).
        extra: any other JSON-able metadata (vocabularies, preprocessing, ...).
        tables: explicit schema entries (overrides what is inferred).

    Returns:
        The written path.

    Example:
        >>> save_checkpoint(nn.Sequential(nn.Embedding(4, 2)), "/tmp/m.safetensors")
        PosixPath('/tmp/m.safetensors')
    """
    if isinstance(model_or_state_dict, nn.Module):
        state = model_or_state_dict.state_dict()
        described = describe_model(model_or_state_dict)
    elif isinstance(model_or_state_dict, dict):
        state = dict(model_or_state_dict)
        described = infer_tables(state)
    else:
        raise CheckpointError(f"save_checkpoint needs an nn.Module or a state dict, got {type(model_or_state_dict).__name__}")
    if tables:
        described.update(tables)
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"state entries {bad[:5]} are not tensors; safetensors stores tensors only")
    kept, aliases = _dedupe(state)
    _fold_aliased_tables(described, aliases)
    meta = build_metadata(described, aliases, model_info, extra)
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(kept, str(tmp), metadata=meta)
    return path


@dataclass
class Checkpoint:
    """A loaded checkpoint: tensors by state-dict key plus the parsed schema."""

    tensors: dict[str, torch.Tensor]
    tables: dict[str, dict]
    model_info: Optional[dict] = None
    extra: dict = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    path: Optional[Path] = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """All state-dict keys, aliases included (an aliased key maps to the same tensor)."""
        out = dict(self.tensors)
        for alias, key in self.aliases.items():
            out[alias] = self.tensors[key]
        return out


def parse_metadata(meta: dict[str, str], source: str) -> dict:
    """Validate and decode the schema JSON from a safetensors ``__metadata__`` dict."""
    raw = meta.get(META_KEY)
    if raw is None:
        raise CheckpointError(
            f"{source}: no {META_KEY!r} metadata; not an mlet-compress checkpoint "
            "(save it with save_checkpoint or `mlet-compress convert`)"
        )
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError:
        raise CheckpointError(f"{source}: {META_KEY!r} metadata is not valid JSON") from None
    version = doc.get("schema_version") if isinstance(doc, dict) else None
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{source}: missing or invalid schema_version in {META_KEY!r} metadata")
    if version > SCHEMA_VERSION:
        raise CheckpointError(
            f"{source}: checkpoint schema version {version} is newer than this mlet-compress supports "
            f"({SCHEMA_VERSION}); upgrade mlet-compress"
        )
    if not isinstance(doc.get("tables"), dict):
        raise CheckpointError(f"{source}: {META_KEY!r} metadata has no 'tables' object")
    return doc


def validate_tables(tables: dict[str, dict], infos: dict, source: str) -> None:
    """Check every table's factors exist with the recorded shapes and consistent dimensions."""
    for name, ent in tables.items():
        kind = ent.get("kind")
        if kind not in KINDS:
            raise CheckpointError(f"{source}: table {name!r} has unknown kind {kind!r} (known: {', '.join(KINDS)})")
        for fname, f in ent.get("factors", {}).items():
            key = f.get("key")
            if key not in infos:
                raise CheckpointError(f"{source}: table {name!r} factor {fname!r}: tensor {key!r} is missing")
            if "quant" not in f and list(infos[key].shape) != list(f["shape"]):
                raise CheckpointError(
                    f"{source}: table {name!r} factor {fname!r}: tensor {key!r} has shape "
                    f"{list(infos[key].shape)} but the metadata says {f['shape']}"
                )
            if "quant" in f and f["quant"].get("scale_key") not in infos:
                raise CheckpointError(f"{source}: table {name!r}: scale tensor {f['quant'].get('scale_key')!r} is missing")
        fac = ent.get("factors", {})
        if kind == "mlet":
            t, p = infos[fac["table"]["key"]].shape, infos[fac["proj"]["key"]].shape
            if len(t) != 2 or len(p) != 2 or t[1] != p[1]:
                raise CheckpointError(
                    f"{source}: table {name!r}: MLET table {list(t)} and projection {list(p)} disagree on the "
                    "inner dimension k (table is n×k, projection d×k)"
                )
        if kind == "lowrank":
            a, b = infos[fac["A"]["key"]].shape, infos[fac["B"]["key"]].shape
            if len(a) != 2 or len(b) != 2 or a[1] != b[0]:
                raise CheckpointError(f"{source}: table {name!r}: low-rank factors A {list(a)} and B {list(b)} disagree on the rank")


def load_header(path: Union[str, Path]) -> tuple[dict, dict]:
    """Read and validate the schema and tensor infos of a checkpoint without loading tensor data."""
    meta, infos, _ = read_header(path)
    doc = parse_metadata(meta, str(path))
    validate_tables(doc["tables"], infos, str(path))
    return doc, infos


def load_checkpoint(path: Union[str, Path]) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint` (or any mlet-compress command).

    Raises:
        CheckpointError: missing file, not safetensors, truncated, no/invalid/newer schema metadata, or
            tables whose tensors are missing or inconsistent.

    Example:
        >>> path = save_checkpoint(nn.Sequential(nn.Embedding(4, 2)), "/tmp/m.safetensors")
        >>> sorted(load_checkpoint(path).tables)
        ['0']
    """
    doc, _ = load_header(path)
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt data
        raise CheckpointError(f"{path}: cannot read tensors: {exc}") from None
    return Checkpoint(
        tensors=tensors,
        tables=doc["tables"],
        model_info=doc.get("model"),
        extra=doc.get("extra") or {},
        aliases=doc.get("aliases") or {},
        schema_version=doc["schema_version"],
        path=Path(path),
    )
