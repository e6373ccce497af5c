"""What an exported lookup needs from a table module, read from its state dict and public attributes only.

:func:`table_spec` turns any lookup module (plain/hashed ``nn.Embedding(Bag)``, MLET, low-rank, quantized)
into a :class:`TableSpec`: the stored rows (float weights, or packed integer codes with their scale), the
optional projection applied after the gather (low-rank ``B``, MLET ``proj.T``, the ``B`` of a quantized
low-rank table), hashing, and the bag options. Quantized modules are read only through
``state_dict()`` (``qweight``, ``scale``, optional ``B``: the checkpoint format) and their attributes, so
the exporters do not depend on the modules' in-memory layout.

Example:
    >>> import torch
    >>> from torch import nn
    >>> spec = table_spec("emb", nn.EmbeddingBag(10, 4, mode="sum"))
    >>> spec.kind, spec.bag, spec.mode, spec.row_dim
    ('plain', True, 'sum', 4)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..ops.quant import container_bits, packed_cols
from ..table_modules import BAG_KINDS, table_kind

#: Float table dtypes stored as they are; any other float dtype is stored as float32 (and said so).
KEPT_FLOAT_DTYPES = (torch.float32, torch.float16)


@dataclass(frozen=True)
class TableSpec:
    """One table as the exporters see it.

    Attributes:
        name: the module name (checkpoint table name).
        kind: ``plain`` / ``mlet`` / ``lowrank`` / ``quantized``.
        num_rows: stored rows (the buckets of a hashed table). embedding_dim: d of the output rows.
        row_dim: width of the stored rows (d, MLET's k, or the rank r).
        bag: an EmbeddingBag-like module. mode / include_last_offset / padding_idx: its options.
        num_buckets: hash modulus (``idx % num_buckets``) or None.
        weight: float rows (num_rows × row_dim) of a float table, else None.
        codes: packed uint8 codes (layout of :mod:`mlet_compress.ops.quant.packing`) of a quantized table.
        bits / granularity / scale: the quantizer (scale float32 or float16, [] or [num_rows]).
        project: row_dim × d float32 matrix applied after the gather (and after pooling), or None.
        notes: what the export changed (a dtype conversion), for the report.
    """

    name: str
    kind: str
    num_rows: int
    embedding_dim: int
    row_dim: int
    bag: bool
    mode: Optional[str] = None
    include_last_offset: bool = False
    padding_idx: Optional[int] = None
    num_buckets: Optional[int] = None
    weight: Optional[Tensor] = None
    codes: Optional[Tensor] = None
    bits: Optional[int] = None
    granularity: Optional[str] = None
    scale: Optional[Tensor] = None
    project: Optional[Tensor] = None
    notes: tuple[str, ...] = ()

    @property
    def container_bits(self) -> int:
        """Bits each stored code occupies (2, 4 or 8); 0 for float tables."""
        return container_bits(self.bits) if self.bits else 0

    def stored_bytes(self) -> int:
        """Bytes of the tensors a lookup reads: rows (or codes + scale) plus the projection."""
        tensors = [t for t in (self.weight, self.codes, self.scale, self.project) if t is not None]
        return sum(t.numel() * t.element_size() for t in tensors)

    def describe(self) -> str:
        """A short human description, e.g. ``quantized 4-bit row, low-rank r=8, hashed mod 1000, bag sum``."""
        head = {"plain": "plain", "mlet": f"mlet k={self.row_dim}", "lowrank": f"low-rank r={self.row_dim}"}
        parts = [head.get(self.kind) or f"quantized {self.bits}-bit {self.granularity}"]
        if self.kind == "quantized" and self.project is not None:
            parts.append(f"low-rank r={self.row_dim}")
        if self.num_buckets is not None:
            parts.append(f"hashed mod {self.num_buckets}")
        if self.bag:
            parts.append(f"bag {self.mode}")
        return ", ".join(parts)


def _float_rows(name: str, t: Tensor, what: str, notes: list[str]) -> Tensor:
    t = t.detach().cpu()
    if not t.is_floating_point():
        raise ConfigError(f"table {name!r}: {what} has dtype {t.dtype}, expected a float table")
    if t.dtype not in KEPT_FLOAT_DTYPES:
        notes.append(f"{name}: {what} stored as float32 (was {str(t.dtype).replace('torch.', '')})")
        t = t.to(torch.float32)
    return t.contiguous()


def _get(sd: dict, key: str, name: str) -> Tensor:
    if key not in sd or sd[key] is None:
        raise ConfigError(f"table {name!r}: its state dict has no {key!r} tensor; it is not a lookup module the "
                          "exporters know (plain, hashed, MLET, low-rank or quantized embedding)")
    return sd[key].detach().cpu()


def _quantized_fields(name: str, module: nn.Module, sd: dict) -> dict:
    bits, gran, code_dim = int(module.bits), str(module.granularity), int(module.code_dim)
    n = int(module.num_embeddings)
    codes, scale = _get(sd, "qweight", name), _get(sd, "scale", name)
    if codes.dtype != torch.uint8 or tuple(codes.shape) != (n, packed_cols(code_dim, bits)):
        raise ConfigError(f"table {name!r}: qweight is {codes.dtype} {tuple(codes.shape)}, expected uint8 "
                          f"({n}, {packed_cols(code_dim, bits)}) for {code_dim} {bits}-bit codes per row")
    want = () if gran == "table" else (n,)
    if tuple(scale.shape) != want or scale.dtype not in (torch.float32, torch.float16):
        raise ConfigError(f"table {name!r}: scale is {scale.dtype} {tuple(scale.shape)}, expected float32/float16 "
                          f"{want} for granularity={gran!r}")
    B = sd.get("B")
    return dict(codes=codes.contiguous(), scale=scale.contiguous(), bits=bits, granularity=gran, row_dim=code_dim,
                project=None if B is None else B.detach().cpu().to(torch.float32).contiguous())


def _fields(name: str, module: nn.Module, kind: str, notes: list[str]) -> dict:
    sd = module.state_dict()
    if kind == "quantized":
        return _quantized_fields(name, module, sd)
    if kind == "mlet":
        table = _float_rows(name, _get(sd, "table", name), "table", notes)
        proj = _get(sd, "proj", name).to(torch.float32)
        return dict(weight=table, row_dim=int(table.shape[1]), project=proj.T.contiguous())
    if kind == "lowrank":
        A = _float_rows(name, _get(sd, "A", name), "A", notes)
        return dict(weight=A, row_dim=int(A.shape[1]), project=_get(sd, "B", name).to(torch.float32).contiguous())
    w = _float_rows(name, _get(sd, "weight", name), "weight", notes)
    return dict(weight=w, row_dim=int(w.shape[1]))


def table_spec(name: str, module: nn.Module) -> TableSpec:
    """The :class:`TableSpec` of a lookup module.

    Args:
        name: the table's name (used in messages and graph names).
        module: a plain/hashed ``nn.Embedding``/``nn.EmbeddingBag``, ``MLETEmbedding(Bag)``,
            ``LowRankEmbedding(Bag)`` or ``QuantizedEmbedding(Bag)``.

    Returns:
        The spec; tensors are CPU copies/views of the module's state.

    Raises:
        ConfigError: not an embedding table, ``max_norm`` set, or tensors that do not fit the attributes.
    """
    kind = table_kind(module)
    if kind is None:
        raise ConfigError(f"{name!r} is a {type(module).__name__}, not an embedding table; export tables of kind "
                          "plain, hashed, MLET, low-rank or quantized")
    if getattr(module, "max_norm", None) is not None:
        raise ConfigError(f"table {name!r}: max_norm={module.max_norm} renormalises rows at lookup, which the exported "
                          "graph does not do; rebuild the table with max_norm=None")
    notes: list[str] = []
    fields = _fields(name, module, kind, notes)
    bag = isinstance(module, BAG_KINDS)
    mode = getattr(module, "mode", None) if bag else None
    if bag and mode == "max" and fields.get("project") is not None:
        raise ConfigError(f"table {name!r}: mode='max' does not commute with its projection; use 'sum' or 'mean'")
    rows = int((fields.get("weight") if fields.get("weight") is not None else fields["codes"]).shape[0])
    buckets = getattr(module, "num_buckets", None)
    return TableSpec(
        name=name, kind=kind, num_rows=rows, embedding_dim=int(module.embedding_dim), bag=bag, mode=mode,
        include_last_offset=bool(getattr(module, "include_last_offset", False)) if bag else False,
        padding_idx=getattr(module, "padding_idx", None), num_buckets=None if buckets is None else int(buckets),
        notes=tuple(notes), **fields,
    )


__all__ = ["TableSpec", "table_spec", "KEPT_FLOAT_DTYPES"]
