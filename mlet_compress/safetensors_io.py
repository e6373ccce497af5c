"""Low-level safetensors I/O: header parsing with clear errors, atomic writes and a streaming writer.

The safetensors layout is an 8-byte little-endian header length, a JSON header (tensor name →
dtype, shape, byte offsets; plus ``__metadata__``), then the raw tensor bytes. Once every output shape is
known the header can be written first and the tensor bytes streamed after it, chunk by chunk, so a
checkpoint-level transformation never holds a whole table in memory.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .errors import CheckpointError

DTYPE_TO_ST = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
ST_TO_DTYPE = {v: k for k, v in DTYPE_TO_ST.items()}
MAX_HEADER = 100 * 1024 * 1024


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` → ``"float32"`` (the names used in the checkpoint schema)."""
    return str(dtype).replace("torch.", "")


@dataclass(frozen=True)
class TensorInfo:
    """A tensor's entry in a safetensors header."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes."""
        return self.end - self.begin


def read_header(path: str | Path) -> tuple[dict[str, str], dict[str, TensorInfo], int]:
    """Parse and validate a safetensors header without reading tensor data.

    Returns:
        ``(metadata, tensors, data_start)``: the ``__metadata__`` dict, the tensor infos by name, and
        the file offset where tensor data begins.

    Raises:
        CheckpointError: missing file, not safetensors, or truncated.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such file")
    if p.is_dir():
        raise CheckpointError(f"{p}: is a directory, expected a .safetensors file")
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{p}: not a safetensors file (only {size} bytes)")
            (hlen,) = struct.unpack("<Q", head)
            if hlen == 0 or hlen > MAX_HEADER or 8 + hlen > size:
                raise CheckpointError(f"{p}: not a safetensors file (bad header length {hlen} for a {size}-byte file)")
            raw = fh.read(hlen)
    except OSError as exc:
        raise CheckpointError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{p}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{p}: not a safetensors file (header is not a JSON object)")
    meta = header.pop("__metadata__", None) or {}
    data_start = 8 + hlen
    infos: dict[str, TensorInfo] = {}
    for name, ent in header.items():
        try:
            dt = ST_TO_DTYPE[ent["dtype"]]
            shape = tuple(int(s) for s in ent["shape"])
            b, e = (int(x) for x in ent["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{p}: malformed header entry for tensor {name!r}") from None
        infos[name] = TensorInfo(name, dt, shape, b, e)
    end = max((i.end for i in infos.values()), default=0)
    if data_start + end > size:
        raise CheckpointError(
            f"{p}: truncated file: tensor data needs {data_start + end} bytes but the file has {size}"
        )
    return meta, infos, data_start


class StreamingWriter:
    """Write a safetensors file whose tensors arrive in row chunks.

    Args:
        fh: a binary file opened for writing (usually from :func:`atomic_path`).
        entries: ``[(name, dtype, shape), ...]`` in the order the data will be written.
        metadata: the ``__metadata__`` string dict.

    Call :meth:`write` with consecutive chunks of each tensor in ``entries`` order, then :meth:`close`,
    which checks every byte promised by the header was written.
    """

    def __init__(self, fh, entries: list[tuple[str, torch.dtype, tuple[int, ...]]], metadata: Optional[dict[str, str]] = None):
        self.fh = fh
        header: dict = {}
        if metadata:
            header["__metadata__"] = metadata
        offset = 0
        self._sizes: list[tuple[str, int]] = []
        for name, dtype, shape in entries:
            nbytes = torch.empty((), dtype=dtype).element_size()
            for s in shape:
                nbytes *= int(s)
            header[name] = {"dtype": DTYPE_TO_ST[dtype], "shape": [int(s) for s in shape], "data_offsets": [offset, offset + nbytes]}
            self._sizes.append((name, nbytes))
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * ((8 - len(raw) % 8) % 8)
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        self._i = 0
        self._written = 0

    def write(self, name: str, chunk: torch.Tensor) -> None:
        """Append the bytes of ``chunk`` (rows of tensor ``name``, which must be the current tensor)."""
        while self._i < len(self._sizes) and self._written == self._sizes[self._i][1] and self._sizes[self._i][0] != name:
            self._i, self._written = self._i + 1, 0
        if self._i >= len(self._sizes) or self._sizes[self._i][0] != name:
            raise RuntimeError(f"StreamingWriter: got data for {name!r} out of order")
        data = chunk.detach().contiguous().cpu()
        if data.dtype == torch.bfloat16:
            data = data.view(torch.int16)
        buf = memoryview(data.numpy()).cast("B")
        self._written += buf.nbytes
        if self._written > self._sizes[self._i][1]:
            raise RuntimeError(f"StreamingWriter: too many bytes for {name!r}")
        self.fh.write(buf)

    def close(self) -> None:
        """Check that every tensor was written completely."""
        done = sum(s for _, s in self._sizes[: self._i]) + self._written
        total = sum(s for _, s in self._sizes)
        if done != total:
            raise RuntimeError(f"StreamingWriter: wrote {done} of {total} data bytes")
