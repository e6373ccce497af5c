"""The fast exact scale search behind :func:`mlet_compress.ops.quant.search_scale`.

It returns the candidate the exhaustive evaluation returns (same error; only float round-off of elements
lying exactly on a rounding threshold can differ):

* per table — after a max pass, one pass builds a histogram of |w| with ``2·grid·qmax`` bins over
  [0, max|w|]. Every rounding threshold ``(k + ½)·s_i`` of every candidate is a bin edge, so the per-bin
  count N_j and float64 sum S1_j of |w| give every candidate's error exactly:
  ``E_i = Σw² − 2 s_i Σ_j q_ij S1_j + s_i² Σ_j q_ij² N_j``.
* per row — up to 3 bits, every candidate exactly in O(qmax) per element (histograms of the positions
  where each element's code steps, :func:`_search_rows_steps`); from 4 bits, candidates from the largest
  threshold down, each only on rows whose clipping bound ``(max|w_r|·(grid − i)/grid)²`` is still below
  the row's best error (≈2 evaluations per row at 8 bits, :func:`_search_rows_pruned`); at 5–8 bits then
  the REFINE× finer candidates between the best one's neighbours (:func:`_refine_rows`, ≈19 more
  evaluations per row: the cost of being within 1% of a 2000-point grid).

Where the per-row searches stand against their floor (``docs/perf.md``): one exact evaluation of a
candidate costs ≈ 6 element-wise passes (≈ 0.35 ns per element on one core), one code-step histogram
pass two scatter-adds (≈ 1.8 ns per element); a 4-bit row needs either ≈ 25 evaluations (the candidates
its clipping bound cannot exclude) or 7 histogram passes, a 2-bit row one histogram pass plus O(grid)
work per row.

Work is split into cache-sized pieces binned/searched on ``torch.get_num_threads()`` worker threads
(chunks are read in the calling thread). Memory is O(chunk).
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import torch
from torch import Tensor

from ..rows import iter_chunks, raise_nonfinite
from .core import (
    REFINE, TINY_SCALE, candidate_errors, candidate_scales, fine_candidates, qmax, refined, search_scale_exhaustive,
)

_MAX_BINS = 1 << 22  # histogram size limit; larger grids fall back to the exhaustive evaluation
_STEPS_MAX_BITS = 3  # per-row search: histogram of code steps up to 3 bits, pruned evaluation above
_PIECE_ELEMS = 1 << 18  # elements per unit of work of the table histogram (cache-sized)
_ROW_PIECE_ELEMS = 1 << 20  # per-row search: larger units amortise its per-piece Python work
_MAX_WORKERS = 8


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
        self._size = 0  # work buffers, reused across pieces (fresh large allocations page-fault)

    def add(self, rows: Tensor) -> None:
        flat = rows.reshape(-1)
        n = flat.numel()
        if n > self._size:
            self._size = n
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


def search_table(read, n: int, bits: int, grid: int, chunk_rows: int, name: str) -> Tensor:
    workers = _workers()
    pieces = _pieces(read, n, chunk_rows, name, _ROW_PIECE_ELEMS)
    maxabs = max(_ordered_map(lambda st, r: _piece_max_abs(st, r, name), pieces, workers))
    if maxabs == 0.0:
        return torch.tensor(1.0, dtype=torch.float32)
    cands = candidate_scales(torch.tensor(maxabs, dtype=torch.float64), bits, grid)
    nbins = 2 * grid * qmax(bits)
    if not bool((cands > TINY_SCALE).all()) or nbins > _MAX_BINS:
        # degenerate (denormal scales) or a huge grid: exhaustive evaluation, streamed
        errs = torch.zeros(grid, dtype=torch.float64)
        for _, _, rows in iter_chunks(read, n, chunk_rows, name=name):
            errs += candidate_errors(rows, cands, bits)
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
    s = (max64 * float(i) / (grid * qmax(bits))).to(torch.float32).clamp_min_(TINY_SCALE)
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


def _lowest_candidate(best_e: Tensor, max64: Tensor, grid: int) -> Tensor:
    """Smallest candidate i (1-based) that can still beat ``best_e`` per row.

    Candidate i clips the max element by at least ``t_grid − t_i ≈ max·(grid − i)/grid``, so its error is
    at least ``(max·(grid − i)/grid)²`` — a bound that grows as i shrinks. It is below best iff
    ``i > grid·(1 − sqrt(best)/max)``; the 1e-4 slack covers the float32 rounding of the thresholds.
    """
    lim = grid * (1.0 - (best_e * (1.0 + 1e-4)).sqrt() / max64.clamp_min(1e-300))
    return lim.floor_().to(torch.int64).add_(1).clamp_min_(1).masked_fill_(max64 == 0, grid)


def _search_rows_pruned(a: Tensor, maxabs: Tensor, bits: int, grid: int) -> Tensor:
    """Best candidate index per row by pruned exact evaluation (bits ≥ 4; ≈2 evaluations/row at 8 bits).

    Candidates are evaluated from the largest threshold down, each only on the rows whose clipping bound
    (:func:`_lowest_candidate`) still allows it to win; the bound tightens as the best error drops.
    """
    m, rows = qmax(bits), a.shape[0]
    y, q = torch.empty_like(a), torch.empty_like(a)
    max64 = maxabs.to(torch.float64)
    # i = grid never clips (|w|/s <= qmax up to float rounding, which round() absorbs)
    best_e = _row_errors(a, _candidate_column(max64, grid, bits, grid), m, False, y, q)
    best_i = torch.full((rows,), grid, dtype=torch.int64)
    lowest = _lowest_candidate(best_e, max64, grid)
    for i in range(grid - 1, 0, -1):
        idx = (lowest <= i).nonzero().squeeze(1)
        n_act = idx.numel()
        if n_act == 0:
            break
        s_i = _candidate_column(max64.index_select(0, idx), i, bits, grid)
        if 2 * n_act > rows:  # mostly active: evaluate every row, keep the active ones
            s_all = torch.ones(rows, dtype=torch.float32).index_copy_(0, idx, s_i)
            e = _row_errors(a, s_all, m, True, y, q).index_select(0, idx)
        else:
            sub = torch.index_select(a, 0, idx, out=q[:n_act])
            e = _row_errors(sub, s_i, m, True, y[:n_act], sub)
        better = e <= best_e.index_select(0, idx)  # ties: the smaller threshold, like argmin
        win = idx[better]
        if win.numel():
            best_e.index_copy_(0, win, e[better])
            best_i.index_fill_(0, win, i)
            new_low = _lowest_candidate(best_e.index_select(0, win), max64.index_select(0, win), grid)
            lowest.index_copy_(0, win, new_low)
    return best_i - 1, best_e


def _refine_rows(a: Tensor, maxabs: Tensor, best: Tensor, best_e: Tensor, bits: int, grid: int) -> Tensor:
    """Scales of the best refined candidates (:func:`.core.fine_candidates`) per row, float32 [R].

    ``best`` is each row's best grid candidate (1-based) and ``best_e`` its error in :func:`_row_errors`'
    units. Rows whose best is the largest candidate (most rows at 5–8 bits) only have the REFINE − 1
    finer scales below it; the others the 2·REFINE − 1 around it. Evaluated in cache-sized row blocks,
    all of a block's candidates in one broadcast pass (multiplying by 1/s: only elements exactly on a
    rounding threshold can round differently from the quantizer's division).
    """
    m, d = qmax(bits), a.shape[1]
    scales, valid = fine_candidates(maxabs, best, bits, grid)
    out = scales[:, REFINE - 1].clone()  # the grid's best
    top = best == grid
    for rows, width in ((top.nonzero().squeeze(1), REFINE - 1), ((~top).nonzero().squeeze(1), 2 * REFINE - 1)):
        if rows.numel() == 0:
            continue
        every = rows.numel() == a.shape[0]
        step = max(1, _ROW_PIECE_ELEMS // (width * d))
        buf = torch.empty(min(step, rows.numel()) * width * d)
        for r0 in range(0, rows.numel(), step):
            idx = rows[r0:r0 + step]
            s = scales[r0:r0 + step] if every else scales.index_select(0, idx)
            inv = s[:, :width].reciprocal().unsqueeze(2)
            sub = a[r0:r0 + step] if every else a.index_select(0, idx)
            y = torch.mul(sub.unsqueeze(1), inv, out=buf[: idx.numel() * width * d].view(idx.numel(), width, d))
            q = torch.round(y).clamp_max_(m)
            s64 = s[:, :width].to(torch.float64)
            e = y.sub_(q).square_().sum(dim=2).to(torch.float64) * s64 * s64
            ok = valid[r0:r0 + step] if every else valid.index_select(0, idx)
            e.masked_fill_(~ok[:, :width], float("inf"))
            if width == REFINE - 1:  # compare with the grid's best (f = REFINE·grid); ties: the smaller scale
                e_min, pick = e.min(dim=1)
                best_here = best_e[r0:r0 + step] if every else best_e.index_select(0, idx)
                pick = torch.where(e_min <= best_here, pick, REFINE - 1)
            else:
                pick = e.argmin(dim=1)
            out.index_copy_(0, idx, s.gather(1, pick.unsqueeze(1)).squeeze(1))
    return out


def _search_rows_steps(a: Tensor, maxabs: Tensor, bits: int, grid: int) -> Tensor:
    """Best candidate index per row, every candidate exactly, in O(qmax) per element (bits ≤ 3).

    With ``u = |w|/s_1`` (s_1 = max|w|/(grid·qmax)), the code under candidate i is
    ``q_i = Σ_{k<qmax} [i ≤ u/(k+½)]``, so ``F1(i) = Σ |w|·q_i`` and ``F2(i) = Σ q_i²`` are reverse
    cumulative sums of per-row histograms over i, and ``E_i − Σw² = s_i² F2(i) − 2 s_i F1(i)``.
    Rows are processed in sub-blocks whose buffers are allocated once.
    """
    m = qmax(bits)
    rows, d = a.shape
    step = max(1, min(rows, (_PIECE_ELEMS // 4) // d))
    nb = grid + 1
    u = torch.empty(step, d)
    pos_f, pos = torch.empty(step, d), torch.empty(step, d, dtype=torch.int32)
    a64 = torch.empty(step * d, dtype=torch.float64)
    ones = torch.ones(step * d, dtype=torch.float64)
    f1, f2 = torch.empty(step * nb, dtype=torch.float64), torch.empty(step * nb, dtype=torch.float64)
    c1, c2 = torch.empty(step, nb, dtype=torch.float64), torch.empty(step, nb, dtype=torch.float64)
    offs = (torch.arange(step, dtype=torch.int32) * nb + grid).unsqueeze(1)
    i_rev = torch.arange(grid, 0, -1, dtype=torch.float64)  # i = grid..1 (reversed bins)
    i2 = i_rev.square()
    best = torch.empty(rows, dtype=torch.int64)
    for r0 in range(0, rows, step):
        r = min(step, rows - r0)
        ar, mr = a[r0:r0 + r], maxabs[r0:r0 + r]
        inv = torch.where(mr > 0, (grid * m) / mr.clamp_min(TINY_SCALE), torch.zeros_like(mr))
        ur, pf, ps = u[:r], pos_f[:r], pos[:r]
        torch.mul(ar, inv.unsqueeze(1), out=ur)  # float32: threshold round-off like the quantizer's division
        a64[: r * d].copy_(ar.reshape(-1))
        g1, g2 = f1[: r * nb].zero_(), f2[: r * nb].zero_()
        for k in range(m):  # q_i >= k+1  <=>  i <= p = floor(u/(k+½)); binned at grid − min(p, grid)
            torch.mul(ur, 1.0 / (k + 0.5), out=pf)
            ps.copy_(pf).clamp_max_(grid).neg_().add_(offs[:r])  # truncation = floor (u >= 0)
            flat = ps.view(-1)
            g1.index_add_(0, flat, a64[: r * d])
            g2.index_add_(0, flat, ones[: r * d], alpha=2 * k + 1)
        # reversed bins: F(i) = Σ_{p >= i} D[p] is the prefix sum up to bin grid − i
        F1 = torch.cumsum(g1.view(r, nb), 1, out=c1[:r])[:, :grid]
        F2 = torch.cumsum(g2.view(r, nb), 1, out=c2[:r])[:, :grid]
        # E_i − Σw² = s_i²·F2 − 2·s_i·F1 with s_i = c·i: compare (E_i − Σw²)/c² = i²·F2 − (2i/c)·F1
        # (c·i instead of float32(c·i): only near-ties within ~1e-7 can order differently)
        two_over_c = (-2.0 * grid * m) / mr.to(torch.float64).clamp_min(1e-300)
        e = F1.mul_(i_rev).mul_(two_over_c.unsqueeze(1)).addcmul_(F2, i2)
        best[r0:r0 + r] = e.flip(1).argmin(dim=1)  # flipped back to i = 1..grid: ties keep the smallest i
    return best


def _search_rows_piece(start: int, rows: Tensor, bits: int, grid: int, name: str) -> Tensor:
    """Best per-row scales of one piece (float32 [R]) — the candidates the exhaustive search picks."""
    a = rows.to(torch.float32).abs()
    maxabs = a.amax(dim=1)
    if not bool(torch.isfinite(maxabs).all()):
        raise_nonfinite(rows, start, name)
    if bool(((maxabs > 0) & (maxabs < TINY_SCALE * (2 * grid * qmax(bits)))).any()):
        # near-denormal rows: clamped candidate scales break the search's exact structure
        return search_scale_exhaustive(rows, bits, grid, "row")
    if bits <= _STEPS_MAX_BITS:
        return _scale_of_index(maxabs, _search_rows_steps(a, maxabs, bits, grid), bits, grid)
    best, best_e = _search_rows_pruned(a, maxabs, bits, grid)
    if not refined(bits, "row"):
        return _scale_of_index(maxabs, best, bits, grid)
    return _refine_rows(a, maxabs, best + 1, best_e, bits, grid)


def _scale_of_index(maxabs: Tensor, best: Tensor, bits: int, grid: int) -> Tensor:
    """Scales of candidate indices ``best`` (0-based) per row, bit-identical to :func:`candidate_scales`."""
    s = (maxabs.to(torch.float64) * (best + 1).to(torch.float64) / (grid * qmax(bits))).to(torch.float32)
    return s.clamp_min_(TINY_SCALE).masked_fill_(maxabs == 0, 1.0)


def search_rows(read, n: int, bits: int, grid: int, chunk_rows: int, name: str) -> Tensor:
    """Best per-row scales (float32 [n]) of a table given as ``read(start, stop)``."""
    fn = lambda start, rows: _search_rows_piece(start, rows, bits, grid, name)  # noqa: E731
    return torch.cat(list(_ordered_map(fn, _pieces(read, n, chunk_rows, name, _ROW_PIECE_ELEMS), _workers())))
