"""The paper's uniform symmetric quantizer with an L2-optimal grid-searched scale (§4.3).

``q = clamp(round(w / s), -qmax, qmax)`` (round half to even), ``ŵ = s·q``, ``qmax = 2^(b-1) - 1``.
The scale is chosen among ``grid`` clipping thresholds ``t_i = max|w|·i/grid`` (``s_i = t_i/qmax``,
i = 1..grid, see :func:`candidate_scales`) to minimise ‖w − ŵ‖₂, per table or per row.

The search returns the candidate the exhaustive evaluation returns (same error; only float round-off of
elements lying exactly on a rounding threshold can differ), but fast:

* per table — one pass builds a histogram of |w| with ``2·grid·qmax`` bins over [0, max|w|]. Every
  rounding threshold ``(k + ½)·s_i`` of every candidate is a bin edge, so with the per-bin count and sum
  of |w| the squared error of all candidates is exact: ``Σw² − 2 s Σ_j q_j S1_j + s² Σ_j q_j² N_j``.
* per row — rows are processed in chunks; the no-clipping candidate (i = grid) is evaluated first, then
  candidates with smaller thresholds in order, each only on rows where the clipping lower bound
  ``(max|w_r| − t_i)²`` (and, when it does not prune, the exact clipping error) is below the row's best
  error so far. The bound only grows as t shrinks, so pruned rows stay pruned.

Tables may be tensors or ``read_rows(start, stop)`` callables (memory-mapped checkpoints): memory is
O(chunk). Storage (packing, :class:`QuantizedTensor`) lives in :mod:`.packing`.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, NamedTuple, Optional

import torch
from torch import Tensor

from ..errors import ConfigError
from .packing import GRANULARITIES, QuantizedTensor, check_bits, dequantize, pack_rows, qmax, sqnr_db
from .svd import TableLike, as_row_reader, check_float, iter_chunks, raise_nonfinite

DEFAULT_CHUNK_ROWS = 16384
_MAX_BINS = 1 << 22  # histogram size limit; larger grids fall back to the exhaustive evaluation
_TINY = torch.finfo(torch.float32).tiny
_STEPS_MAX_BITS = 4  # per-row search: histogram of code steps up to 4 bits, pruned evaluation above
_PIECE_ELEMS = 1 << 18  # elements per unit of work of the table histogram (cache-sized)
_ROW_PIECE_ELEMS = 1 << 20  # per-row search: larger units amortise its per-piece Python work
_MAX_WORKERS = 8


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
    s = (m * i / (grid * qmax(bits))).to(torch.float32).clamp_min(_TINY)
    return torch.where(m == 0, torch.ones_like(s), s)


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


# --------------------------------------------------------------------------------------------- references
def _candidate_errors(w: Tensor, cands: Tensor, bits: int) -> Tensor:
    """Exact float64 squared errors of every candidate: shape [grid] (0-d cands row) or [n, grid]."""
    w64 = w.to(torch.float64)
    errs = []
    for k in range(cands.shape[-1]):
        s = cands[..., k]
        deq = dequantize(quantize(w, s, bits), s).to(torch.float64)
        e = (w64 - deq) ** 2
        errs.append(e.sum() if s.dim() == 0 else e.sum(dim=-1))
    return torch.stack(errs, dim=-1)


def search_scale_exhaustive(w: Tensor, bits: int = 8, grid: int = 100, granularity: str = "table") -> Tensor:
    """Reference search: quantize with every candidate and keep the smallest float64 L2 error.

    Slow (grid full passes); for tests and tiny tables. Ties keep the smallest threshold.

    Example:
        >>> float(search_scale_exhaustive(torch.tensor([[1.0, -0.5]]), bits=2, grid=4))
        0.75
    """
    check_bits(bits), check_grid(grid), check_granularity(granularity)
    check_float(w, "table")
    a = w.detach().abs()
    m = a.amax() if granularity == "table" else a.amax(dim=-1)
    cands = candidate_scales(m, bits, grid)
    best = _candidate_errors(w.detach(), cands, bits).argmin(dim=-1, keepdim=True)
    return cands.gather(-1, best).squeeze(-1)


# --------------------------------------------------------------------------------------------- plumbing
def _pieces(read, n: int, chunk_rows: int, name: str, elems: int) -> Iterator[tuple[int, Tensor]]:
    """``(start, rows)`` pieces of ≤ ``elems`` elements (one unit of work) of every chunk read."""
    for start, _, rows in iter_chunks(read, n, chunk_rows, name=name):
        step = max(1, elems // rows.shape[1])
        for k in range(0, rows.shape[0], step):
            yield start + k, rows[k:k + step]


def _ordered_map(fn: Callable, items: Iterable[tuple], workers: int) -> Iterator:
    """``fn(*item)`` for each item, in order, on ``workers`` threads with a bounded queue.

    Reading stays in the calling thread (``read_rows`` need not be thread-safe). Each worker runs its
    torch kernels single-threaded, which is what the per-piece kernels (bincount, index_add_) are anyway
    and keeps intra-op barriers out of the hot loop on busy machines.
    """
    if workers <= 1:
        for item in items:
            yield fn(*item)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, *item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _workers() -> int:
    return max(1, min(torch.get_num_threads(), _MAX_WORKERS))


def _piece_max_abs(start: int, rows: Tensor, name: str) -> float:
    lo, hi = torch.aminmax(rows)
    lo, hi = float(lo), float(hi)
    if not (abs(lo) < float("inf") and abs(hi) < float("inf")):
        raise_nonfinite(rows, start, name)
    return max(-lo, hi)


# --------------------------------------------------------------------------------------------- per table
class _Histogram:
    """Per-bin count and float64 sum of |w| over ``nbins`` uniform bins of [0, maxabs] (+1 overflow bin)."""

    def __init__(self, nbins: int, maxabs: float):
        self.nbins, self.inv_width = nbins, nbins / maxabs
        self.count = torch.zeros(nbins + 1, dtype=torch.int64)
        self.sum1 = torch.zeros(nbins + 1, dtype=torch.float64)
        self._a32 = torch.empty(_PIECE_ELEMS)
        self._u32 = torch.empty(_PIECE_ELEMS)
        self._idx = torch.empty(_PIECE_ELEMS, dtype=torch.int32)
        self._a64 = torch.empty(_PIECE_ELEMS, dtype=torch.float64)

    def add(self, rows: Tensor) -> None:
        flat = rows.reshape(-1)
        n = flat.numel()
        if n > self._a32.numel():  # pieces are at most _PIECE_ELEMS unless a row alone is wider
            self._a32, self._u32 = torch.empty(n), torch.empty(n)
            self._idx, self._a64 = torch.empty(n, dtype=torch.int32), torch.empty(n, dtype=torch.float64)
        a32, u32, idx, a64 = self._a32[:n], self._u32[:n], self._idx[:n], self._a64[:n]
        if flat.dtype == torch.float32:
            torch.abs(flat, out=a32)
        else:
            a32.copy_(flat).abs_()
        torch.mul(a32, self.inv_width, out=u32)
        # truncation = floor for |w| >= 0; |w| <= max gives u < nbins·(1 + 2^-23) < nbins + 1, so the
        # largest index is nbins (the overflow bin) and no clamp is needed
        idx.copy_(u32)
        self.count += torch.bincount(idx, minlength=self.nbins + 1)
        a64.copy_(a32)
        self.sum1.index_add_(0, idx, a64)


def _table_errors_from_histogram(hists: list, cands: Tensor, bits: int, grid: int) -> Tensor:
    """``E_i − Σw²`` for every candidate, exact from the histograms (float64 [grid]; same argmin as E_i)."""
    count = sum(h.count for h in hists)
    sum1 = sum(h.sum1 for h in hists)
    count[-2] += count[-1]  # |w| == max lands one past the last bin: same codes as the last bin
    sum1[-2] += sum1[-1]
    nz = count[:-1].nonzero().squeeze(1)
    n_j, s1_j = count[nz].to(torch.float64), sum1[nz]
    m = qmax(bits)
    s = cands.to(torch.float64)
    errs = torch.empty(grid, dtype=torch.float64)
    step = max(1, (1 << 22) // max(1, nz.numel()))
    for lo in range(0, grid, step):
        i = torch.arange(lo + 1, min(grid, lo + step) + 1, dtype=torch.int64).unsqueeze(1)
        # bin j = [j, j+1)·width; candidate i's thresholds (k+½)·s_i = (2k+1)·i·width are bin edges
        q = torch.div(nz.unsqueeze(0) + i, 2 * i, rounding_mode="floor").clamp_max_(m).to(torch.float64)
        si = s[lo:lo + i.shape[0]]
        errs[lo:lo + i.shape[0]] = si * si * ((q * q) @ n_j) - 2.0 * si * (q @ s1_j)
    return errs


def _search_table(read, n: int, bits: int, grid: int, chunk_rows: int, name: str) -> Tensor:
    workers = _workers()
    pieces = _pieces(read, n, chunk_rows, name, _ROW_PIECE_ELEMS)
    maxabs = max(_ordered_map(lambda st, r: _piece_max_abs(st, r, name), pieces, workers))
    if maxabs == 0.0:
        return torch.tensor(1.0, dtype=torch.float32)
    cands = candidate_scales(torch.tensor(maxabs, dtype=torch.float64), bits, grid)
    nbins = 2 * grid * qmax(bits)
    if not bool((cands > _TINY).all()) or nbins > _MAX_BINS:
        # degenerate (denormal scales) or a huge grid: exhaustive evaluation, streamed
        errs = torch.zeros(grid, dtype=torch.float64)
        for _, _, rows in iter_chunks(read, n, chunk_rows, name=name):
            errs += _candidate_errors(rows, cands, bits)
        return cands[int(errs.argmin())]
    local, hists, lock = threading.local(), [], threading.Lock()

    def add(_start: int, rows: Tensor) -> None:
        h = getattr(local, "hist", None)
        if h is None:
            h = local.hist = _Histogram(nbins, maxabs)
            with lock:
                hists.append(h)
        h.add(rows)

    for _ in _ordered_map(add, _pieces(read, n, chunk_rows, name, _PIECE_ELEMS), workers):
        pass
    return cands[int(_table_errors_from_histogram(hists, cands, bits, grid).argmin())]


# --------------------------------------------------------------------------------------------- per row
def _candidate_column(max64: Tensor, i: int, bits: int, grid: int) -> Tensor:
    """Column i (1-based) of :func:`candidate_scales` for per-row maxima, bit-identical to it."""
    s = (max64 * float(i) / (grid * qmax(bits))).to(torch.float32).clamp_min_(_TINY)
    return s.masked_fill_(max64 == 0, 1.0)


def _row_errors(a: Tensor, s: Tensor, m: int, clamp: bool, y: Tensor, q: Tensor) -> Tensor:
    """float64 squared error per row of |w| rows ``a`` with per-row float32 scales ``s`` (y, q: buffers)."""
    torch.div(a, s.unsqueeze(1), out=y)  # the quantizer's own float32 division
    torch.round(y, out=q)
    if clamp:
        q.clamp_max_(m)
    y.sub_(q).square_()
    s64 = s.to(torch.float64)
    return y.sum(dim=1).to(torch.float64) * s64 * s64


def _search_rows_pruned(a: Tensor, maxabs: Tensor, bits: int, grid: int) -> Tensor:
    """Best candidate index per row by pruned exact evaluation (bits ≥ 5).

    Phase 1 evaluates the two largest thresholds on every row. A candidate i can only win where the
    clipping of the max element alone, ``LB_i = (max|w_r|·(grid − i)/grid)²``, is below the row's best
    error; LB grows as i shrinks, so each row needs candidates down to a limit only. Phase 2 evaluates
    those (few rows, few candidates at 8 bits) in blocks.
    """
    m, rows, d = qmax(bits), a.shape[0], a.shape[1]
    y, q = torch.empty_like(a), torch.empty_like(a)
    max64 = maxabs.to(torch.float64)
    # i = grid never clips (|w|/s <= qmax up to float rounding, which round() absorbs)
    best_e = _row_errors(a, _candidate_column(max64, grid, bits, grid), m, False, y, q)
    best_i = torch.full((rows,), grid, dtype=torch.int64)
    if grid > 1:
        e2 = _row_errors(a, _candidate_column(max64, grid - 1, bits, grid), m, True, y, q)
        better = e2 <= best_e  # ties: the smaller threshold, like argmin
        best_e = torch.where(better, e2, best_e)
        best_i.masked_fill_(better, grid - 1)
    # smallest i whose bound may beat best: LB_i < best <=> i > grid·(1 − sqrt(best)/max); 1e-4 slack
    # covers the float32 rounding of the thresholds t_i (|t_i − max·i/grid| ~ 1e-7·max)
    lim = grid * (1.0 - (best_e * (1.0 + 1e-4)).sqrt() / max64.clamp_min(1e-300))
    i_lo = lim.floor().to(torch.int64).add_(1).clamp_min_(1).masked_fill_(maxabs == 0, grid)
    idx = (i_lo <= grid - 2).nonzero().squeeze(1)
    if idx.numel() == 0:
        return best_i - 1
    sub, sub_max, sub_lo = a.index_select(0, idx), max64.index_select(0, idx), i_lo.index_select(0, idx)
    sub_e, sub_i = best_e.index_select(0, idx), best_i.index_select(0, idx)
    block = max(1, (_PIECE_ELEMS * 2) // (sub.shape[0] * d))
    hi = grid - 2
    lowest = int(sub_lo.min())
    while hi >= lowest:  # candidates [lo, hi], descending blocks
        lo = max(lowest, hi - block + 1)
        i = torch.arange(lo, hi + 1, dtype=torch.float64)
        s = (sub_max.unsqueeze(1) * i / (grid * m)).to(torch.float32).clamp_min_(_TINY)  # = candidate_scales
        yy = sub.unsqueeze(1) / s.unsqueeze(2)  # r × K × d
        qq = torch.round(yy).clamp_max_(m)
        s64 = s.to(torch.float64)
        e = yy.sub_(qq).square_().sum(dim=2).to(torch.float64) * s64 * s64
        e.masked_fill_(i.to(torch.int64).unsqueeze(0) < sub_lo.unsqueeze(1), float("inf"))
        be, bk = e.min(dim=1)  # first minimum: the smallest i in the block
        better = be <= sub_e  # this block's thresholds are all smaller than those seen so far
        sub_e = torch.where(better, be, sub_e)
        sub_i = torch.where(better, bk + lo, sub_i)
        hi = lo - 1
    best_i.index_copy_(0, idx, sub_i)
    return best_i - 1


def _search_rows_steps(a: Tensor, maxabs: Tensor, bits: int, grid: int) -> Tensor:
    """Best candidate index per row, every candidate exactly, in O(qmax) per element (bits ≤ 4).

    With ``u = |w|/s_1`` (s_1 = max|w|/(grid·qmax)), the code under candidate i is
    ``q_i = Σ_{k<qmax} [i ≤ u/(k+½)]``, so ``F1(i) = Σ |w|·q_i`` and ``F2(i) = Σ q_i²`` are reverse
    cumulative sums of per-row histograms over i, and ``E_i − Σw² = s_i² F2(i) − 2 s_i F1(i)``.
    """
    m = qmax(bits)
    rows, d = a.shape
    size = rows * (grid + 1)
    inv = torch.where(maxabs > 0, (grid * m) / maxabs.clamp_min(_TINY), torch.zeros_like(maxabs))
    u = a * inv.unsqueeze(1)  # float32: threshold round-off like the quantizer's own division
    a64 = a.reshape(-1).to(torch.float64)
    offs = (torch.arange(rows, dtype=torch.int32) * (grid + 1)).unsqueeze(1)
    f1 = torch.zeros(size, dtype=torch.float64)
    f2 = torch.zeros(size, dtype=torch.float64)
    pos_f, pos = torch.empty_like(u), torch.empty(u.shape, dtype=torch.int32)
    for k in range(m):  # q_i >= k+1  <=>  i <= u/(k+½)
        torch.mul(u, 1.0 / (k + 0.5), out=pos_f)
        pos.copy_(pos_f).clamp_max_(grid).add_(offs)  # truncation = floor (u >= 0)
        flat = pos.view(-1)
        f1.index_add_(0, flat, a64)
        f2.add_(torch.bincount(flat, minlength=size), alpha=2 * k + 1)
    f1 = f1.view(rows, grid + 1).flip(1).cumsum(1).flip(1)[:, 1:]
    f2 = f2.view(rows, grid + 1).flip(1).cumsum(1).flip(1)[:, 1:]
    s = candidate_scales(maxabs, bits, grid).to(torch.float64)
    return (s * s * f2 - 2.0 * s * f1).argmin(dim=1)


def _search_rows_piece(start: int, rows: Tensor, bits: int, grid: int, name: str) -> Tensor:
    """Best per-row scales of one piece (float32 [R]) — the candidates the exhaustive search picks."""
    a = rows.to(torch.float32).abs()
    maxabs = a.amax(dim=1)
    if not bool(torch.isfinite(maxabs).all()):
        raise_nonfinite(rows, start, name)
    if bits > _STEPS_MAX_BITS:
        best = _search_rows_pruned(a, maxabs, bits, grid)
    else:  # bounded temporaries: sub-pieces of ~2^16 elements
        step = max(1, (_PIECE_ELEMS // 4) // a.shape[1])
        best = torch.cat([_search_rows_steps(a[i:i + step], maxabs[i:i + step], bits, grid)
                          for i in range(0, a.shape[0], step)])
    return _scale_of_index(maxabs, best, bits, grid)


def _scale_of_index(maxabs: Tensor, best: Tensor, bits: int, grid: int) -> Tensor:
    """Scales of candidate indices ``best`` (0-based) per row, bit-identical to :func:`candidate_scales`."""
    s = (maxabs.to(torch.float64) * (best + 1).to(torch.float64) / (grid * qmax(bits))).to(torch.float32)
    return s.clamp_min_(_TINY).masked_fill_(maxabs == 0, 1.0)


# --------------------------------------------------------------------------------------------- public
def search_scale(table: TableLike, *, bits: int = 8, grid: int = 100, granularity: str = "table",
                 num_rows: Optional[int] = None, chunk_rows: int = DEFAULT_CHUNK_ROWS, name: str = "table") -> Tensor:
    """L2-optimal scale among the ``grid`` candidates, per table or per row.

    Args:
        table: n×d float tensor or ``read_rows(start, stop)`` callable (then ``num_rows`` is required).
        bits: 2..8. grid: number of candidate thresholds (≥ 1).
        granularity: "table" (one scale, the paper's) or "row" (one per row).
        num_rows: row count for a callable. chunk_rows: rows read per step.
        name: table name for error messages.

    Returns:
        float32 scale, shape [] or [n]; all-zero tables/rows get 1.0.

    Raises:
        ConfigError: bad bits/grid/granularity, non-float or empty table.
        NumericalError: NaN/Inf in the table (names the first bad row).

    Example:
        >>> float(search_scale(torch.tensor([[1.0, -0.5]]), bits=2, grid=4))
        0.75
    """
    check_bits(bits), check_grid(grid), check_granularity(granularity)
    read, n = as_row_reader(table, num_rows, name=name)
    if granularity == "table":
        return _search_table(read, n, bits, grid, chunk_rows, name)
    fn = lambda start, rows: _search_rows_piece(start, rows, bits, grid, name)  # noqa: E731
    return torch.cat(list(_ordered_map(fn, _pieces(read, n, chunk_rows, name, _ROW_PIECE_ELEMS), _workers())))


class QuantizedChunk(NamedTuple):
    """Rows ``[start, stop)`` of a quantized table: packed codes and their squared error / signal."""

    start: int
    stop: int
    packed: Tensor
    error_sq: float
    signal_sq: float


def iter_quantized_rows(table: TableLike, scale: Tensor, bits: int, *, num_rows: Optional[int] = None,
                        chunk_rows: int = DEFAULT_CHUNK_ROWS, name: str = "table") -> Iterator[QuantizedChunk]:
    """Quantize and pack a table chunk by chunk (for writing to a file without holding it).

    Args:
        table: n×d tensor or ``read_rows`` callable. scale: float32 [] or [n] (from :func:`search_scale`).
        bits: 2..8. num_rows / chunk_rows / name: as in :func:`search_scale`.

    Example:
        >>> [c.packed.shape for c in iter_quantized_rows(torch.ones(3, 2), torch.tensor(1.0), 8, chunk_rows=2)]
        [torch.Size([2, 2]), torch.Size([1, 2])]
    """
    check_bits(bits)
    read, n = as_row_reader(table, num_rows, name=name)
    if scale.dim() not in (0, 1) or (scale.dim() == 1 and scale.shape[0] != n):
        raise ConfigError(f"{name}: scale of shape {tuple(scale.shape)} fits neither one table nor its {n} rows")
    if not bool((scale > 0).all()) or not bool(torch.isfinite(scale).all()):
        raise ConfigError(f"{name}: scales must be finite and positive; recompute them with search_scale")
    for start, stop, rows in iter_chunks(read, n, chunk_rows, name=name):
        s = scale if scale.dim() == 0 else scale[start:stop]
        codes = quantize(rows, s, bits)
        w64 = rows.to(torch.float64)
        if not bool(torch.isfinite(w64).all()):
            raise_nonfinite(rows, start, name)
        err = float(((w64 - dequantize(codes, s).to(torch.float64)) ** 2).sum())
        yield QuantizedChunk(start, stop, pack_rows(codes, bits), err, float((w64 * w64).sum()))


def quantize_tensor(table: TableLike, *, bits: int = 8, grid: int = 100, granularity: str = "table",
                    scale: Optional[Tensor] = None, num_rows: Optional[int] = None,
                    chunk_rows: int = DEFAULT_CHUNK_ROWS, name: str = "table") -> QuantizedTensor:
    """Search the scale (unless given), quantize and pack a whole table.

    Returns:
        :class:`QuantizedTensor` with ``error_sq``/``signal_sq`` filled (``.l2_error``, ``.sqnr_db``).

    Example:
        >>> qt = quantize_tensor(torch.randn(10, 4), bits=8)
        >>> qt.packed.shape, qt.dequantize().shape
        (torch.Size([10, 4]), torch.Size([10, 4]))
    """
    check_bits(bits), check_grid(grid), check_granularity(granularity)
    read, n = as_row_reader(table, num_rows, name=name)
    if scale is None:
        scale = search_scale(read, bits=bits, grid=grid, granularity=granularity, num_rows=n,
                             chunk_rows=chunk_rows, name=name)
    elif (scale.dim() == 0) != (granularity == "table"):
        raise ConfigError(f"{name}: a scale of shape {tuple(scale.shape)} does not match granularity={granularity!r}")
    scale = scale.to(torch.float32)
    chunks = list(iter_quantized_rows(read, scale, bits, num_rows=n, chunk_rows=chunk_rows, name=name))
    dim = int(read(0, 1).shape[1])
    return QuantizedTensor(packed=torch.cat([c.packed for c in chunks]), scale=scale, bits=bits,
                           granularity=granularity, shape=(n, dim), error_sq=sum(c.error_sq for c in chunks),
                           signal_sq=sum(c.signal_sq for c in chunks))


__all__ = [
    "qmax", "check_bits", "check_grid", "check_granularity", "candidate_scales", "quantize", "dequantize",
    "quant_error", "search_scale", "search_scale_exhaustive", "iter_quantized_rows", "QuantizedChunk",
    "quantize_tensor", "QuantizedTensor",
]
