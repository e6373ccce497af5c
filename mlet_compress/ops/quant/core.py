"""The uniform symmetric quantizer of the paper (§4.3): validation, quantize, dequantize, candidate scales.

``q = clamp(round(w / s), -qmax, qmax)`` (round half to even), ``ŵ = s·q``, ``qmax = 2^(b-1) - 1``; the
candidate scales are ``s_i = max|w|·i/(grid·qmax)``, i = 1..grid, and the chosen one minimises ‖w − ŵ‖₂.
Per-row scales at 5–8 bits also search a 20× finer grid between the best candidate's two neighbours
(:func:`fine_candidates`): with large codes the error oscillates between neighbouring scales, and the
100-point grid alone left rows of a Gaussian table at up to 2.2× the error of a 2000-point grid.
This module holds the element-wise math and the exhaustive reference search; :mod:`.search` finds the
same scale fast, :mod:`.packing` stores the codes, :mod:`.table` quantizes whole (streamed) tables.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ...errors import ConfigError, NumericalError
from ..rows import check_float

MIN_BITS, MAX_BITS = 2, 8
GRANULARITIES = ("table", "row")
#: Smallest candidate scale (the smallest normal float32): scales that would underflow are clamped to it.
TINY_SCALE = torch.finfo(torch.float32).tiny
#: Per-row searches at REFINE_MIN_BITS..8 bits refine the grid REFINE× around the best candidate.
REFINE, REFINE_MIN_BITS = 20, 5
#: Storage dtypes of the scales, by their short names (the config's and the CLI's spelling).
SCALE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
#: float16 range a stored scale must lie in: normal numbers only (relative rounding error ≤ 2^-11).
FP16_MIN_NORMAL, FP16_MAX = 2.0**-14, 65504.0
FP16_MIN_SUBNORMAL = 2.0**-24


def check_bits(bits: int, where: str = "quantization") -> int:
    """Validate a bit width (an int in 2..8) and return it.

    Raises:
        ConfigError: anything else (0, 1 — a 1-bit symmetric quantizer has no non-zero level —, 9, floats).
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"{where}: bits={bits!r} is not supported; use an integer in {MIN_BITS}..{MAX_BITS}")
    return bits


def qmax(bits: int) -> int:
    """Largest code magnitude of the b-bit symmetric quantizer: ``2^(b-1) - 1``.

    Example:
        >>> qmax(8), qmax(4), qmax(2)
        (127, 7, 1)
    """
    return (1 << (check_bits(bits) - 1)) - 1


def check_grid(grid: int) -> int:
    """Validate the number of candidate thresholds (an int ≥ 1)."""
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ConfigError(f"grid={grid!r} must be an integer ≥ 1 (number of candidate clipping thresholds)")
    return grid


def check_granularity(granularity: str) -> str:
    """Validate the scale granularity ("table" or "row")."""
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity={granularity!r} is not supported; use one of {GRANULARITIES}")
    return granularity


def check_scale_dtype(scale_dtype, where: str = "quantization") -> torch.dtype:
    """Validate a scale storage dtype (``"fp32"``/``"fp16"``, ``"float32"``/``"float16"`` or the torch dtype).

    Example:
        >>> check_scale_dtype("fp16")
        torch.float16
    """
    names = {**SCALE_DTYPES, "float32": torch.float32, "float16": torch.float16}
    if isinstance(scale_dtype, torch.dtype) and scale_dtype in SCALE_DTYPES.values():
        return scale_dtype
    if isinstance(scale_dtype, str) and scale_dtype in names:
        return names[scale_dtype]
    raise ConfigError(f"{where}: scale_dtype={scale_dtype!r} is not supported; use 'fp32' or 'fp16'")


def scale_dtype_name(scale_dtype) -> str:
    """The short name (``"fp32"``/``"fp16"``) of a scale dtype."""
    return "fp16" if check_scale_dtype(scale_dtype) == torch.float16 else "fp32"


def cast_scale(scale: Tensor, scale_dtype, name: str = "table") -> Tensor:
    """Round searched scales to their storage dtype (float16: round to nearest), refusing what fp16 cannot hold.

    The codes must then be computed with the returned (rounded) scale, so that dequantization is
    consistent; with fp16 the L2 error grows by at most ``2^-11·‖Ŵ‖`` over the fp32 scale's where the
    scale is in fp16's normal range (see ``docs/perf.md``). Smaller scales (rows of magnitude below
    ≈ 6.1e-5·qmax, e.g. rows of categories never seen in training) are stored as fp16 subnormals, whose
    absolute step 2^-24 adds at most ``2^-25·‖q‖`` to such a row's error; a scale that would round to
    zero becomes the smallest subnormal, 2^-24.

    Args:
        scale: positive float32 scales, [] or [n]. scale_dtype: "fp32" or "fp16".
        name: the table, for messages.

    Returns:
        ``scale`` in the storage dtype (float32 scales are returned as float32 unchanged).

    Raises:
        NumericalError: a scale above 65504 (fp16 overflow).

    Example:
        >>> cast_scale(torch.tensor([0.1, 1.0]), "fp16").tolist()
        [0.0999755859375, 1.0]
    """
    dtype = check_scale_dtype(scale_dtype, name)
    s = scale.to(torch.float32)
    if dtype == torch.float32:
        return s
    s16 = s.to(torch.float16)
    bad = torch.isinf(s16)
    if bool(bad.any()):
        flat = bad.reshape(-1).nonzero()
        row = int(flat[0, 0])
        v = float(s.reshape(-1)[row])
        where = f"row {row}'s scale" if s.dim() else "the scale"
        raise NumericalError(f"{name}: {where} {v:.4g} overflows float16 (max {FP16_MAX:g}; "
                             f"{int(bad.sum())} scale(s) in all); use {{option}} or rescale the table",
                             option="scale_dtype", value="fp32")
    return torch.where(s16 == 0, torch.full_like(s16, FP16_MIN_SUBNORMAL), s16)


def candidate_scales(maxabs: Tensor, bits: int, grid: int) -> Tensor:
    """The candidate scales ``s_i = float32(max|w|·i / (grid·qmax))``, i = 1..grid, in float32.

    A zero ``maxabs`` (all-zero table/row) gets scale 1.0 for every candidate; scales that would
    underflow are clamped to the smallest normal float32.

    Args:
        maxabs: max|w|, shape [] or [n].
        bits, grid: quantizer bits and grid size.

    Returns:
        float32 of shape ``maxabs.shape + (grid,)``.

    Example:
        >>> candidate_scales(torch.tensor(127.0), 8, 2).tolist()
        [0.5, 1.0]
    """
    m = maxabs.to(torch.float64).unsqueeze(-1)
    i = torch.arange(1, check_grid(grid) + 1, dtype=torch.float64)
    s = (m * i / (grid * qmax(bits))).to(torch.float32).clamp_min(TINY_SCALE)
    return torch.where(m == 0, torch.ones_like(s), s)


def refined(bits: int, granularity: str) -> bool:
    """Whether the search refines the grid around its best candidate (per-row scales at 5–8 bits)."""
    return granularity == "row" and bits >= REFINE_MIN_BITS


def fine_candidates(maxabs: Tensor, best: Tensor, bits: int, grid: int) -> tuple[Tensor, Tensor]:
    """The refined candidates around each row's best grid candidate: ``(scales, valid)``, both n×(2·REFINE − 1).

    Position t of row r is the fine index ``f = REFINE·(best_r − 1) + 1 + t`` (so REFINE·(b−1) < f <
    REFINE·(b+1), the open interval between the best candidate b's two neighbours, b itself at
    t = REFINE − 1), with scale ``float32(max|w_r|·f/(REFINE·grid·qmax))`` — bit-identical to
    :func:`candidate_scales` at f = REFINE·i. Positions past the largest candidate (f > REFINE·grid) are
    not valid. Zero rows get scale 1.0.

    Args:
        maxabs: per-row max|w|, [n]. best: the best grid candidate per row, 1-based int64 [n].
        bits, grid: as in :func:`candidate_scales`.

    Example:
        >>> s, ok = fine_candidates(torch.tensor([127.0]), torch.tensor([2]), 8, 2)
        >>> s.shape, int(ok.sum()), float(s[0, REFINE - 1])   # the best candidate itself, s_2 = 1.0
        (torch.Size([1, 39]), 20, 1.0)
    """
    f = REFINE * (best.to(torch.int64).unsqueeze(1) - 1) + 1 + torch.arange(2 * REFINE - 1)
    m = maxabs.to(torch.float64).unsqueeze(1)
    s = (m * f.to(torch.float64) / (REFINE * grid * qmax(bits))).to(torch.float32).clamp_min(TINY_SCALE)
    return torch.where(m == 0, torch.ones_like(s), s), f <= REFINE * grid


def quantize(w: Tensor, scale: Tensor, bits: int) -> Tensor:
    """int8 codes ``clamp(round(w / scale), -qmax, qmax)`` (float32 division, round half to even).

    Args:
        w: float tensor (…×d).
        scale: positive float32 scale, 0-d or one per row (shape ``w.shape[:-1]``).
        bits: 2..8.

    Example:
        >>> quantize(torch.tensor([0.26, -3.0]), torch.tensor(0.5), 2).tolist()
        [1, -1]
    """
    m = qmax(bits)
    s = scale.to(torch.float32)
    if s.dim() and s.dim() == w.dim() - 1:
        s = s.unsqueeze(-1)
    return torch.round(w.to(torch.float32) / s).clamp_(-m, m).to(torch.int8)


def quant_error(w: Tensor, w_hat: Tensor) -> tuple[float, float]:
    """``(‖w − ŵ‖₂, SQNR in dB)`` computed in float64.

    Example:
        >>> quant_error(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 4.0]))
        (0.0, inf)
    """
    w64, h64 = w.detach().to(torch.float64), w_hat.detach().to(torch.float64)
    err = float(((w64 - h64) ** 2).sum())
    return err**0.5, sqnr_db(float((w64**2).sum()), err)


def candidate_errors(w: Tensor, cands: Tensor, bits: int) -> Tensor:
    """Exact float64 squared errors of every candidate: shape [grid] (1-D cands) or [n, grid] (n×grid).

    Literally ``dequantize(quantize(w, s, bits), s)`` for each candidate s (codes fit int8 exactly, so
    the round trip through int8 is skipped), vectorised over blocks of candidates.
    """
    m = qmax(bits)
    w32, w64 = w.to(torch.float32), w.to(torch.float64)
    per_row = cands.dim() == 2
    k_all = cands.shape[-1]
    block = max(1, (1 << 21) // max(1, w32.numel()))
    errs = []
    for lo in range(0, k_all, block):
        s = cands[..., lo:lo + block]  # [K] or [n, K]
        s = s.unsqueeze(-1) if per_row else s.view(-1, *([1] * w32.dim()))
        x = w32.unsqueeze(-2) if per_row else w32.unsqueeze(0)  # n×1×d against n×K×1, or 1×… against K×1…
        deq = torch.round(x / s).clamp_(-m, m).mul_(s).to(torch.float64)
        e = (w64.unsqueeze(-2) if per_row else w64.unsqueeze(0)) - deq
        errs.append(e.square_().sum(dim=-1) if per_row else e.square_().reshape(e.shape[0], -1).sum(dim=1))
    return torch.cat(errs, dim=-1)


def search_scale_exhaustive(w: Tensor, bits: int = 8, grid: int = 100, granularity: str = "table") -> Tensor:
    """Reference search: quantize with every candidate and keep the smallest float64 L2 error.

    Slow (grid full passes); for tests and tiny tables. Ties keep the smallest threshold. Per-row scales
    at 5–8 bits then search the refined candidates around the best one (:func:`fine_candidates`).

    Example:
        >>> float(search_scale_exhaustive(torch.tensor([[1.0, -0.5]]), bits=2, grid=4))
        0.75
    """
    check_bits(bits), check_grid(grid), check_granularity(granularity)
    check_float(w, "table")
    a = w.detach().abs()
    m = a.amax() if granularity == "table" else a.amax(dim=-1)
    cands = candidate_scales(m, bits, grid)
    best = candidate_errors(w.detach(), cands, bits).argmin(dim=-1, keepdim=True)
    if not refined(bits, granularity):
        return cands.gather(-1, best).squeeze(-1)
    fine, valid = fine_candidates(m, best.squeeze(-1) + 1, bits, grid)
    errs = candidate_errors(w.detach(), fine, bits).masked_fill_(~valid, float("inf"))
    return fine.gather(-1, errs.argmin(dim=-1, keepdim=True)).squeeze(-1)


def dequantize(codes: Tensor, scale: Tensor) -> Tensor:
    """``codes * scale`` in float32; ``scale`` is 0-d (per table) or (n,) (per row, broadcast over the last dim).

    Example:
        >>> dequantize(torch.tensor([[2, -1]], dtype=torch.int8), torch.tensor(0.5)).tolist()
        [[1.0, -0.5]]
    """
    s = scale.to(torch.float32)
    if s.dim() == 1:
        s = s.unsqueeze(-1)
    return codes.to(torch.float32).mul_(s)  # in place: one output allocation


def sqnr_db(signal_sq: float, error_sq: float) -> float:
    """10·log10(signal² / error²); inf when the error is 0, -inf when the signal is 0 but not the error."""
    if error_sq <= 0.0:
        return math.inf
    if signal_sq <= 0.0:
        return -math.inf
    return 10.0 * math.log10(signal_sq / error_sq)


__all__ = [
    "MIN_BITS", "MAX_BITS", "GRANULARITIES", "TINY_SCALE", "SCALE_DTYPES", "FP16_MIN_NORMAL", "FP16_MAX",
    "check_scale_dtype", "scale_dtype_name", "cast_scale", "REFINE", "REFINE_MIN_BITS", "refined", "fine_candidates",
    "check_bits", "qmax", "check_grid", "check_granularity",
    "candidate_scales", "candidate_errors", "quantize", "dequantize", "quant_error", "sqnr_db", "search_scale_exhaustive",
]
