"""Serve a quantized checkpoint with TorchRec: build, save and load a ``torchrec.quant.EmbeddingBagCollection``.

:func:`to_torchrec_quant` turns a checkpoint's quantized tables into TorchRec's quantized EBC (FBGEMM fused
rows, :mod:`.torchrec_quant`); :func:`export_torchrec_quant` writes them to a file that
:func:`load_torchrec_quant` rebuilds the module from (the ``mlet-compress export-torchrec`` command).

The file is a safetensors file holding TorchRec's own split-scale-bias state dict of the module
(``quant_state_dict_split_scale_bias=True``), per table ``t``:

* ``embedding_bags.t.weight`` — uint8 n×(d·c/8) unsigned codes (c = 8, 4 or 2: INT8/INT4/INT2 rows);
* ``embedding_bags.t.weight_qscale`` and ``embedding_bags.t.weight_qbias`` — float16 n×1;

and under the metadata key ``"mlet_compress_torchrec_quant"`` a JSON document with what rebuilding the
module needs: ``{"format": 1, "producer", "source", "is_weighted", "output_dtype", "tables": [{"name",
"num_embeddings", "embedding_dim", "feature_names", "data_type", "pooling", "bits", "source_table",
"fp16_scale_error"}]}``.

Which tables: plain quantized tables (``kind == "quantized"``, base ``plain``, not hashed, no
``padding_idx``). TorchRec entries (:mod:`.ebc_tables`) keep their TorchRec table and feature names; other
tables are named after their module path with ``.`` → ``_`` and looked up by a feature of that name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from safetensors.torch import load_file, save_file

from .._version import __version__
from ..atomic import atomic_path, resolve_output
from ..checkpoint import Checkpoint, load_checkpoint
from ..errors import CheckpointError, ConfigError
from ..ops.quant import container_bits
from ..safetensors_io import read_header
from ..schema import TableEntry
from ..targeting import name_matches
from .ebc_tables import TORCHREC_OPTION
from .torchrec_quant import (_DATA_TYPE, _POOLING, DataType, EmbeddingBagConfig, QuantEmbeddingBagCollection, QuantTable,
                             fbgemm_rows, to_torchrec_quant as _from_tables)

META_KEY = "mlet_compress_torchrec_quant"
FORMAT = 1
_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass
class ExportResult:
    """What :func:`export_torchrec_quant` wrote: the file, one row per exported table, the tables left out and why."""

    path: Path
    tables: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _not_exportable(e: TableEntry) -> Optional[str]:
    if e.kind != "quantized":
        return f"is {e.display_kind()}, not quantized; quantize it first (QuantConfig)"
    if e.base != "plain":
        return "is a quantized low-rank table (codes @ B); FBGEMM's quantized rows hold plain tables"
    if e.hash is not None:
        return "is hashed (rows idx % m); FBGEMM looks up raw ids"
    if e.options.get("padding_idx") is not None:
        return "has a padding_idx, which FBGEMM's quantized tables do not have"
    if e.options.get("mode", "sum") not in _POOLING:
        return f"pools with mode={e.options.get('mode')!r}; FBGEMM pools with 'sum' or 'mean'"
    return None


def _select(ck: Checkpoint, tables: Union[None, str, Sequence[str]]) -> tuple[list[TableEntry], dict[str, str]]:
    chosen, skipped = [], {}
    for name, e in ck.tables.items():
        if tables is not None and not any(name_matches(n, tables) for n in (name, *e.aliases)):
            continue
        why = _not_exportable(e)
        if why is not None and tables is not None:
            raise ConfigError(f"table {name!r} {why}; leave it out of {{option}}", option="tables", value=tables)
        if why is not None:
            skipped[name] = why
        else:
            chosen.append(e)
    if not chosen:
        why = "; ".join(f"{n}: {r}" for n, r in list(skipped.items())[:5])
        raise ConfigError(f"{ck.path or 'checkpoint'}: no quantized table to export" + (f" ({why})" if why else ""))
    return chosen, skipped


def quant_table(e: TableEntry, tensors: dict[str, torch.Tensor]) -> QuantTable:
    """The :class:`QuantTable` of one exportable quantized entry (TorchRec names kept, others ``.`` → ``_``)."""
    info = e.options.get(TORCHREC_OPTION) or {}
    name = info.get("table") or e.name.replace(".", "_")
    q, key = e.quant, e.factors["weight"].key
    try:
        codes, scale = tensors[key], tensors[q.scale_key]
    except KeyError as exc:
        raise CheckpointError(f"table {e.name!r}: tensor {exc} is missing from the checkpoint") from None
    return QuantTable(name, codes, scale, q.bits, e.embedding_dim, list(info.get("feature_names") or [name]),
                      e.options.get("mode", "sum"))


def _weighted(entries: list[TableEntry], is_weighted: Optional[bool]) -> bool:
    flags = {bool((e.options.get(TORCHREC_OPTION) or {}).get("is_weighted", False)) for e in entries}
    if is_weighted is not None:
        return is_weighted
    if len(flags) > 1:
        raise ConfigError("the tables come from weighted and unweighted EBCs; export them separately (select them "
                          "with {option})", option="tables", value=...)
    return flags.pop()


def to_torchrec_quant(src: Union[str, Path, Checkpoint, Sequence[QuantTable]], *, tables=None,
                      is_weighted: Optional[bool] = None, output_dtype: torch.dtype = torch.float32,
                      max_fp16_error: Optional[float] = None) -> QuantEmbeddingBagCollection:
    """TorchRec's quantized EBC holding a quantized checkpoint's tables (or a list of :class:`QuantTable`).

    Args:
        src: a checkpoint path or :class:`~mlet_compress.Checkpoint`, or :class:`QuantTable` objects.
        tables: regex / names / suffixes of the tables to export (default: every exportable quantized table;
            the others are left out). is_weighted: whether input KJTs carry per-sample weights (default: as
            the TorchRec EBC the tables came from; False otherwise). output_dtype: pooled output dtype.
        max_fp16_error: refuse tables whose fp16 scales add more relative error than this.

    Returns:
        The module; ``module.fp16_scale_error`` maps each table to the error fp16 scales add.

    Raises:
        ConfigError: no exportable table, or a named table that cannot be exported (the message says why).
        CheckpointError: unreadable checkpoint. NumericalError: see :func:`.torchrec_quant.to_torchrec_quant`.
    """
    if isinstance(src, (list, tuple)):
        return _from_tables(src, bool(is_weighted), output_dtype, max_fp16_error)
    ck = src if isinstance(src, Checkpoint) else load_checkpoint(src)
    entries, _ = _select(ck, tables)
    return _from_tables([quant_table(e, ck.tensors) for e in entries], _weighted(entries, is_weighted), output_dtype,
                        max_fp16_error)


def export_torchrec_quant(src: Union[str, Path], dst: Union[str, Path, None] = None, *, tables=None,
                          is_weighted: Optional[bool] = None, output_dtype: torch.dtype = torch.float32,
                          max_fp16_error: Optional[float] = None, force: bool = False) -> ExportResult:
    """Write a quantized checkpoint's tables as TorchRec's quantized EBC state (see the module docstring).

    Args:
        src: a quantized checkpoint. dst: output (default ``<stem>.torchrec.safetensors`` beside ``src``).
        tables / is_weighted / output_dtype / max_fp16_error: as :func:`to_torchrec_quant`.
        force: replace an existing ``dst`` (never ``src``).

    Returns:
        An :class:`ExportResult`.

    Raises:
        CheckpointError: unreadable input, ``dst`` is the input or exists without ``force``. ConfigError /
        NumericalError: as :func:`to_torchrec_quant`.

    Example:
        >>> res = export_torchrec_quant("model.q8row.safetensors")   # doctest: +SKIP
        >>> qebc = load_torchrec_quant(res.path)                       # doctest: +SKIP
    """
    dst = resolve_output(src, dst, "torchrec", force)
    ck = load_checkpoint(src)
    entries, skipped = _select(ck, tables)
    qtables = [quant_table(e, ck.tensors) for e in entries]
    module = _from_tables(qtables, _weighted(entries, is_weighted), output_dtype, max_fp16_error)
    tensors, rows = {}, []
    for e, t in zip(entries, qtables):
        codes, scale_bias = fbgemm_rows(t)
        sb = scale_bias.view(torch.float16)
        p = f"embedding_bags.{t.name}."
        tensors |= {p + "weight": codes.contiguous(), p + "weight_qscale": sb[:, :1].contiguous(),
                    p + "weight_qbias": sb[:, 1:].contiguous()}
        rows.append({"name": t.name, "num_embeddings": int(codes.shape[0]), "embedding_dim": t.embedding_dim,
                     "feature_names": list(t.feature_names), "data_type": _DATA_TYPE[container_bits(t.bits)].name,
                     "pooling": t.pooling.upper(), "bits": t.bits, "source_table": e.name,
                     "fp16_scale_error": module.fp16_scale_error[t.name]})
    doc = {"format": FORMAT, "producer": f"mlet-compress {__version__}", "source": str(src),
           "is_weighted": module.is_weighted(), "output_dtype": str(output_dtype).replace("torch.", ""), "tables": rows}
    with atomic_path(Path(dst)) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(doc)})
    return ExportResult(Path(dst), rows, skipped)


def load_torchrec_quant(path: Union[str, Path]) -> QuantEmbeddingBagCollection:
    """Rebuild the ``torchrec.quant.EmbeddingBagCollection`` written by :func:`export_torchrec_quant` (CPU).

    Raises:
        CheckpointError: not such a file (no or unreadable metadata, missing tensors).
    """
    meta, _, _ = read_header(path)
    try:
        doc = json.loads(meta[META_KEY])
        specs = list(doc["tables"])
        configs = [EmbeddingBagConfig(name=t["name"], embedding_dim=int(t["embedding_dim"]),
                                      num_embeddings=int(t["num_embeddings"]), feature_names=list(t["feature_names"]),
                                      data_type=DataType[t["data_type"]], pooling=_POOLING[t["pooling"].lower()])
                   for t in specs]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a TorchRec quantized-EBC export of mlet-compress ({type(exc).__name__}: "
                              f"{exc}); write one with export_torchrec_quant") from None
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: export format {doc.get('format')!r}; this mlet-compress reads format {FORMAT}")
    tensors = load_file(str(path))
    weights = {}
    for c in configs:
        p = f"embedding_bags.{c.name}."
        try:
            sb = torch.cat([tensors[p + "weight_qscale"], tensors[p + "weight_qbias"]], dim=1).contiguous()
            weights[c.name] = (tensors[p + "weight"], sb.view(torch.uint8))
        except KeyError as exc:
            raise CheckpointError(f"{path}: tensor {exc} of table {c.name!r} is missing") from None
    return QuantEmbeddingBagCollection(configs, bool(doc["is_weighted"]), torch.device("cpu"),
                                       output_dtype=_DTYPES.get(doc.get("output_dtype"), torch.float32),
                                       table_name_to_quantized_weights=weights)


__all__ = ["META_KEY", "ExportResult", "quant_table", "to_torchrec_quant", "export_torchrec_quant", "load_torchrec_quant"]
