"""Convert PyTorch pickle checkpoints (``.pt``/``.pth``/``.bin``) to mlet-compress safetensors and back.

Pickles are read with ``torch.load(weights_only=True)`` only: a pickle that tries to run code is refused
and its payload never executes.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Optional, Union

import torch

from .atomic import atomic_path, resolve_output
from .checkpoint import infer_tables, load_checkpoint, save_checkpoint
from .errors import CheckpointError, ConfigError
from .safetensors_io import dtype_name
from .schema import TableEntry

PICKLE_SUFFIXES = (".pt", ".pth", ".bin")
# Default guess of which plain 2-D "<module>.weight" tensors are embedding tables (override with tables=).
DEFAULT_TABLE_REGEX = r"(?i).*emb.*"


def _extract_state_dict(obj, source: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a state dict (or one under 'state_dict'/'model'), got {type(obj).__name__}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    skipped = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if not tensors:
        raise CheckpointError(f"{source}: no tensors found (keys: {sorted(map(str, obj))[:8]})")
    if all(k.startswith("module.") for k in tensors):  # DistributedDataParallel prefix
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors, skipped


def load_pickle_state_dict(src: Union[str, Path]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Read a ``torch.save`` file safely; return its tensors (flattened state dict) and skipped keys."""
    src = Path(src)
    if not src.exists():
        raise CheckpointError(f"{src}: no such file")
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsupported content"
        raise CheckpointError(
            f"{src}: refused to unpickle: the file holds objects other than tensors and plain containers "
            f"(weights_only=True; {first[:160]})"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(f"{src}: not a readable torch checkpoint ({str(exc).splitlines()[0][:160]})") from None
    return _extract_state_dict(obj, str(src))


def plain_tables(state: dict[str, torch.Tensor], regex: str, taken: set[str]) -> dict[str, TableEntry]:
    """Schema entries for 2-D float ``<module>.weight`` tensors whose module name fully matches ``regex``."""
    try:
        pat = re.compile(regex)
    except re.error as exc:
        raise ConfigError(f"{{option}} is not a valid regex: {exc}", option="tables", value=regex) from None
    out = {}
    for key, t in state.items():
        if not key.endswith(".weight") or t.dim() != 2 or not t.is_floating_point():
            continue
        name = key[: -len(".weight")]
        if name in taken or not pat.fullmatch(name):
            continue
        out[name] = TableEntry.plain(name, key, tuple(t.shape), dtype_name(t.dtype))
    return out


def convert_to_safetensors(
    src: Union[str, Path],
    dst: Optional[Union[str, Path]] = None,
    *,
    tables: Optional[str] = None,
    force: bool = False,
) -> tuple[Path, dict[str, TableEntry]]:
    """Convert a ``torch.save`` state dict to an mlet-compress safetensors checkpoint.

    Args:
        src: ``.pt``/``.pth``/``.bin`` file: a bare state dict, or one nested under ``state_dict``/``model``.
        dst: output path (default: ``<stem>.safetensors`` beside ``src``).
        tables: regex (full match on the module name) of plain embedding tables; MLET pairs
            (``<name>.table`` + ``<name>.proj``) are always recognised. Default: names containing "emb".
        force: overwrite ``dst``.

    Returns:
        ``(output path, table entries written)``. Shared tensors are stored once, all contiguous.

    Raises:
        CheckpointError: unreadable file, a pickle carrying code, no tensors, bad output path.
    """
    state, skipped = load_pickle_state_dict(src)
    dst = resolve_output(src, dst if dst is not None else Path(src).with_suffix(".safetensors"), "", force)
    described = infer_tables(state)
    taken = set(described) | {k.rsplit(".", 1)[0] for k in state if k.endswith((".table", ".proj"))}
    described.update(plain_tables(state, tables or DEFAULT_TABLE_REGEX, taken))
    if tables is not None and not described:
        raise ConfigError(f"{{option}} matched no 2-D '<module>.weight' tensor in {src}", option="tables", value=tables)
    extra = {"converted_from": Path(src).name, "skipped_non_tensor_keys": skipped}
    save_checkpoint(state, dst, tables=described, extra=extra)
    return dst, described


def convert_to_torch(src: Union[str, Path], dst: Optional[Union[str, Path]] = None, *, force: bool = False) -> Path:
    """Write a checkpoint's full state dict (aliases included) with ``torch.save``, atomically."""
    ck = load_checkpoint(src)
    dst = resolve_output(src, dst if dst is not None else Path(src).with_suffix(".pt"), "", force)
    with atomic_path(dst) as tmp:
        torch.save(ck.state_dict(), tmp)
    return dst
