"""Checkpoint-level SVD and quantization, streamed in row chunks with no model code.

Both read each selected table through memory-mapped row chunks (a Gram pass, or a scale-search and an
error pass) and write the output incrementally, so memory stays O(d² + chunk). Uncollapsed MLET tables
are collapsed on the fly first (the stage chain records ``collapse``), which the CLI says in its output.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Optional, Union

import torch

from .checkpoint import load_header
from .errors import ConfigError, TargetingError
from .ops.collapse import collapse_rows
from .ops.quant import dequantize, iter_quantized_rows, packed_cols, search_scale, sqnr_db, unpack_rows
from .ops.svd import iter_projected_rows, plan_low_rank
from .safetensors_io import dtype_name
from .streaming import OutTensor, Plan, Progress, RowReader, TablePlan, execute, resolve_output

Notify = Callable[[str], None]
DEFAULT_CHUNK_ROWS = 65536


class _Rows:
    """``read_rows(start, stop)`` over a table's effective n×d rows (collapsing MLET factors on the fly),
    releasing the previous range's pages on every call so resident memory stays at one chunk."""

    def __init__(self, reader: RowReader, entry: dict, factor: str = "weight"):
        self.reader = reader
        fac = entry["factors"]
        self.proj = None
        if entry["kind"] == "mlet":
            self.key = fac["table"]["key"]
            self.proj = reader.full(fac["proj"]["key"])
            self.dim = int(self.proj.shape[0])
        else:
            self.key = fac[factor]["key"]
            self.dim = int(reader.info(self.key).shape[1])
        self.num_rows = int(reader.info(self.key).shape[0])
        self.dtype = reader.info(self.key).dtype if self.proj is None else torch.promote_types(reader.info(self.key).dtype, torch.float32)
        self._last: Optional[tuple[int, int]] = None

    def __call__(self, start: int, stop: int) -> torch.Tensor:
        if self._last is not None:
            self.reader.release(self.key, *self._last)
        self._last = (start, stop)
        rows = self.reader.rows(self.key, start, stop)
        return rows if self.proj is None else collapse_rows(rows, self.proj, self.dtype)


def _select(tables: dict[str, dict], regex: Optional[str], ok_kinds: tuple[str, ...], stage: str) -> dict[str, dict]:
    """Tables to process: matched by ``regex`` (full match; default all with d ≥ 2 of a compatible kind)."""
    if regex is None:
        chosen = {n: e for n, e in tables.items() if e["kind"] in ok_kinds and e["embedding_dim"] >= 2}
        if not chosen:
            raise TargetingError(f"{stage}: no table to process (kinds present: {sorted({e['kind'] for e in tables.values()})})")
        return chosen
    try:
        pat = re.compile(regex)
    except re.error as exc:
        raise ConfigError(f"--tables regex {regex!r} is invalid: {exc}") from None
    chosen = {n: e for n, e in tables.items() if pat.fullmatch(n)}
    if not chosen:
        raise TargetingError(f"--tables {regex!r} matched no table; tables: {', '.join(sorted(tables)) or 'none'}")
    for n, e in chosen.items():
        if e["kind"] not in ok_kinds:
            why = {
                "lowrank": "is already low-rank", "quantized": "is already quantized (quantize after svd, not before)",
            }.get(e["kind"], f"has kind {e['kind']}")
            raise TargetingError(f"{stage}: table {n!r} {why}")
    return chosen


def _base_entry(entry: dict) -> dict:
    new = {k: v for k, v in entry.items() if k not in ("factors", "kind", "stages", "base")}
    stages = list(entry.get("stages") or [])
    if entry["kind"] == "mlet":
        if not stages:
            stages = [{"stage": "mlet", "inner_dim": entry["factors"]["table"]["shape"][1]}]
        stages.append({"stage": "collapse"})
    new["stages"] = stages
    return new


def _drop_keys(entry: dict) -> list[str]:
    keys = [f["key"] for f in entry["factors"].values()]
    keys += [f["quant"]["scale_key"] for f in entry["factors"].values() if "quant" in f]
    return keys


def svd_checkpoint(
    src: Union[str, Path],
    dst: Optional[Union[str, Path]] = None,
    *,
    rank: Optional[int] = None,
    energy: Optional[float] = None,
    tables: Optional[str] = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    force: bool = False,
    progress: Optional[Progress] = None,
    notify: Optional[Notify] = None,
) -> tuple[Path, dict[str, dict]]:
    """Replace tables by their best rank-r factors A (n×r) and B (r×d), streaming (Eckart–Young optimal).

    Args:
        src: input checkpoint (never modified).
        dst: output (default ``<stem>.svd.safetensors`` beside ``src``).
        rank / energy: exactly one: a fixed rank 1..d, or the smallest rank keeping ``energy`` of Σσ².
        tables: regex (full match) of table names; default every plain/MLET table with d ≥ 2.
        chunk_rows, force, progress: as in :func:`collapse_checkpoint`.
        notify: optional callback receiving one-line notes (e.g. MLET factors collapsed first).

    Returns:
        ``(output path, {table: {"rank", "rel_error", ...}})``.
    """
    if (rank is None) == (energy is None):
        raise ConfigError("svd needs exactly one of --rank R or --energy E")
    if energy is not None and not (0.0 < energy <= 1.0):
        raise ConfigError(f"energy must be in (0, 1], got {energy}")
    if rank is not None and rank < 1:
        raise ConfigError(f"rank must be >= 1, got {rank}")
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be >= 1, got {chunk_rows}")
    doc, _ = load_header(src)
    chosen = _select(doc["tables"], tables, ("plain", "mlet"), "svd")
    dst = resolve_output(src, dst, "svd", force)
    report: dict[str, dict] = {}
    with RowReader(src) as reader:
        plan = Plan()
        for name, entry in chosen.items():
            rows = _Rows(reader, entry)
            if rank is not None and rank > rows.dim:
                raise ConfigError(f"table {name!r}: rank {rank} exceeds its embedding dim {rows.dim}")
            if entry["kind"] == "mlet" and notify:
                notify(f"table {name!r}: MLET factors collapsed before SVD")
            lr = plan_low_rank(rows, num_rows=rows.num_rows, rank=rank, energy=energy, chunk_rows=chunk_rows, name=name)
            out_dtype = rows.dtype if rows.dtype in (torch.float32, torch.float64) else torch.float32
            n, r, d = rows.num_rows, lr.rank, rows.dim
            p = f"{name}." if name else ""

            def a_chunks(rows=rows, lr=lr, out_dtype=out_dtype, name=name):
                for _, _, a in iter_projected_rows(rows, lr, num_rows=rows.num_rows, chunk_rows=chunk_rows, out_dtype=out_dtype, name=name):
                    yield a

            B = lr.B(out_dtype)
            new = _base_entry(entry)
            new["kind"] = "lowrank"
            new["embedding_dim"] = d
            new["factors"] = {
                "A": {"key": p + "A", "shape": [n, r], "dtype": dtype_name(out_dtype)},
                "B": {"key": p + "B", "shape": [r, d], "dtype": dtype_name(out_dtype)},
            }
            stage = {"stage": "svd", "rank": r, "rel_error": lr.rel_error}
            if energy is not None:
                stage["energy"] = energy
            new["stages"].append(stage)
            plan.tables[name] = TablePlan(
                _drop_keys(entry),
                [OutTensor(p + "A", out_dtype, (n, r), a_chunks), OutTensor(p + "B", out_dtype, (r, d), lambda B=B: iter([B]))],
                new,
            )
            report[name] = {"rows": n, "dim": d, "rank": r, "rel_error": lr.rel_error, "collapsed_first": entry["kind"] == "mlet"}
        return execute(src, dst, plan, reader, progress=progress), report


def quantize_checkpoint(
    src: Union[str, Path],
    dst: Optional[Union[str, Path]] = None,
    *,
    bits: int = 8,
    granularity: str = "table",
    grid: int = 100,
    tables: Optional[str] = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    force: bool = False,
    progress: Optional[Progress] = None,
    notify: Optional[Notify] = None,
) -> tuple[Path, dict[str, dict]]:
    """Quantize tables (plain, or the A factor of low-rank tables) to ``bits`` with a grid-searched scale.

    Args:
        bits: 2..8. granularity: ``"table"`` (paper) or ``"row"``. grid: candidate thresholds.
        Other arguments as in :func:`svd_checkpoint` (default output ``<stem>.q<bits>.safetensors``).

    Returns:
        ``(output path, {table: {"bits", "granularity", "l2_error", "sqnr_db", ...}})``.
    """
    from .config import QuantConfig

    QuantConfig(bits=bits, granularity=granularity, grid=grid, chunk_rows=chunk_rows)  # validates
    doc, _ = load_header(src)
    chosen = _select(doc["tables"], tables, ("plain", "mlet", "lowrank"), "quantize")
    dst = resolve_output(src, dst, f"q{bits}", force)
    report: dict[str, dict] = {}
    with RowReader(src) as reader:
        plan = Plan()
        for name, entry in chosen.items():
            lowrank = entry["kind"] == "lowrank"
            rows = _Rows(reader, entry, "A" if lowrank else "weight")
            if not rows.dtype.is_floating_point:
                raise ConfigError(f"table {name!r} has dtype {rows.dtype}; only float tables can be quantized")
            if entry["kind"] == "mlet" and notify:
                notify(f"table {name!r}: MLET factors collapsed before quantizing")
            n, c = rows.num_rows, rows.dim
            scale = search_scale(rows, bits=bits, grid=grid, granularity=granularity, num_rows=n, chunk_rows=chunk_rows, name=name)
            # The error goes into the stage record in the header, which is written before any tensor
            # data, so it needs its own pass over the table (the write pass quantizes again).
            err_sq = sig_sq = 0.0
            B = reader.full(entry["factors"]["B"]["key"]).to(torch.float32) if lowrank else None
            for ch in iter_quantized_rows(rows, scale, bits, num_rows=n, chunk_rows=chunk_rows, name=name):
                if B is None:
                    err_sq, sig_sq = err_sq + ch.error_sq, sig_sq + ch.signal_sq
                else:  # error of the represented table A @ B
                    a = rows(ch.start, ch.stop).to(torch.float64)
                    s = scale if scale.dim() == 0 else scale[ch.start:ch.stop]
                    deq = dequantize(unpack_rows(ch.packed, bits, c), s).to(torch.float64)
                    err_sq += float((((a - deq) @ B.double()) ** 2).sum())
                    sig_sq += float(((a @ B.double()) ** 2).sum())
            l2 = err_sq ** 0.5
            sqnr = sqnr_db(sig_sq, err_sq)
            p = f"{name}." if name else ""

            def q_chunks(rows=rows, scale=scale, name=name):
                for ch in iter_quantized_rows(rows, scale, bits, num_rows=rows.num_rows, chunk_rows=chunk_rows, name=name):
                    yield ch.packed

            quant = {"bits": bits, "granularity": granularity, "scale_key": p + "scale"}
            new = _base_entry(entry)
            new["kind"] = "quantized"
            d = int(entry["embedding_dim"])
            outputs = [OutTensor(p + "qweight", torch.uint8, (n, packed_cols(c, bits)), q_chunks)]
            if lowrank:
                new["base"] = "lowrank"
                new["factors"] = {"A": {"key": p + "qweight", "shape": [n, c], "dtype": "float32", "quant": quant},
                                  "B": {"key": p + "proj", "shape": [c, d], "dtype": "float32"}}
                outputs.append(OutTensor(p + "proj", torch.float32, (c, d), lambda B=B: iter([B.contiguous()])))
            else:
                new["base"] = "plain"
                new["factors"] = {"weight": {"key": p + "qweight", "shape": [n, d], "dtype": "float32", "quant": quant}}
            scale32 = scale.to(torch.float32).contiguous()
            outputs.append(OutTensor(p + "scale", torch.float32, tuple(scale32.shape), lambda s=scale32: iter([s])))
            new["stages"].append({"stage": "quantize", "bits": bits, "granularity": granularity, "grid": grid,
                                  "l2_error": l2, "sqnr_db": sqnr})
            plan.tables[name] = TablePlan(_drop_keys(entry), outputs, new)
            report[name] = {"rows": n, "dim": d, "bits": bits, "granularity": granularity, "l2_error": l2,
                            "sqnr_db": sqnr, "collapsed_first": entry["kind"] == "mlet"}
        return execute(src, dst, plan, reader, progress=progress), report
