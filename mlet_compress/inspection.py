"""A structured summary of a checkpoint's embedding tables (what ``mlet-compress inspect`` prints)."""

from __future__ import annotations

from pathlib import Path
from typing import Union

from .checkpoint import load_header


def stage_label(stage: dict) -> str:
    """``{"stage": "svd", "rank": 8}`` → ``"svd(rank=8)"``."""
    args = ",".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in sorted(stage.items())
        if k not in ("stage", "original_num_embeddings") and v is not None
    )
    return f"{stage.get('stage', '?')}({args})" if args else str(stage.get("stage", "?"))


def display_kind(entry: dict) -> str:
    """``kind`` plus what else shapes the table: e.g. ``"quantized(lowrank, 8b)+hashed"``."""
    kind = entry["kind"]
    if kind == "quantized":
        q = next(f["quant"] for f in entry["factors"].values() if "quant" in f)
        kind = f"quantized({entry.get('base', 'plain')}, {q['bits']}b/{q['granularity']})"
    if entry.get("hash"):
        kind += "+hashed"
    return kind


def inspect_checkpoint(path: Union[str, Path]) -> dict:
    """Summarise a checkpoint: per table name/kind/rows/(n, k, d)/dtype/bytes/stages, plus totals.

    ``n`` is the logical index space (before hashing), ``rows`` the stored rows; ``k`` is the MLET inner
    dim or the low-rank rank (``None`` for plain/quantized plain tables).
    """
    doc, infos = load_header(path)
    rows_out = []
    table_keys: set[str] = set()
    for name, ent in sorted(doc["tables"].items()):
        keys = []
        for f in ent["factors"].values():
            keys.append(f["key"])
            if "quant" in f:
                keys.append(f["quant"]["scale_key"])
        table_keys.update(keys)
        fac = ent["factors"]
        k = None
        if ent["kind"] == "mlet":
            k = fac["table"]["shape"][1]
        elif "A" in fac:
            k = fac["A"]["shape"][1]
        first = fac.get("table") or fac.get("A") or fac.get("weight")
        dtype = infos[first["key"]].dtype if "quant" not in first else None
        rows_out.append({
            "name": name,
            "kind": display_kind(ent),
            "rows": ent["num_embeddings"],
            "n": (ent.get("hash") or {}).get("original_num_embeddings", ent["num_embeddings"]),
            "k": k,
            "d": ent["embedding_dim"],
            "dtype": str(dtype).replace("torch.", "") if dtype is not None else f"int{first['quant']['bits']}",
            "bytes": sum(infos[key].nbytes for key in keys),
            "stages": [stage_label(s) for s in ent.get("stages", [])],
            "aliases": ent.get("aliases", []),
        })
    other = [i for key, i in infos.items() if key not in table_keys]
    return {
        "path": str(path),
        "schema_version": doc["schema_version"],
        "model": doc.get("model"),
        "tables": rows_out,
        "totals": {
            "tables": len(rows_out),
            "table_bytes": sum(r["bytes"] for r in rows_out),
            "other_tensors": len(other),
            "other_bytes": sum(i.nbytes for i in other),
            "file_bytes": Path(path).stat().st_size,
        },
    }
