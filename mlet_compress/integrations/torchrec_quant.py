"""Export our symmetric quantized tables as a ``torchrec.quant.EmbeddingBagCollection`` (FBGEMM fused rows).

FBGEMM's n-bit row-wise format is asymmetric: a row holds unsigned codes u (INT8: one byte each; INT4: two
per byte, element 2i in the low nibble; INT2: four per byte, lowest bits first) and an fp16 ``scale`` and
fp16 ``bias``; the value is ``u·scale + bias``. Our b-bit symmetric codes q (two's complement in a
c-bit container, c = 8, 4 or 2, same nibble order) map onto it exactly:

    u = q + 2^(c−1)   (XOR of each packed field's sign bit: 0x80, 0x88 or 0xAA per byte)
    scale = fp16(s),  bias = −2^(c−1)·fp16(s)   (exact: a power-of-two multiple of an fp16 number)

so every exported value is ``q·fp16(s)``, computed without round-off in fp32 (q has ≤ 8 significant bits,
fp16(s) 11). The only change is the rounding of s to fp16: relative error ≤ 2^-11 ≈ 4.9e-4 while
6.1e-5 ≤ s ≤ 65504/2^(c−1); below 6.1e-5 fp16 is subnormal (absolute step 2^-24, so the relative error
grows as s shrinks, and s < 2^-25 becomes 0), above the range the bias overflows (refused).
:func:`fp16_scale_error` measures it per table; :func:`to_torchrec_quant` records it on the module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..errors import ConfigError, NumericalError
from ..ops.quant import check_bits, container_bits, packed_cols, unpack_rows
from .torchrec_ebc import INSTALL_HINT, KeyedJaggedTensor, TorchRecUnavailableError  # noqa: F401  (imports torchrec)

try:
    from torchrec.modules.embedding_configs import DataType, EmbeddingBagConfig, PoolingType
    from torchrec.quant.embedding_modules import EmbeddingBagCollection as QuantEmbeddingBagCollection
except (ImportError, OSError) as exc:
    raise TorchRecUnavailableError(f"torchrec.quant cannot be imported ({exc}); {INSTALL_HINT}") from exc

_DATA_TYPE = {8: DataType.INT8, 4: DataType.INT4, 2: DataType.INT2}
_SIGN_MASK = {8: 0x80, 4: 0x88, 2: 0xAA}
_POOLING = {"sum": PoolingType.SUM, "mean": PoolingType.MEAN}
FP16_MAX = 65504.0


@dataclass
class QuantTable:
    """One quantized table in our layout (see :mod:`mlet_compress.ops.quant.packing`).

    Attributes:
        name: table name. packed: uint8 n×packed_cols(d, bits), two's-complement codes.
        scale: float32 [] (per table) or [n] (per row). bits: 2..8. embedding_dim: d.
        feature_names: features looked up in this table (default ``[name]``). pooling: "sum" or "mean".
    """

    name: str
    packed: Tensor
    scale: Tensor
    bits: int
    embedding_dim: int
    feature_names: list[str] = field(default_factory=list)
    pooling: str = "sum"

    @classmethod
    def from_module(cls, name: str, module, feature_names: Optional[list[str]] = None) -> "QuantTable":
        """From a :class:`~mlet_compress.QuantizedEmbeddingBag` (plain: no low-rank ``B``, hashing or ``padding_idx``).

        Raises:
            ConfigError: a low-rank, hashed or padded module, or a pooling FBGEMM does not have.
        """
        for attr, what in (("B", "a low-rank factor (B)"), ("num_buckets", "hashed indices"),
                           ("padding_idx", "a padding_idx")):
            if getattr(module, attr, None) is not None:
                raise ConfigError(f"table {name!r}: {what} has no FBGEMM equivalent; export plain quantized tables")
        return cls(name, module.qweight, module.scale, module.bits, module.embedding_dim,
                   list(feature_names or [name]), getattr(module, "mode", "sum"))


def _validate(t: QuantTable) -> int:
    """Check one table; returns its container bits."""
    check_bits(t.bits, f"table {t.name!r}")
    cb, d = container_bits(t.bits), t.embedding_dim
    if t.pooling not in _POOLING:
        raise ConfigError(f"table {t.name!r}: pooling={t.pooling!r}; FBGEMM pools with 'sum' or 'mean'")
    if (d * cb) % 8:
        raise ConfigError(f"table {t.name!r}: d={d} codes of {cb} bits do not fill whole bytes; FBGEMM INT{cb} "
                          f"needs d divisible by {8 // cb}")
    if t.packed.dtype != torch.uint8 or t.packed.dim() != 2 or t.packed.shape[1] != packed_cols(d, t.bits):
        raise ConfigError(f"table {t.name!r}: packed codes must be uint8 n×{packed_cols(d, t.bits)}, "
                          f"got {t.packed.dtype} {tuple(t.packed.shape)}")
    if t.scale.dim() > 1 or (t.scale.dim() == 1 and t.scale.shape[0] != t.packed.shape[0]):
        raise ConfigError(f"table {t.name!r}: scale must be [] or [{t.packed.shape[0]}], got {tuple(t.scale.shape)}")
    return cb


def fbgemm_rows(t: QuantTable) -> tuple[Tensor, Tensor]:
    """Our table as FBGEMM's split fused rows: (codes uint8 n×(d·c/8), scale_bias uint8 n×4 = fp16 scale, fp16 bias).

    Raises:
        ConfigError: bad shapes/bits, or a scale whose fp16 bias overflows (|s|·2^(c−1) > 65504) or is not finite.

    Example:
        >>> t = QuantTable("t", torch.tensor([[0xFF, 0x01]], dtype=torch.uint8), torch.tensor(0.5), 8, 2)
        >>> codes, sb = fbgemm_rows(t); codes.tolist(), sb.view(torch.float16).tolist()
        ([[127, 129]], [[0.5, -64.0]])
    """
    cb = _validate(t)
    n = t.packed.shape[0]
    s = t.scale.detach().to(torch.float32).cpu().expand(n)
    offset = float(1 << (cb - 1))
    smax = float(s.abs().max()) if n else 0.0
    if not bool(torch.isfinite(s).all()) or smax * offset > FP16_MAX:
        raise ConfigError(f"table {t.name!r}: scale max {smax:.4g} overflows FBGEMM's fp16 "
                          f"bias (needs |s|·{int(offset)} ≤ {FP16_MAX}); rescale the table before quantizing")
    s16 = s.to(torch.float16)
    bias16 = (s16.to(torch.float32) * -offset).to(torch.float16)  # exact: power-of-two multiple
    codes = torch.bitwise_xor(t.packed.detach().cpu(), _SIGN_MASK[cb])
    scale_bias = torch.stack([s16, bias16], dim=1).contiguous().view(torch.uint8)
    return codes, scale_bias


def fp16_scale_error(t: QuantTable) -> float:
    """Relative L2 error ‖Q·fp16(s) − Q·s‖ / ‖Q·s‖ that FBGEMM's fp16 scale adds to the table (0 for an all-zero table).

    Example:
        >>> t = QuantTable("t", torch.full((4, 8), 3, dtype=torch.uint8), torch.tensor(0.1), 8, 8)
        >>> round(fp16_scale_error(t), 6)  # |fp16(0.1) − 0.1| / 0.1
        0.000244
    """
    _validate(t)
    q2 = unpack_rows(t.packed.detach().cpu(), t.bits, t.embedding_dim).to(torch.float64).pow(2).sum(1)
    s = t.scale.detach().cpu().to(torch.float32).expand(q2.shape[0])
    ds = s.to(torch.float16).to(torch.float64) - s.to(torch.float64)
    sig = float((q2 * s.to(torch.float64) ** 2).sum())
    return 0.0 if sig == 0 else (float((q2 * ds**2).sum()) / sig) ** 0.5


def to_torchrec_quant(tables: Sequence[QuantTable], is_weighted: bool = False, output_dtype: torch.dtype = torch.float32,
                      max_fp16_error: Optional[float] = None) -> QuantEmbeddingBagCollection:
    """A CPU ``torchrec.quant.EmbeddingBagCollection`` holding our quantized tables in FBGEMM's fused row layout.

    Args:
        tables: :class:`QuantTable` per table (e.g. ``QuantTable.from_module(name, quantized_bag)``).
        is_weighted: whether input KJTs carry per-sample weights. output_dtype: pooled output dtype.
        max_fp16_error: refuse tables whose :func:`fp16_scale_error` exceeds this (e.g. ``2**-11``: only
            scales in fp16's normal range pass); None records the error without checking.

    Returns:
        The module; lookups equal pools of ``q·fp16(s)``. ``module.fp16_scale_error`` maps each table to
        :func:`fp16_scale_error` (the only deviation from our fp32-scale tables).

    Raises:
        ConfigError: duplicate names, bad shapes/bits/pooling, d not filling whole bytes, fp16 overflow.
        NumericalError: a scale rounds to 0 in fp16 (|s| < 2^-25) while its codes are not all zero, or a
            table's fp16 error exceeds ``max_fp16_error``.

    Example:
        >>> from torch import nn
        >>> from mlet_compress import QuantizedEmbeddingBag
        >>> bag = QuantizedEmbeddingBag.from_float(nn.EmbeddingBag(100, 8, mode="sum"), bits=4)
        >>> qebc = to_torchrec_quant([QuantTable.from_module("t0", bag)])
        >>> kjt = KeyedJaggedTensor.from_lengths_sync(["t0"], torch.tensor([1, 2, 3]), torch.tensor([2, 1]))
        >>> qebc(kjt).values().shape
        torch.Size([2, 8])
    """
    if not tables:
        raise ConfigError("to_torchrec_quant: no tables")
    names = [t.name for t in tables]
    if len(set(names)) != len(names):
        raise ConfigError(f"to_torchrec_quant: duplicate table names in {names}")
    configs, weights, errors = [], {}, {}
    for t in tables:
        codes, scale_bias = fbgemm_rows(t)
        s16 = scale_bias.view(torch.float16)[:, 0]
        if bool(((s16 == 0) & (t.scale.detach().cpu().expand(s16.shape[0]) != 0)).any()):
            raise NumericalError(f"table {t.name!r}: a scale below 2^-25 rounds to 0 in fp16; rescale the table")
        configs.append(EmbeddingBagConfig(name=t.name, embedding_dim=t.embedding_dim, num_embeddings=codes.shape[0],
                                          feature_names=list(t.feature_names or [t.name]),
                                          data_type=_DATA_TYPE[container_bits(t.bits)], pooling=_POOLING[t.pooling]))
        weights[t.name] = (codes, scale_bias)
        errors[t.name] = fp16_scale_error(t)
        if max_fp16_error is not None and errors[t.name] > max_fp16_error:
            raise NumericalError(f"table {t.name!r}: fp16 scales add a relative error of {errors[t.name]:.3g} > "
                                 f"{max_fp16_error:.3g} (scales below 6.1e-5 are fp16-subnormal); keep it unquantized "
                                 "or scale the table up before quantizing")
    module = QuantEmbeddingBagCollection(configs, is_weighted, torch.device("cpu"), output_dtype=output_dtype,
                                         table_name_to_quantized_weights=weights)
    module.fp16_scale_error = errors
    return module


__all__ = ["QuantTable", "fbgemm_rows", "fp16_scale_error", "to_torchrec_quant", "QuantEmbeddingBagCollection"]
