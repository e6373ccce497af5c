"""Checkpoint-level collapse of MLET tables, streamed in row chunks (no model code needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union


from .checkpoint import load_header
from .errors import CheckpointError, ConfigError
from .ops.collapse import check_finite, collapse_rows
from .safetensors_io import dtype_name
from .streaming import OutTensor, Plan, Progress, RowReader, TablePlan, execute, resolve_output

DEFAULT_CHUNK_ROWS = 65536


def _collapse_plan(name: str, entry: dict, reader: RowReader, chunk_rows: int) -> TablePlan:
    tkey, pkey = entry["factors"]["table"]["key"], entry["factors"]["proj"]["key"]
    proj = reader.full(pkey)
    check_finite(proj, f"table {name!r}: projection {pkey!r}")
    tinfo = reader.info(tkey)
    n, _ = tinfo.shape
    d = proj.shape[0]
    out_dtype = tinfo.dtype
    out_key = f"{name}.weight" if name else "weight"

    def chunks():
        for a, rows in zip(range(0, max(n, 1), chunk_rows), reader.chunks(tkey, chunk_rows)):
            out = collapse_rows(rows, proj, out_dtype)
            # NaN/Inf in a table row always reaches its output row (x*0 is NaN for x = ±Inf), so checking
            # the (k/d times smaller) output covers the input too.
            check_finite(out, f"table {name!r}: rows {a}..{a + rows.shape[0] - 1} of {tkey!r} (collapsed)")
            yield out

    new = {k: v for k, v in entry.items() if k not in ("factors", "kind", "stages")}
    new["kind"] = "plain"
    new["embedding_dim"] = int(d)
    new["factors"] = {"weight": {"key": out_key, "shape": [int(n), int(d)], "dtype": dtype_name(out_dtype)}}
    new["stages"] = list(entry.get("stages") or [{"stage": "mlet", "inner_dim": int(tinfo.shape[1])}]) + [{"stage": "collapse"}]
    return TablePlan([tkey, pkey], [OutTensor(out_key, out_dtype, (int(n), int(d)), chunks)], new)


def collapse_checkpoint(
    src: Union[str, Path],
    dst: Optional[Union[str, Path]] = None,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    force: bool = False,
    progress: Optional[Progress] = None,
) -> Path:
    """Collapse every MLET table of a checkpoint into a plain n×d table, streaming row chunks.

    The output has the state-dict keys of the original unwrapped model (``<name>.table`` and
    ``<name>.proj`` become ``<name>.weight``); other tensors are copied unchanged. The output is written
    to a temp file beside ``dst`` and renamed into place when complete.

    Args:
        src: input checkpoint (never modified).
        dst: output path; default ``<src stem>.collapsed.safetensors`` beside ``src``.
        chunk_rows: rows per chunk (peak memory ≈ chunk_rows × (k + d) × 4 bytes).
        force: overwrite ``dst`` if it exists.
        progress: optional callback ``(bytes_written, total_bytes)``.

    Returns:
        The output path.

    Raises:
        CheckpointError: bad input file, nothing to collapse, or bad output path.
        NumericalError: NaN/Inf in a factor or in the result.

    Example:
        >>> collapse_checkpoint("model.safetensors")  # doctest: +SKIP
        PosixPath('model.collapsed.safetensors')
    """
    if not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    doc, _ = load_header(src)
    mlet = {n: e for n, e in doc["tables"].items() if e["kind"] == "mlet"}
    if not mlet:
        kinds = sorted({e["kind"] for e in doc["tables"].values()}) or ["none"]
        raise CheckpointError(f"{src}: no MLET tables to collapse (table kinds present: {', '.join(kinds)})")
    dst = resolve_output(src, dst, "collapsed", force)
    with RowReader(src) as reader:
        plan = Plan({n: _collapse_plan(n, e, reader, chunk_rows) for n, e in mlet.items()})
        return execute(src, dst, plan, reader, progress=progress)
