"""Size, error and lookup-latency report of a (compressed) checkpoint against its reference.

Used by ``mlet-compress benchmark``. Sizes are reported for the embedding tables *and* the whole file
(whose header carries vocabularies and whose dense weights no stage touches), so the file ratio is never
mistaken for the table ratio. Each latency is the min / median / max over ``repeats`` timings of one
random batch (bags of ``bag_size`` indices); a timing repeats the lookup until it lasts at least
``min_seconds``, so tiny tables are not timed at the clock's granularity. They are measurements, printed
as ratios, never asserted in tests.

Example:
    >>> rep = benchmark_checkpoint("model.q8.safetensors", "model.safetensors", repeats=5)   # doctest: +SKIP
    >>> rep["totals"]["ratio"], rep["file"]["ratio"], rep["file"]["embedding_share_after"]     # doctest: +SKIP
    (3.94, 1.31, 0.18)
"""

from __future__ import annotations

import math
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import torch
from torch import nn

from .checkpoint import Checkpoint, load_checkpoint
from .errors import ConfigError
from .lookup import dense_weight
from .ops.fbgemm_ref import fbgemm_available, fbgemm_embedding_bag, fbgemm_reference
from .ops.quant import sqnr_db
from .safetensors_io import read_header
from .schema import TableEntry
from .table_modules import module_from_entry

#: Shortest timing: a lookup is repeated until one timing lasts at least this long.
MIN_SECONDS = 2e-3


def _table_bytes(entry: TableEntry, tensors: dict[str, torch.Tensor]) -> int:
    return sum(tensors[k].numel() * tensors[k].element_size() for k in entry.tensor_keys())


def time_call(fn: Callable[[], Any], repeats: int, min_seconds: float = MIN_SECONDS) -> dict[str, float]:
    """Time ``fn``: ``{"min", "median", "max"}`` milliseconds per call over ``repeats`` timings, and ``calls``.

    Each timing runs ``fn`` ``calls`` times, ``calls`` chosen (after a warm-up) so one timing lasts at
    least ``min_seconds``.

    Example:
        >>> t = time_call(lambda: sum(range(100)), repeats=3)
        >>> t["min"] <= t["median"] <= t["max"] and t["calls"] >= 1
        True
    """
    with torch.no_grad():
        fn()  # warm-up
        calls = 1
        while True:
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds or calls >= 1 << 20:
                break
            calls = min(1 << 20, max(2 * calls, int(calls * 1.2 * min_seconds / max(elapsed, 1e-9))))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times.append((time.perf_counter() - t0) / calls * 1e3)
    return {"min": min(times), "median": statistics.median(times), "max": max(times), "calls": calls}


def _lookup_call(mod: nn.Module, idx: torch.Tensor, offsets: torch.Tensor) -> Callable[[], torch.Tensor]:
    if getattr(mod, "mode", None) is not None or isinstance(mod, nn.EmbeddingBag):
        return lambda: mod(idx, offsets)
    return lambda: mod(idx)


def check_reference(ck: Checkpoint, ref: Checkpoint, path: Any, reference: Any) -> None:
    """Refuse a reference whose tables differ from the checkpoint's in names or logical shapes (n, d).

    Raises:
        ConfigError: naming the tables only in one of them and those whose shapes differ.
    """
    ours = {n: (e.logical_rows, e.embedding_dim) for n, e in ck.tables.items()}
    theirs = {n: (e.logical_rows, e.embedding_dim) for n, e in ref.tables.items()}
    problems = []
    if set(ours) - set(theirs):
        problems.append(f"only in {path}: {sorted(set(ours) - set(theirs))[:5]}")
    if set(theirs) - set(ours):
        problems.append(f"only in the reference: {sorted(set(theirs) - set(ours))[:5]}")
    shapes = [f"{n} {ours[n][0]}×{ours[n][1]} vs {theirs[n][0]}×{theirs[n][1]}"
              for n in sorted(set(ours) & set(theirs)) if ours[n] != theirs[n]]
    if shapes:
        problems.append("shapes differ: " + ", ".join(shapes[:5]))
    if problems:
        raise ConfigError(f"{{option}} {reference} is not the checkpoint {path} came from ({'; '.join(problems)}); "
                          "pass the checkpoint it was compressed from", option="reference", value=str(reference))


def file_sizes(path: Union[str, Path], ck: Checkpoint) -> dict[str, int]:
    """``{"file_bytes", "header_bytes", "table_bytes", "other_tensor_bytes"}`` of a checkpoint file."""
    _, _, data_start = read_header(path)
    tables = sum(_table_bytes(e, ck.tensors) for e in ck.tables.values())
    total = sum(t.numel() * t.element_size() for t in ck.tensors.values())
    return {"file_bytes": Path(path).stat().st_size, "header_bytes": data_start, "table_bytes": tables,
            "other_tensor_bytes": total - tables}


@contextmanager
def _threads(n: Optional[int]) -> Iterator[int]:
    old = torch.get_num_threads()
    if n is not None:
        if n < 1:
            raise ConfigError(f"{{option}} must be >= 1, got {n}", option="threads", value=n)
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def _errors(row: dict, w: torch.Tensor, ref_w: Optional[torch.Tensor]) -> None:
    if ref_w is not None and ref_w.shape == w.shape:
        err = float(((ref_w.double() - w.double()) ** 2).sum())
        row["l2_error"] = math.sqrt(err)
        row["sqnr_db"] = sqnr_db(float((ref_w.double() ** 2).sum()), err)


def _measure_table(name: str, entry: TableEntry, ck: Checkpoint, ref: Optional[Checkpoint], g: torch.Generator,
                   batch: int, bag_size: int, repeats: int, min_seconds: float, have_fbgemm: bool) -> dict:
    mod = module_from_entry(entry, ck.tensors).eval()
    w = dense_weight(mod)
    n, d = w.shape
    row: dict[str, Any] = {"name": name, "layout": entry.display_kind(), "rows": n, "dim": d,
                           "bytes_after": _table_bytes(entry, ck.tensors)}
    ref_w = None
    if ref is not None:
        row["bytes_before"] = _table_bytes(ref.tables[name], ref.tensors)
        ref_w = dense_weight(module_from_entry(ref.tables[name], ref.tensors))
    else:
        row["bytes_before"] = n * d * 4
    row["ratio"] = row["bytes_before"] / max(1, row["bytes_after"])
    _errors(row, w, ref_w)
    idx = torch.randint(0, entry.logical_rows, (batch * bag_size,), generator=g)
    offsets = torch.arange(0, batch * bag_size, bag_size)
    timings = {"ours": time_call(_lookup_call(mod, idx, offsets), repeats, min_seconds)}
    fp32 = nn.EmbeddingBag.from_pretrained(w, mode="sum", freeze=True)
    hashed_idx = idx % n
    timings["fp32"] = time_call(lambda: fp32(hashed_idx, offsets), repeats, min_seconds)
    if have_fbgemm and d >= 2:
        fb = fbgemm_reference(ref_w if ref_w is not None and ref_w.shape == w.shape else w)
        timings["fbgemm"] = time_call(lambda: fbgemm_embedding_bag(fb.packed, hashed_idx, offsets, mode="sum"),
                                      repeats, min_seconds)
        row["fbgemm_bytes"] = fb.nbytes
        row["fbgemm_l2_error"], row["fbgemm_sqnr_db"] = fb.l2_error, fb.sqnr_db
    for kind, t in timings.items():
        row[f"{kind}_ms"], row[f"{kind}_ms_min"], row[f"{kind}_ms_max"] = t["median"], t["min"], t["max"]
        row[f"{kind}_calls"] = t["calls"]
    return row


def _totals(rows: list[dict]) -> dict[str, Any]:
    before = sum(r["bytes_before"] for r in rows)
    after = sum(r["bytes_after"] for r in rows)
    totals: dict[str, Any] = {"tables": len(rows), "bytes_before": before, "bytes_after": after,
                              "ratio": before / max(1, after)}
    for kind in ("ours", "fp32", "fbgemm"):
        if rows and all(f"{kind}_ms" in r for r in rows):
            for stat in ("", "_min", "_max"):
                totals[f"{kind}_ms{stat}"] = sum(r[f"{kind}_ms{stat}"] for r in rows)
    totals["ours_over_fp32"] = totals.get("ours_ms", 0.0) / max(1e-12, totals.get("fp32_ms", 0.0))
    if "fbgemm_ms" in totals:
        totals["ours_over_fbgemm"] = totals["ours_ms"] / max(1e-12, totals["fbgemm_ms"])
    return totals


def _file_report(path: Any, ck: Checkpoint, reference: Any, ref: Optional[Checkpoint]) -> dict[str, Any]:
    after = file_sizes(path, ck)
    rep: dict[str, Any] = {"bytes_after": after["file_bytes"], "header_bytes_after": after["header_bytes"],
                           "other_tensor_bytes_after": after["other_tensor_bytes"],
                           "embedding_share_after": after["table_bytes"] / max(1, after["file_bytes"]),
                           "bytes_before": None, "ratio": None, "embedding_share_before": None}
    if ref is not None:
        before = file_sizes(reference, ref)
        rep.update(bytes_before=before["file_bytes"], header_bytes_before=before["header_bytes"],
                   other_tensor_bytes_before=before["other_tensor_bytes"],
                   ratio=before["file_bytes"] / max(1, after["file_bytes"]),
                   embedding_share_before=before["table_bytes"] / max(1, before["file_bytes"]))
    return rep


def benchmark_checkpoint(
    path: Union[str, Path],
    reference: Optional[Union[str, Path]] = None,
    *,
    batch: int = 4096,
    bag_size: int = 1,
    repeats: int = 20,
    threads: Optional[int] = None,
    min_seconds: float = MIN_SECONDS,
    seed: int = 0,
) -> dict:
    """Per table and in total: bytes before/after, ratio, error/SQNR vs the reference, lookup latency
    (min/median/max) of the checkpoint's lookup module, an fp32 ``nn.EmbeddingBag`` and FBGEMM's int8 kernel;
    and for the whole file: bytes before/after and the share of it that is embedding tables.

    Args:
        path: the checkpoint to measure.
        reference: the checkpoint it came from (table bytes before, file bytes before, reconstruction
            error); without it "before" is the dense fp32 table and errors are not reported.
        batch: bags per lookup. bag_size: indices per bag. repeats: timings per latency.
        threads: torch CPU threads during the measurement (None: the current setting).
        min_seconds: shortest timing (the lookup is repeated within a timing until it lasts this long).
        seed: seed of the random indices.

    Returns:
        ``{"tables": [...], "totals": {...}, "file": {...}, "threads", "fbgemm", ...}`` (JSON-serialisable).
        Latencies are milliseconds per lookup: ``<kind>_ms`` (median), ``<kind>_ms_min``, ``<kind>_ms_max``.

    Raises:
        CheckpointError: unreadable checkpoint. ConfigError: a reference whose tables do not match (names,
        logical shapes), or ``threads < 1``.
    """
    ck = load_checkpoint(path)
    ref = load_checkpoint(reference) if reference is not None else None
    if ref is not None:
        check_reference(ck, ref, path, reference)
    g = torch.Generator().manual_seed(seed)
    have_fbgemm = fbgemm_available()
    with _threads(threads) as used:
        rows = [_measure_table(name, entry, ck, ref, g, batch, bag_size, repeats, min_seconds, have_fbgemm)
                for name, entry in sorted(ck.tables.items())]
    return {"path": str(path), "reference": str(reference) if reference else None, "batch": batch,
            "bag_size": bag_size, "repeats": repeats, "threads": used, "min_seconds": min_seconds,
            "fbgemm": have_fbgemm, "tables": rows, "totals": _totals(rows), "file": _file_report(path, ck, reference, ref)}


__all__ = ["benchmark_checkpoint", "check_reference", "file_sizes", "time_call", "MIN_SECONDS"]
