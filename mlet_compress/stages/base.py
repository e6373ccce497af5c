"""The stage registry: what every stage declares, and the selection, order rule and report they share.

A stage (one file each in this package) registers a :class:`Stage` for its config class with

(a) ``op`` — its pure tensor function in :mod:`mlet_compress.ops`;
(b) ``to_module`` — the module handler: one float embedding module → its compressed twin (or None when
    there is nothing to do), plus the :class:`~mlet_compress.schema.StageRecord` of what it did;
(c) ``plan_file`` — the streaming plan of one :class:`~mlet_compress.schema.TableEntry` of a checkpoint
    (None for training-time stages, which ``file_refusal`` explains);
(d) ``order`` — the :class:`OrderRule`: the table states it refuses, with the reason, and whether a file's
    MLET factors are collapsed on the fly first.

:func:`compress_` (models) and :func:`compress_checkpoint` (files) both go through :func:`select_tables`,
:func:`check_order` and :class:`CompressReport`, so the same config picks the same tables, refuses the
same orders with the same error, and reports the same fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

from ..errors import ConfigError, TargetingError
from ..integrations import ebc_tables
from ..schema import StageRecord
from ..table_modules import TABLE_KINDS, table_kind
from ..targeting import find_modules, name_matches

#: A model-level filter: ``filter_fn(module_name, module) -> bool``.
FilterFn = Callable[[str, Any], bool]
#: A file-level table filter: a regex (full match), a list of names/suffixes, or ``fn(name, entry) -> bool``.
TableFilter = Union[None, str, Sequence[str], Callable[[str, Any], bool]]


@dataclass(frozen=True)
class OrderRule:
    """Where a stage may go in a table's history.

    Attributes:
        refuse: table state (``mlet``, ``lowrank``, ``quantized``, ``hashed``) → why the stage cannot apply.
        collapse_first: in files, MLET factors are collapsed on the fly and the stage applies to the result
            (a model's MLET modules are refused instead: the caller collapses the model when training ends).
    """

    refuse: Mapping[str, str] = field(default_factory=dict)
    collapse_first: bool = False


@dataclass(frozen=True)
class Skipped:
    """What a stage's ``to_module`` / ``plan_file`` returns for a table it leaves as it is once it has looked
    at it (e.g. an SVD rank that would save nothing); the reason goes to :attr:`CompressReport.skipped`."""

    reason: str


@dataclass
class Candidate:
    """One table as selection sees it, whether a module of a model or an entry of a file.

    ``obj`` is a :class:`~mlet_compress.targeting.Found` module, a :class:`~mlet_compress.schema.TableEntry`,
    or (``ebc=True``) an :class:`~mlet_compress.integrations.ebc_tables.EBCTable` of a TorchRec model.
    """

    names: list[str]
    kind: str
    hashed: bool
    rows: int
    dim: int
    obj: Any
    ebc: bool = False

    @property
    def name(self) -> str:
        """The canonical (first) name."""
        return self.names[0]


@dataclass(frozen=True)
class Stage:
    """A registered stage (see the module docstring for the four parts).

    Attributes:
        name: the name in stage records and messages (``svd``, ``quantize``, ``hash``, ``mlet``, ``collapse``).
        config: its config class. op: its pure tensor function.
        to_module: ``(name, module, config) -> (new module, StageRecord) | Skipped | None``.
        plan_file: ``(entry, reader, config) -> (TablePlan, stats) | Skipped``, or None (no file plan).
        order: the :class:`OrderRule`.
        skip_reason: ``(candidate, config) -> reason | None``: tables the stage leaves alone by default
            (1-dim "linear" tables, tables below a size threshold, ...).
        check_table: ``(candidate, config) -> None``: per-table parameter checks (raise ConfigError).
        suffix: ``config -> str``: the default output name infix (``model.<suffix>.safetensors``).
        file_refusal: why the stage does not apply to checkpoints (when ``plan_file`` is None).
        to_ebc: ``(model, [EBCTable], config) -> {name: stats}``: the handler of the tables of TorchRec
            EmbeddingBagCollections in a model (whole EBCs are replaced); None: such tables are refused.
    """

    name: str
    config: type
    op: Callable[..., Any]
    to_module: Callable[[str, Any, Any], Optional[tuple[Any, StageRecord]]]
    order: OrderRule
    plan_file: Optional[Callable[[Any, Any, Any], tuple[Any, dict]]] = None
    skip_reason: Callable[[Candidate, Any], Optional[str]] = lambda c, cfg: None
    check_table: Callable[[Candidate, Any], None] = lambda c, cfg: None
    suffix: Callable[[Any], str] = lambda cfg: "out"
    file_refusal: str = ""
    to_ebc: Optional[Callable[[Any, list, Any], dict]] = None


_REGISTRY: dict[type, Stage] = {}


def register(stage: Stage) -> Stage:
    """Register ``stage`` for its config class (one stage per config class)."""
    _REGISTRY[stage.config] = stage
    return stage


def stage_for(config: Any) -> Stage:
    """The registered stage of ``config``'s class.

    Raises:
        ConfigError: no stage takes this config.
    """
    stage = _REGISTRY.get(type(config))
    if stage is None:
        names = ", ".join(sorted(c.__name__ for c in _REGISTRY))
        raise ConfigError(f"no compression stage takes a {type(config).__name__}; use one of {names}")
    return stage


def registered() -> dict[type, Stage]:
    """Every registered stage by config class."""
    return dict(_REGISTRY)


def check_order(stage: Stage, name: str, kind: str, hashed: bool, *, in_file: bool) -> bool:
    """Apply ``stage``'s order rule to one table; True when a file's MLET factors must be collapsed first.

    Raises:
        TargetingError: the table is in a state the stage does not compose with (the message says why).
    """
    rule = stage.order
    if kind == "mlet" and rule.collapse_first and in_file:
        return True
    reason = rule.refuse.get(kind) or (rule.refuse.get("hashed") if hashed else None)
    if reason is not None:
        raise TargetingError(f"cannot apply {stage.name} to {name!r}: the table {reason}")
    return False


def _describe(candidates: list[Candidate]) -> str:
    if not candidates:
        return "there are no embedding tables"
    parts = [f"{c.name} ({c.kind} {c.rows}x{c.dim})" for c in candidates[:20]]
    more = f" and {len(candidates) - 20} more" if len(candidates) > 20 else ""
    return "embedding tables present: " + ", ".join(parts) + more


def _filter_matches(c: Candidate, extra: TableFilter) -> bool:
    if extra is None:
        return True
    if callable(extra):
        return any(extra(n, c.obj) for n in c.names)
    return any(name_matches(n, extra) for n in c.names)


def select_tables(stage: Stage, candidates: list[Candidate], config: Any, extra: TableFilter = None, *,
                  extra_name: str = "filter_fn", in_file: bool) -> tuple[list[Candidate], dict[str, str]]:
    """The tables ``config`` (and ``extra``) select for ``stage``, and those skipped with the reason.

    Tables named explicitly (``target_modules`` or ``extra`` given) that the order rule refuses raise; by
    default they are skipped and reported. Tables ``stage.skip_reason`` excludes (1-dim tables, small
    tables for hashing, ...) are skipped either way.

    Raises:
        TargetingError: nothing selected (the message names the criteria, the skip reasons and the tables
            present), or an explicitly selected table in a state the stage refuses.
    """
    explicit = config.target_modules is not None or extra is not None
    chosen, skipped = [], {}
    for c in candidates:
        if not any(name_matches(n, config.target_modules) for n in c.names):
            continue
        if config.exclude_modules is not None and any(name_matches(n, config.exclude_modules) for n in c.names):
            continue
        if not _filter_matches(c, extra):
            continue
        reason = stage.skip_reason(c, config)
        if reason is not None:
            skipped[c.name] = reason
            continue
        try:
            if c.ebc and stage.to_ebc is None:
                raise TargetingError(f"cannot apply {stage.name} to {c.name!r}: the table {ebc_tables.REFUSAL}")
            check_order(stage, c.name, c.kind, c.hashed, in_file=in_file)
        except TargetingError as exc:
            if explicit:
                raise
            skipped[c.name] = str(exc)
            continue
        chosen.append(c)
    if not chosen:
        parts = [f"{k}={getattr(config, k)!r}" for k in ("target_modules", "exclude_modules") if getattr(config, k) is not None]
        named = extra is not None and not callable(extra)
        if named:
            parts.append("{option}")
        elif extra is not None:
            parts.append(extra_name)
        head = f"no embedding table matched {', '.join(parts)}" if parts else "no table to process"
        why = "; ".join(f"{n}: {r}" for n, r in list(skipped.items())[:5])
        raise TargetingError(f"{stage.name}: {head}" + (f" ({why})" if why else "") + f"; {_describe(candidates)}",
                             option=extra_name if named else None, value=extra)
    return chosen, skipped


def model_candidates(model: Any) -> list[Candidate]:
    """Every embedding table of ``model`` (aliases found once) as a selection :class:`Candidate`; the tables of
    TorchRec EBCs once each, by their EBC table (not as the ``nn.EmbeddingBag`` s inside the EBC)."""
    ebcs = ebc_tables.find_ebc_tables(model)
    owned = ebc_tables.owned_module_ids(ebcs)
    out = []
    for f in find_modules(model, TABLE_KINDS):
        m = f.module
        if id(m) in owned:
            continue
        out.append(Candidate(f.names, table_kind(m), getattr(m, "num_buckets", None) is not None,
                             int(m.num_embeddings), int(m.embedding_dim), f))
    return out + [Candidate([t.name], t.kind, False, t.rows, t.dim, t, ebc=True) for t in ebcs]


class CompressReport(Mapping):
    """What :func:`compress_` / :func:`compress_checkpoint` did: a read-only mapping of table name → stats.

    Each table's stats hold ``rows``, ``dim``, the stage record's fields (``stage``, ``rank``, ``bits``,
    ``l2_error``, ...), ``bytes_before`` / ``bytes_after`` and, for files, ``collapsed_first``.

    Attributes:
        stage: the stage name. tables: the per-table stats. skipped: table → why it was left alone.
        notes: one-line remarks (e.g. MLET factors collapsed first). output: the written file, if any.
    """

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.tables: dict[str, dict[str, Any]] = {}
        self.skipped: dict[str, str] = {}
        self.notes: list[str] = []
        self.output: Optional[Path] = None

    def __getitem__(self, name: str) -> dict[str, Any]:
        return self.tables[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tables)

    def __len__(self) -> int:
        return len(self.tables)

    @property
    def bytes_before(self) -> int:
        """Total bytes of the changed tables before the stage."""
        return sum(int(t.get("bytes_before", 0)) for t in self.tables.values())

    @property
    def bytes_after(self) -> int:
        """Total bytes of the changed tables after the stage."""
        return sum(int(t.get("bytes_after", 0)) for t in self.tables.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (``--json`` output of the CLI)."""
        return {"stage": self.stage, "output": str(self.output) if self.output else None, "tables": self.tables,
                "skipped": self.skipped, "notes": self.notes,
                "totals": {"tables": len(self.tables), "bytes_before": self.bytes_before, "bytes_after": self.bytes_after}}

    def __repr__(self) -> str:
        return f"CompressReport(stage={self.stage!r}, tables={sorted(self.tables)}, skipped={sorted(self.skipped)})"


def nothing_left(stage: Stage, skipped: dict[str, str]) -> TargetingError:
    """The error when every selected table was skipped after inspection (nothing would change)."""
    why = "; ".join(f"{n}: {r}" for n, r in list(skipped.items())[:5])
    return TargetingError(f"{stage.name}: no table left to change, every selected table was skipped ({why})")


__all__ = ["Stage", "OrderRule", "Candidate", "Skipped", "nothing_left", "CompressReport", "FilterFn", "TableFilter", "register", "stage_for",
           "registered", "check_order", "select_tables", "model_candidates"]
