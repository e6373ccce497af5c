"""Readers of the checkpoints people have: plain safetensors (single file, sharded, Hugging Face folders),
``torch.save`` pickles (``weights_only=True`` only) and mlet-compress files, behind one :class:`Source`.

A :class:`Source` lists its tensors (key, dtype, shape, bytes) without loading them and hands out
whole tensors or row chunks on demand; safetensors files are memory-mapped, so a converter copies a
multi-gigabyte model a few chunks at a time.
"""

from __future__ import annotations

import json
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import torch

from ..checkpoint import load_header
from ..errors import CheckpointError
from ..safetensors_io import read_header
from ..schema import META_KEY, CheckpointHeader
from ..streaming import RowReader

PICKLE_SUFFIXES = (".pt", ".pth", ".bin")
#: What :attr:`Source.format` says.
FORMATS = ("mlet-compress", "safetensors", "safetensors-sharded", "torch", "torch-sharded")
#: Files looked for, in order, when the input is a folder (a Hugging Face model directory).
FOLDER_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                "pytorch_model.bin")


@dataclass(frozen=True)
class TensorMeta:
    """One tensor of a source: its key, dtype, shape and size, read from the header only."""

    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes."""
        n = torch.empty((), dtype=self.dtype).element_size()
        for s in self.shape:
            n *= int(s)
        return n


@dataclass
class Source:
    """An opened checkpoint: tensor metadata in file order, and the tensors on demand.

    Attributes:
        path: the file the user named (an index file or folder for sharded checkpoints).
        format: one of :data:`FORMATS`.
        metas: key → :class:`TensorMeta`, in file order.
        header: the mlet-compress header (``format == "mlet-compress"`` only).
        metadata: the file's other ``__metadata__`` entries (``{"format": "pt"}`` for Hugging Face files).
        skipped: keys of a pickle that are not tensors (epoch counters, optimizer names, ...).
        aliases: pickles only: key → the earlier key whose storage it shares (tied weights).
        file_bytes: bytes of the file(s) on disk.
    """

    path: Path
    format: str
    metas: dict[str, TensorMeta]
    header: Optional[CheckpointHeader] = None
    metadata: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    file_bytes: int = 0
    _readers: dict[str, RowReader] = field(default_factory=dict, repr=False)
    _state: Optional[dict[str, torch.Tensor]] = field(default=None, repr=False)

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release the memory mappings."""
        for r in set(self._readers.values()):
            r.close()
        self._readers.clear()

    @property
    def is_mlet(self) -> bool:
        """True for a checkpoint already in the mlet-compress format."""
        return self.format == "mlet-compress"

    def state_dict(self) -> Optional[dict[str, torch.Tensor]]:
        """The in-memory state dict of a pickle (None for safetensors sources, which stream)."""
        return self._state

    def tensor(self, key: str) -> torch.Tensor:
        """A copy of the whole tensor ``key``."""
        if self._state is not None:
            return self._state[key]
        return self._reader(key).full(key)

    def chunks(self, key: str, chunk_bytes: int = 64 << 20) -> Iterator[torch.Tensor]:
        """Row chunks of ``key`` (views of the mapping for safetensors; the tensor itself for pickles)."""
        if self._state is not None:
            yield self._state[key].detach().contiguous()
            return
        meta = self.metas[key]
        rows = max(1, chunk_bytes // max(1, meta.nbytes // max(1, meta.shape[0]))) if meta.shape and meta.shape[0] else 1
        yield from self._reader(key).chunks(key, rows)

    def reader(self) -> RowReader:
        """The :class:`RowReader` of a single-file safetensors source (what the streaming stages read)."""
        readers = set(self._readers.values())
        if len(readers) != 1:
            raise CheckpointError(f"{self.path}: not a single safetensors file")
        return next(iter(readers))

    def _reader(self, key: str) -> RowReader:
        try:
            return self._readers[key]
        except KeyError:
            raise CheckpointError(f"{self.path}: tensor {key!r} is missing") from None


def _safetensors_file(path: Path) -> Source:
    meta, infos, _ = read_header(path)
    if META_KEY in meta:
        header, _ = load_header(path)
        renames = dict(header.key_renames)
        reader = RowReader(path, renames)
        metas = {renames.get(k, k): TensorMeta(renames.get(k, k), i.dtype, i.shape)
                 for k, i in sorted(infos.items(), key=lambda kv: kv[1].begin)}
        return Source(path, "mlet-compress", metas, header=header, file_bytes=path.stat().st_size,
                      _readers={k: reader for k in metas})
    reader = RowReader(path)
    metas = {k: TensorMeta(k, i.dtype, i.shape) for k, i in sorted(infos.items(), key=lambda kv: kv[1].begin)}
    return Source(path, "safetensors", metas, metadata=dict(meta), file_bytes=path.stat().st_size,
                  _readers={k: reader for k in metas})


def _weight_map(index: Path) -> dict[str, str]:
    try:
        doc = json.loads(index.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{index}: not a readable shard index ({exc})") from None
    wmap = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(wmap, dict) or not wmap:
        raise CheckpointError(f"{index}: no 'weight_map' object; expected a Hugging Face shard index "
                              "(model.safetensors.index.json)")
    return {str(k): str(v) for k, v in wmap.items()}


def _sharded(index: Path) -> Source:
    wmap = _weight_map(index)
    shards = sorted(set(wmap.values()), key=list(dict.fromkeys(wmap.values())).index)
    if all(s.endswith(".safetensors") for s in shards):
        return _sharded_safetensors(index, wmap, shards)
    if all(s.endswith(PICKLE_SUFFIXES) for s in shards):
        state: dict[str, torch.Tensor] = {}
        skipped: list[str] = []
        for s in shards:
            part = _pickle(index.parent / s)
            state.update(part.state_dict() or {})
            skipped += part.skipped
        return _pickle_source(index, state, skipped, "torch-sharded",
                              sum((index.parent / s).stat().st_size for s in shards))
    raise CheckpointError(f"{index}: shards {shards[:3]} mix formats; expected all .safetensors or all .bin")


def _sharded_safetensors(index: Path, wmap: dict[str, str], shards: list[str]) -> Source:
    readers: dict[str, RowReader] = {}
    metas: dict[str, TensorMeta] = {}
    metadata: dict[str, str] = {}
    size = 0
    for s in shards:
        path = index.parent / s
        meta, infos, _ = read_header(path)
        if META_KEY in meta:
            raise CheckpointError(f"{path}: an mlet-compress checkpoint inside a shard index; convert it on its own")
        metadata.update(meta)
        reader = RowReader(path)
        size += path.stat().st_size
        for k, i in sorted(infos.items(), key=lambda kv: kv[1].begin):
            if k in metas:
                raise CheckpointError(f"{index}: tensor {k!r} is stored in two shards")
            metas[k], readers[k] = TensorMeta(k, i.dtype, i.shape), reader
    missing = sorted(set(wmap) - set(metas))
    if missing:
        raise CheckpointError(f"{index}: the weight_map names {len(missing)} tensor(s) no shard holds, e.g. {missing[0]!r}")
    return Source(index, "safetensors-sharded", metas, metadata=metadata, file_bytes=size, _readers=readers)


def _extract_state_dict(obj: Any, source: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    outer: list[str] = []
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                outer = sorted(str(k) for k in obj if k != key)  # epoch counters, optimizer state, ...
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a state dict (or one under 'state_dict'/'model'), got {type(obj).__name__}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    skipped = outer + sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if not tensors:
        raise CheckpointError(f"{source}: no tensors found (keys: {sorted(map(str, obj))[:8]})")
    if all(k.startswith("module.") for k in tensors):  # DistributedDataParallel prefix
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors, skipped


def load_pickle_state_dict(src: Union[str, Path]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Read a ``torch.save`` file safely (``weights_only=True``); return its tensors and the skipped keys.

    A state dict nested under ``state_dict``/``model``/``model_state_dict`` is found; a DDP ``module.``
    prefix on every key is removed.

    Raises:
        CheckpointError: missing file, a pickle that carries code (refused, never run), no tensors.
    """
    src = Path(src)
    if not src.exists():
        raise CheckpointError(f"{src}: no such file")
    try:
        with warnings.catch_warnings():  # torch's note on the pickle protocol: nothing the user can act on
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
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


def _shared_keys(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """key → the first key viewing the same storage, offset, shape and stride (tied weights)."""
    seen: dict[tuple, str] = {}
    aliases = {}
    for k, t in state.items():
        if t.layout != torch.strided or not t.numel():
            continue
        sig = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if sig in seen:
            aliases[k] = seen[sig]
        else:
            seen[sig] = k
    return aliases


def _pickle_source(path: Path, state: dict[str, torch.Tensor], skipped: list[str], fmt: str, size: int) -> Source:
    bad = [k for k, t in state.items() if t.layout != torch.strided]
    if bad:
        raise CheckpointError(f"{path}: tensor {bad[0]!r} is {state[bad[0]].layout}; only dense tensors can be converted")
    metas = {k: TensorMeta(k, t.dtype, tuple(int(s) for s in t.shape)) for k, t in state.items()}
    return Source(path, fmt, metas, skipped=skipped, aliases=_shared_keys(state), file_bytes=size, _state=state)


def _pickle(path: Path) -> Source:
    state, skipped = load_pickle_state_dict(path)
    return _pickle_source(path, state, skipped, "torch", path.stat().st_size)


def resolve_input(src: Union[str, Path]) -> Path:
    """The file to read for ``src``: itself, or in a folder the first of :data:`FOLDER_FILES`.

    Raises:
        CheckpointError: missing path, or a folder holding none of the known files.
    """
    p = Path(src)
    if not p.exists():
        raise CheckpointError(f"{p}: no such file")
    if p.is_dir():
        for name in FOLDER_FILES:
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p}: a folder without {' / '.join(FOLDER_FILES)}; name the checkpoint file instead")
    return p


def open_source(src: Union[str, Path]) -> Source:
    """Open any supported checkpoint (see the module docstring) without loading safetensors data.

    Args:
        src: a ``.safetensors`` file (mlet-compress or plain), a ``*.index.json`` shard index, a
            ``.pt``/``.pth``/``.bin`` pickle, or a Hugging Face model folder.

    Returns:
        An open :class:`Source` (use it as a context manager, or call :meth:`Source.close`).

    Raises:
        CheckpointError: missing, unreadable or unsupported file; a pickle that carries code.

    Example:
        >>> with open_source("model.safetensors") as s:   # doctest: +SKIP
        ...     s.format, len(s.metas)
        ('safetensors', 201)
    """
    p = resolve_input(src)
    name = p.name.lower()
    if name.endswith(".index.json"):
        return _sharded(p)
    if name.endswith(".safetensors"):
        return _safetensors_file(p)
    if name.endswith(PICKLE_SUFFIXES):
        return _pickle(p)
    raise CheckpointError(f"{p}: unknown checkpoint type {p.suffix!r}; expected .safetensors, "
                          ".safetensors.index.json, .pt, .pth or .bin")


__all__ = ["PICKLE_SUFFIXES", "FORMATS", "FOLDER_FILES", "TensorMeta", "Source", "open_source", "resolve_input",
           "load_pickle_state_dict"]
