"""Size, error and lookup-latency report of a (compressed) checkpoint against its reference.

Used by ``mlet-compress benchmark``. Latencies are medians of repeated lookups of one random batch
(bags of ``bag_size`` indices); they are measurements, printed as ratios, never asserted in tests.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from torch import nn

from .checkpoint import load_checkpoint
from .lookup import dense_weight
from .schema import TableEntry
from .table_modules import module_from_entry
from .ops.fbgemm_ref import fbgemm_available, fbgemm_embedding_bag, fbgemm_reference
from .ops.quant import sqnr_db


def _table_bytes(entry: TableEntry, tensors: dict[str, torch.Tensor]) -> int:
    return sum(tensors[k].numel() * tensors[k].element_size() for k in entry.tensor_keys())


def _median_ms(fn: Callable[[], torch.Tensor], repeats: int) -> float:
    with torch.no_grad():
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def _lookup_call(mod: nn.Module, idx: torch.Tensor, offsets: torch.Tensor) -> Callable[[], torch.Tensor]:
    if getattr(mod, "mode", None) is not None or isinstance(mod, nn.EmbeddingBag):
        return lambda: mod(idx, offsets)
    return lambda: mod(idx)


def benchmark_checkpoint(
    path: Union[str, Path],
    reference: Optional[Union[str, Path]] = None,
    *,
    batch: int = 4096,
    bag_size: int = 1,
    repeats: int = 20,
    seed: int = 0,
) -> dict:
    """Per table and in total: bytes before/after, ratio, error/SQNR vs the reference, lookup latency.

    Args:
        path: the checkpoint to measure.
        reference: the checkpoint it came from (for bytes before and the reconstruction error); without it
            "before" is the dense fp32 table and errors are not reported.
        batch: bags per lookup. bag_size: indices per bag. repeats: timed repetitions (median reported).

    Returns:
        ``{"tables": [...], "totals": {...}, "fbgemm": bool}`` (JSON-serialisable).
    """
    ck = load_checkpoint(path)
    ref = load_checkpoint(reference) if reference is not None else None
    g = torch.Generator().manual_seed(seed)
    have_fbgemm = fbgemm_available()
    rows_out = []
    for name, entry in sorted(ck.tables.items()):
        mod = module_from_entry(entry, ck.tensors).eval()
        w = dense_weight(mod)
        n, d = w.shape
        row = {"name": name, "layout": entry.display_kind(), "rows": n, "dim": d, "bytes_after": _table_bytes(entry, ck.tensors)}
        ref_w = None
        if ref is not None and name in ref.tables:
            row["bytes_before"] = _table_bytes(ref.tables[name], ref.tensors)
            ref_w = dense_weight(module_from_entry(ref.tables[name], ref.tensors))
        else:
            row["bytes_before"] = n * d * 4
        row["ratio"] = row["bytes_before"] / max(1, row["bytes_after"])
        if ref_w is not None and ref_w.shape == w.shape:
            err = float(((ref_w.double() - w.double()) ** 2).sum())
            row["l2_error"] = math.sqrt(err)
            row["sqnr_db"] = sqnr_db(float((ref_w.double() ** 2).sum()), err)
        logical = entry.logical_rows
        idx = torch.randint(0, logical, (batch * bag_size,), generator=g)
        offsets = torch.arange(0, batch * bag_size, bag_size)
        row["ours_ms"] = _median_ms(_lookup_call(mod, idx, offsets), repeats)
        fp32 = nn.EmbeddingBag.from_pretrained(w, mode="sum", freeze=True)
        hashed_idx = idx % n
        row["fp32_ms"] = _median_ms(lambda: fp32(hashed_idx, offsets), repeats)
        if have_fbgemm and d >= 2:
            fb = fbgemm_reference(ref_w if ref_w is not None and ref_w.shape == w.shape else w)
            row["fbgemm_ms"] = _median_ms(lambda: fbgemm_embedding_bag(fb.packed, hashed_idx, offsets, mode="sum"), repeats)
            row["fbgemm_bytes"] = fb.nbytes
            row["fbgemm_l2_error"], row["fbgemm_sqnr_db"] = fb.l2_error, fb.sqnr_db
        rows_out.append(row)
    before = sum(r["bytes_before"] for r in rows_out)
    after = sum(r["bytes_after"] for r in rows_out)
    totals = {"tables": len(rows_out), "bytes_before": before, "bytes_after": after,
              "ratio": before / max(1, after), "ours_ms": sum(r["ours_ms"] for r in rows_out),
              "fp32_ms": sum(r["fp32_ms"] for r in rows_out)}
    if rows_out and all("fbgemm_ms" in r for r in rows_out):
        totals["fbgemm_ms"] = sum(r["fbgemm_ms"] for r in rows_out)
    totals["ours_over_fp32"] = totals["ours_ms"] / max(1e-12, totals["fp32_ms"])
    if "fbgemm_ms" in totals:
        totals["ours_over_fbgemm"] = totals["ours_ms"] / max(1e-12, totals["fbgemm_ms"])
    return {"path": str(path), "reference": str(reference) if reference else None, "batch": batch,
            "bag_size": bag_size, "repeats": repeats, "fbgemm": have_fbgemm, "tables": rows_out, "totals": totals}
