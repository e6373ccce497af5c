"""Compression stages, one config each, applied the same way to a model in memory or a checkpoint on disk.

``compress_(model, config, filter_fn)`` changes a model in place (torchao's ``quantize_`` shape);
``compress_checkpoint(src, config, dst)`` streams a checkpoint into a new file with no model code. Both
take the same configs, select tables the same way (``target_modules`` / ``exclude_modules`` through
:mod:`mlet_compress.targeting`), refuse the same orders with the same reasons, and return a
:class:`CompressReport`:

========================  ==========================================  ===========================
config                    stage (file)                                 where it applies
========================  ==========================================  ===========================
:class:`HashConfig`       ``idx % m`` (:mod:`.hash`)                   models, before training
:class:`MLETConfig`       n×k table @ k→d projection (:mod:`.mlet`)    models, before training
:class:`CollapseConfig`   ``table @ proj.T`` (:mod:`.mlet`)            models and checkpoints
:class:`LowRankConfig`    truncated SVD A @ B (:mod:`.lowrank`)        models and checkpoints
:class:`QuantConfig`      2–8-bit grid-searched codes (:mod:`.quantize`)  models and checkpoints
========================  ==========================================  ===========================

Valid order: hash → MLET → collapse → SVD → quantize (any stage may be skipped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from torch import nn

from ..atomic import resolve_output
from ..checkpoint import load_header
from ..config import CollapseConfig, MLETConfig
from ..errors import ConfigError
from ..streaming import Plan, Progress, RowReader, execute
from ..table_modules import set_stage_chain, stage_chain
from ..targeting import replace_module
from . import hash as _hash  # noqa: F401  (registers the stage)
from . import lowrank as _lowrank  # noqa: F401  (registers the stage)
from . import mlet as _mlet
from . import quantize as _quantize  # noqa: F401  (registers the stage)
from .base import (
    Candidate, CompressReport, FilterFn, OrderRule, Skipped, Stage, TableFilter, check_order, model_candidates,
    nothing_left, register, registered, select_tables, stage_for,
)

wrap = _mlet.wrap


def _module_bytes(mod: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in mod.state_dict().values())


def compress_(model: nn.Module, config: Any, filter_fn: Optional[FilterFn] = None) -> CompressReport:
    """Apply one stage to the model's embedding tables, in place.

    Args:
        model: any ``nn.Module`` holding embedding tables (plain, hashed, MLET, collapsed, low-rank...).
        config: :class:`HashConfig`, :class:`MLETConfig`, :class:`CollapseConfig`, :class:`LowRankConfig`
            or :class:`QuantConfig`.
        filter_fn: optional ``filter_fn(name, module) -> bool`` on top of the config's targets.

    Returns:
        A :class:`CompressReport` (a mapping of each changed table's name to its stats).

    Raises:
        TargetingError: nothing matched, or an explicitly targeted table is in a state the stage does not
            compose with (tables reached by the default selection are skipped and reported instead).
        ConfigError: bad stage parameters for a table (e.g. rank > d).

    Example:
        >>> from mlet_compress import QuantConfig
        >>> m = nn.ModuleDict({"t": nn.Embedding(100, 8)})
        >>> compress_(m, QuantConfig(bits=8))["t"]["stage"]
        'quantize'
    """
    stage = stage_for(config)
    if isinstance(config, MLETConfig):
        wrap(model, config)
        report = CompressReport("mlet")
        report.tables.update({n: {"stage": "mlet", **info} for n, info in model.mlet_wrapped.items()})
        return report
    chosen, skipped = select_tables(stage, model_candidates(model), config, filter_fn, in_file=False)
    report = CompressReport(stage.name)
    report.skipped.update(skipped)
    for c in chosen:
        stage.check_table(c, config)
    has_ebc = any(c.ebc for c in chosen)
    if stage.to_ebc is not None and has_ebc:  # TorchRec EBCs are replaced whole
        report.tables.update(stage.to_ebc(model, [c.obj for c in chosen if c.ebc], config))
    done_all = [(c, stage.to_module(c.name, c.obj.module, config)) for c in chosen if not c.ebc]
    report.skipped.update({c.name: d.reason for c, d in done_all if isinstance(d, Skipped)})
    if done_all and not has_ebc and all(isinstance(d, Skipped) for _, d in done_all):
        raise nothing_left(stage, report.skipped)
    for c, done in done_all:
        old = c.obj.module
        if done is None or isinstance(done, Skipped):
            continue
        new, record = done
        set_stage_chain(new, stage_chain(old) + (record,))
        new.train(old.training)
        replace_module(model, c.names, new)
        report.tables[c.name] = {"rows": int(new.num_embeddings), "dim": int(new.embedding_dim), **record.to_json(),
                                 "bytes_before": _module_bytes(old), "bytes_after": _module_bytes(new)}
    return report


def collapse(model: nn.Module, *, check: bool = True, probe_rows: int = 1024) -> nn.Module:
    """Replace every MLET module by a plain table holding ``table @ proj.T`` (in place); return the model.

    The collapsed model's ``state_dict()`` has exactly the keys, shapes and dtypes of the original
    unwrapped model, so it loads into the original model class with ``strict=True``. Same as
    ``compress_(model, CollapseConfig(check=check, probe_rows=probe_rows))``.

    Args:
        model: a model returned by :func:`wrap` (or containing MLET modules).
        check: verify the collapsed lookup equals the MLET lookup on up to ``probe_rows`` random rows
            (fp64 reference) and refuse NaN/Inf.
        probe_rows: rows probed by the check.

    Raises:
        TargetingError: the model holds no MLET modules.
        NumericalError: NaN/Inf in a collapsed table, or the equivalence check failed.

    Example:
        >>> from mlet_compress import MLETConfig
        >>> m = wrap(nn.Sequential(nn.Embedding(10, 4)), MLETConfig(inner_dim=8))
        >>> type(collapse(m)[0]).__name__
        'Embedding'
    """
    compress_(model, CollapseConfig(check=check, probe_rows=probe_rows))
    if hasattr(model, "mlet_wrapped"):
        delattr(model, "mlet_wrapped")
    return model


def compress_checkpoint(
    src: Union[str, Path],
    config: Any,
    dst: Optional[Union[str, Path]] = None,
    *,
    tables: TableFilter = None,
    force: bool = False,
    progress: Optional[Progress] = None,
) -> CompressReport:
    """Apply one stage to a checkpoint's tables, streaming row chunks into a new file (no model code).

    The input is never modified; the output is written to a temp file beside ``dst`` and renamed into
    place. Memory stays at a few row chunks (``config.chunk_rows``) plus O(d²) whatever the table size.
    MLET factors are collapsed on the fly before SVD or quantization (``report.notes`` says so).

    Args:
        src: input checkpoint.
        config: :class:`CollapseConfig`, :class:`LowRankConfig` or :class:`QuantConfig` (hashing and MLET are
            training-time stages and are refused with the reason).
        dst: output path (default ``<stem>.<suffix>.safetensors`` beside ``src``: ``collapsed``, ``svd``,
            ``q8``, ``q4row``, ...).
        tables: extra table filter on top of the config's targets: a regex (full match), a list of
            names/suffixes, or ``fn(name, entry) -> bool``.
        force: replace an existing ``dst`` (never ``src``).
        progress: optional ``(bytes_written, total_bytes)`` callback.

    Returns:
        A :class:`CompressReport` with ``output`` set.

    Raises:
        CheckpointError: unreadable input or bad output path. TargetingError: nothing to process, or an
        explicitly chosen table in a state the stage refuses. ConfigError: bad parameters for a table.
        NumericalError: NaN/Inf in a table.

    Example:
        >>> from mlet_compress import QuantConfig
        >>> compress_checkpoint("model.safetensors", QuantConfig(bits=8, granularity="row")).output  # doctest: +SKIP
        PosixPath('model.q8row.safetensors')
    """
    stage = stage_for(config)
    if stage.plan_file is None:
        raise ConfigError(f"{stage.name} does not apply to checkpoints: {stage.file_refusal}")
    header, _ = load_header(src)
    candidates = [Candidate([n, *e.aliases], e.kind, e.hash is not None, e.num_embeddings, e.embedding_dim, e)
                  for n, e in header.tables.items()]
    chosen, skipped = select_tables(stage, candidates, config, tables, extra_name="tables", in_file=True)
    for c in chosen:
        stage.check_table(c, config)
    dst = resolve_output(src, dst, stage.suffix(config), force)
    report = CompressReport(stage.name)
    report.skipped.update(skipped)
    with RowReader(src, dict(header.key_renames)) as reader:
        plan = Plan()
        for c in chosen:
            entry = c.obj
            collapsed_first = check_order(stage, c.name, c.kind, c.hashed, in_file=True)
            planned = stage.plan_file(entry, reader, config)
            if isinstance(planned, Skipped):
                report.skipped[c.name] = planned.reason
                continue
            table_plan, stats = planned
            plan.tables[c.name] = table_plan
            before = sum(reader.info(k).nbytes for k in entry.tensor_keys())
            after = sum(o.nbytes for o in table_plan.outputs)
            added = table_plan.entry.stages[len(entry.stages):]  # none when a table only moves to another key
            report.tables[c.name] = {**stats, **(added[-1].to_json() if added else {}), "bytes_before": before,
                                     "bytes_after": after, "collapsed_first": collapsed_first}
            if collapsed_first:
                report.notes.append(f"table {c.name!r}: MLET factors collapsed before {stage.name}")
        if not plan.tables:
            raise nothing_left(stage, report.skipped)
        report.output = execute(src, dst, plan, reader, progress=progress)
    return report


def collapse_checkpoint(src: Union[str, Path], dst: Optional[Union[str, Path]] = None, *, chunk_rows: int = 65536,
                        force: bool = False, progress: Optional[Progress] = None) -> Path:
    """Collapse every MLET table of a checkpoint into a plain n×d table, streaming row chunks.

    ``compress_checkpoint(src, CollapseConfig(chunk_rows=...), dst)`` returning the output path. The output
    has the state-dict keys of the original unwrapped model (``<name>.table`` and ``<name>.proj`` become
    ``<name>.weight``); other tensors are copied unchanged.

    Example:
        >>> collapse_checkpoint("model.safetensors")  # doctest: +SKIP
        PosixPath('model.collapsed.safetensors')
    """
    return compress_checkpoint(src, CollapseConfig(chunk_rows=chunk_rows), dst, force=force, progress=progress).output


__all__ = ["compress_", "compress_checkpoint", "collapse_checkpoint", "wrap", "collapse", "CompressReport", "Stage",
           "OrderRule", "Skipped", "register", "registered", "stage_for", "check_order", "select_tables"]
