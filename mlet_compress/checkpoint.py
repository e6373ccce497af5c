"""Save and load models as mlet-compress checkpoints: safetensors files with the table schema.

The metadata key ``"mlet_compress"`` holds the header of :mod:`mlet_compress.schema` (schema version,
tables, aliases, model, extra); every embedding table is a :class:`~mlet_compress.schema.TableEntry`, so
command-line tools process a checkpoint with no model code. See ``docs/checkpoint-format.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ._version import __version__
from .atomic import atomic_path
from .errors import CheckpointError
from .integrations import ebc_tables
from .safetensors_io import TensorInfo, dtype_name, read_header
from .schema import META_KEY, SCHEMA_VERSION, CheckpointHeader, Factor, TableEntry
from .table_modules import entry_from_module

PRODUCER = f"mlet-compress {__version__}"


def describe_model(model: nn.Module) -> dict[str, TableEntry]:
    """The entries of every embedding table in ``model`` (aliases recorded once, under the first name).

    The tables of TorchRec ``EmbeddingBagCollection`` s (plain or MLET) are described per EBC table, named
    ``<ebc path>.embedding_bags.<table>`` (:mod:`~mlet_compress.integrations.ebc_tables`).
    """
    ebcs = ebc_tables.find_ebc_tables(model)
    owned = ebc_tables.owned_module_ids(ebcs)
    seen: dict[int, str] = {}
    tables: dict[str, TableEntry] = {t.name: ebc_tables.table_entry(t) for t in ebcs}
    for name, mod in model.named_modules(remove_duplicate=False):
        if id(mod) in owned:
            continue
        if id(mod) in seen:
            first = seen[id(mod)]
            if first in tables:
                tables[first] = dataclasses.replace(tables[first], aliases=tables[first].aliases + (name,))
            continue
        seen[id(mod)] = name
        entry = entry_from_module(name, mod)
        if entry is not None:
            tables[name] = entry
    return tables


def infer_tables(state_dict: dict[str, torch.Tensor]) -> dict[str, TableEntry]:
    """Entries recoverable from a bare state dict: MLET pairs ``<name>.table`` + ``<name>.proj``.

    Plain tables cannot be told from other 2-D weights without the model; pass ``tables=`` or save the
    model itself to describe them.
    """
    tables = {}
    for key, t in state_dict.items():
        if key.endswith(".table") and t.dim() == 2:
            name = key[: -len(".table")]
            proj = state_dict.get(name + ".proj")
            if proj is not None and proj.dim() == 2 and proj.shape[1] == t.shape[1]:
                tables[name] = TableEntry.mlet(name, _factor(key, t), _factor(name + ".proj", proj))
    return tables


def _factor(key: str, t: torch.Tensor) -> Factor:
    return Factor(key, tuple(int(s) for s in t.shape), dtype_name(t.dtype))


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


def _fold_aliased_tables(tables: dict[str, TableEntry], aliases: dict[str, str]) -> None:
    """Entries whose tensors are all aliases of another table's become that table's ``aliases``."""
    owner = {key: name for name, e in tables.items() for key in e.tensor_keys()}

    def add_alias(target: str, alias: str) -> None:
        e = tables[target]
        if alias not in e.aliases:
            tables[target] = dataclasses.replace(e, aliases=e.aliases + (alias,))

    for name in list(tables):
        keys = tables[name].tensor_keys()
        if keys and all(k in aliases for k in keys):
            target = owner.get(aliases[keys[0]])
            if target is not None and target != name and target in tables:
                add_alias(target, name)
                del tables[name]
    # alias keys of a table's tensors under another module name make that name an alias of the table
    for alias_key, key in aliases.items():
        name = owner.get(key)
        if name is None or name not in tables or not key.startswith(name + "."):
            continue
        suffix = key[len(name):]
        if alias_key.endswith(suffix):
            alias_mod = alias_key[: -len(suffix)]
            if alias_mod not in tables:
                add_alias(name, alias_mod)


def save_checkpoint(
    model_or_state_dict: Union[nn.Module, dict[str, torch.Tensor]],
    path: Union[str, Path],
    *,
    model_info: Optional[dict] = None,
    extra: Optional[dict] = None,
    tables: Optional[dict[str, TableEntry]] = None,
) -> Path:
    """Save a model (or state dict) as a safetensors checkpoint with the table schema, atomically.

    Args:
        model_or_state_dict: an ``nn.Module`` (its embedding tables are described from the modules) or
            a state dict (MLET pairs ``<name>.table``/``<name>.proj`` are recognised; pass ``tables``
            for anything else).
        path: destination ``.safetensors`` path (written to a temp file, then renamed into place).
        model_info: JSON-able description of the model (e.g. ``{"name": "dlrm", "config": {...}}``).
        extra: any other JSON-able metadata (vocabularies, preprocessing, ...).
        tables: explicit :class:`~mlet_compress.schema.TableEntry` objects by name (override what is inferred).

    Raises:
        CheckpointError: non-tensor or non-dense state entries, or table entries that do not fit the tensors.

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
    header = CheckpointHeader(described, aliases, model_info, extra or {})
    header.validate({k: v for k, v in kept.items()} | {a: kept[k] for a, k in aliases.items()}, str(path))
    meta = header.to_metadata(PRODUCER)
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(kept, str(tmp), metadata=meta)
    return path


@dataclass
class Checkpoint:
    """A loaded checkpoint: tensors by state-dict key plus the parsed header.

    Attributes:
        tensors: the stored tensors (aliases not repeated). tables: name → :class:`TableEntry`.
        model_info / extra / aliases / schema_version: as in the header. path: the file it came from.
    """

    tensors: dict[str, torch.Tensor]
    tables: dict[str, TableEntry]
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

    @property
    def header(self) -> CheckpointHeader:
        """The checkpoint's header (what a streaming rewrite of it starts from)."""
        return CheckpointHeader(self.tables, self.aliases, self.model_info, self.extra, self.schema_version)


def load_header(path: Union[str, Path]) -> tuple[CheckpointHeader, dict[str, TensorInfo]]:
    """Read and validate a checkpoint's header and tensor infos without loading tensor data.

    The infos are keyed by the tensors' on-disk names; ``header.key_renames`` maps the names a schema
    migration changed (old files) to their current ones.

    Raises:
        CheckpointError: missing file, not safetensors, truncated, no/invalid/newer schema, or tables whose
            tensors are missing or inconsistent.
    """
    meta, infos, _ = read_header(path)
    header = CheckpointHeader.from_metadata(meta, str(path))
    header.validate(infos, str(path))
    return header, infos


def load_checkpoint(path: Union[str, Path]) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint` (or any mlet-compress command, any schema version).

    Raises:
        CheckpointError: missing file, not safetensors, truncated, no/invalid/newer schema metadata, or
            tables whose tensors are missing or inconsistent.

    Example:
        >>> path = save_checkpoint(nn.Sequential(nn.Embedding(4, 2)), "/tmp/m.safetensors")
        >>> sorted(load_checkpoint(path).tables)
        ['0']
    """
    header, _ = load_header(path)
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for corrupt data
        raise CheckpointError(f"{path}: cannot read tensors: {exc}") from None
    tensors = {header.key_renames.get(k, k): t for k, t in tensors.items()}
    return Checkpoint(tensors=tensors, tables=dict(header.tables), model_info=header.model, extra=dict(header.extra),
                      aliases=dict(header.aliases), schema_version=header.schema_version, path=Path(path))


__all__ = ["META_KEY", "SCHEMA_VERSION", "PRODUCER", "Checkpoint", "save_checkpoint", "load_checkpoint", "load_header",
           "describe_model", "infer_tables"]
