"""The on-disk checkpoint format as types: :class:`TableEntry` per embedding table, :class:`CheckpointHeader`.

An mlet-compress checkpoint is a safetensors file whose ``__metadata__`` holds one JSON document under
``"mlet_compress"`` (see ``docs/checkpoint-format.md``). This module is the only code that reads or builds
that document: every other module works with the frozen dataclasses below, and every malformed header
becomes a :class:`~mlet_compress.errors.CheckpointError` here, naming the table and the field.

Schema versions: 1 (mlet-compress 0.1.0) and 2 (a quantized low-rank table stores its r×d factor under
``<name>.B`` instead of ``<name>.proj``). Version-1 files are read unchanged: :meth:`CheckpointHeader.
from_metadata` migrates their entries and reports the tensor keys that moved (``key_renames``).

Example:
    >>> e = TableEntry.plain("emb", "emb.weight", (100, 8))
    >>> e.kind, e.tensor_keys(), TableEntry.from_json("emb", e.to_json()) == e
    ('plain', ['emb.weight'], True)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from .errors import CheckpointError

META_KEY = "mlet_compress"
SCHEMA_VERSION = 2
KINDS = ("plain", "mlet", "lowrank", "quantized")
MODULES = ("embedding", "embedding_bag")
#: Factors each kind must have (quantized: by its ``base``).
FACTORS = {"plain": ("weight",), "mlet": ("table", "proj"), "lowrank": ("A", "B"),
           ("quantized", "plain"): ("weight",), ("quantized", "lowrank"): ("A", "B")}
#: Key suffix of each factor / tensor role under the table's module name (the state-dict keys of its module).
KEY_SUFFIX = {"weight": "weight", "table": "table", "proj": "proj", "A": "A", "B": "B", "codes": "qweight",
              "scale": "scale"}


def table_key(name: str, role: str) -> str:
    """The state-dict key of tensor ``role`` (a factor name, ``"codes"`` or ``"scale"``) of table ``name``.

    Example:
        >>> table_key("emb.user", "codes"), table_key("", "weight")
        ('emb.user.qweight', 'weight')
    """
    return f"{name}.{KEY_SUFFIX[role]}" if name else KEY_SUFFIX[role]


class _Fields:
    """Typed reads from one JSON object, raising :class:`CheckpointError` that names the table and field."""

    def __init__(self, obj: Any, where: str):
        if not isinstance(obj, dict):
            raise CheckpointError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        self.obj, self.where = obj, where

    def fail(self, name: str, why: str) -> CheckpointError:
        return CheckpointError(f"{self.where}: field {name!r} {why}")

    def get(self, name: str, kind: type | tuple, default: Any = ..., *, positive: bool = False) -> Any:
        if name not in self.obj or (self.obj[name] is None and default is not ...):
            if default is ...:
                raise self.fail(name, "is missing")
            return default
        v = self.obj[name]
        if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            raise self.fail(name, f"has the wrong type ({type(v).__name__}: {v!r})")
        if positive and v <= 0:
            raise self.fail(name, f"must be positive, got {v!r}")
        return v


#: dtypes a quantization scale may be stored in (files without the field hold float32 scales).
SCALE_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class QuantSpec:
    """How a quantized factor is stored: ``bits`` (2..8), ``granularity`` (table/row), its scale tensor
    and that tensor's dtype (``scale_dtype``: float32, or float16; files written before it hold float32)."""

    bits: int
    granularity: str
    scale_key: str
    scale_dtype: str = "float32"

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the ``quant`` field."""
        return {"bits": self.bits, "granularity": self.granularity, "scale_key": self.scale_key,
                "scale_dtype": self.scale_dtype}


@dataclass(frozen=True)
class Factor:
    """One tensor of a table: its state-dict ``key``, logical ``shape`` and ``dtype`` (float32 when quantized)."""

    key: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    quant: Optional[QuantSpec] = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of one factor."""
        out: dict[str, Any] = {"key": self.key, "shape": list(self.shape), "dtype": self.dtype}
        if self.quant is not None:
            out["quant"] = self.quant.to_json()
        return out

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "Factor":
        """Parse a factor object (errors name ``where``)."""
        f = _Fields(obj, where)
        shape = f.get("shape", list)
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise f.fail("shape", f"must be a list of non-negative integers, got {shape!r}")
        quant = None
        if f.obj.get("quant") is not None:
            q = _Fields(f.obj["quant"], f"{where} quant")
            quant = QuantSpec(q.get("bits", int), q.get("granularity", str), q.get("scale_key", str),
                              q.get("scale_dtype", str, "float32"))
            if not 2 <= quant.bits <= 8:
                raise q.fail("bits", f"must be in 2..8, got {quant.bits}")
            if quant.granularity not in ("table", "row"):
                raise q.fail("granularity", f"must be 'table' or 'row', got {quant.granularity!r}")
            if quant.scale_dtype not in SCALE_DTYPES:
                raise q.fail("scale_dtype", f"must be one of {SCALE_DTYPES}, got {quant.scale_dtype!r} "
                                            "(upgrade mlet-compress?)")
        return cls(f.get("key", str), tuple(shape), f.get("dtype", str, "float32"), quant)


@dataclass(frozen=True)
class HashSpec:
    """Modulo hashing of a table's indices: lookups read row ``idx % num_buckets``."""

    num_buckets: int
    original_num_embeddings: int

    def to_json(self) -> dict[str, int]:
        """The JSON object of the ``hash`` field."""
        return {"num_buckets": self.num_buckets, "original_num_embeddings": self.original_num_embeddings}


@dataclass(frozen=True)
class StageRecord:
    """One step of a table's history: ``stage`` (mlet, hash, collapse, svd, quantize) and its parameters.

    Example:
        >>> r = StageRecord.make("svd", rank=4, rel_error=0.125)
        >>> r.label(), r.get("rank")
        ('svd(rank=4,rel_error=0.125)', 4)
    """

    stage: str
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def make(cls, stage: str, **params: Any) -> "StageRecord":
        """A record with the given parameters (``None`` values are dropped)."""
        return cls(stage, tuple(sorted((k, v) for k, v in params.items() if v is not None)))

    def get(self, key: str, default: Any = None) -> Any:
        """Parameter ``key`` (or ``default``)."""
        return dict(self.params).get(key, default)

    def label(self) -> str:
        """``svd(rank=8)``; the original row count of a hash stage is left out (shown elsewhere)."""
        args = ",".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in self.params if k != "original_num_embeddings")
        return f"{self.stage}({args})" if args else self.stage

    def to_json(self) -> dict[str, Any]:
        """``{"stage": ..., **params}``."""
        return {"stage": self.stage, **dict(self.params)}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "StageRecord":
        """Parse one element of a ``stages`` list."""
        f = _Fields(obj, where)
        return cls.make(f.get("stage", str), **{k: v for k, v in f.obj.items() if k != "stage"})


@dataclass(frozen=True)
class TableEntry:
    """Everything a tool needs to read, rebuild or transform one embedding table, without model code.

    Attributes:
        name: module name in the model (``emb.tables.user``); tensors live at ``<name>.<factor key>``.
        kind: ``plain`` (n×d ``weight``), ``mlet`` (n×k ``table`` and d×k ``proj``), ``lowrank``
            (n×r ``A``, r×d ``B``) or ``quantized`` (codes of ``weight`` or of ``A``, see ``base``).
        module: ``embedding`` or ``embedding_bag``.
        num_embeddings: stored rows (the hash modulus for hashed tables). embedding_dim: d.
        factors: factor name → :class:`Factor` (read-only by convention).
        options: the torch module options (padding_idx, sparse, mode, ...; read-only by convention).
        stages: the table's history, oldest first. hash: :class:`HashSpec` or None.
        base: for ``quantized``: ``plain`` or ``lowrank``. aliases: other module names of the same table.
    """

    name: str
    kind: str
    num_embeddings: int
    embedding_dim: int
    factors: Mapping[str, Factor]
    module: str = "embedding"
    options: Mapping[str, Any] = field(default_factory=dict)
    stages: tuple[StageRecord, ...] = ()
    hash: Optional[HashSpec] = None
    base: Optional[str] = None
    aliases: tuple[str, ...] = ()

    # ------------------------------------------------------------------ derived facts
    @property
    def is_bag(self) -> bool:
        """True for ``nn.EmbeddingBag``-like tables."""
        return self.module == "embedding_bag"

    @property
    def logical_rows(self) -> int:
        """Size of the index space lookups accept (before hashing)."""
        return self.hash.original_num_embeddings if self.hash else self.num_embeddings

    @property
    def quant(self) -> Optional[QuantSpec]:
        """The quantization of the quantized factor (None unless ``kind == "quantized"``)."""
        return next((f.quant for f in self.factors.values() if f.quant is not None), None)

    @property
    def inner_dim(self) -> Optional[int]:
        """MLET's k (None for other kinds)."""
        return self.factors["table"].shape[1] if self.kind == "mlet" else None

    @property
    def rank(self) -> Optional[int]:
        """The low-rank r of a ``lowrank`` or low-rank ``quantized`` table (None otherwise)."""
        return self.factors["A"].shape[1] if "A" in self.factors else None

    def tensor_keys(self) -> list[str]:
        """Every tensor key the table owns (factors, then quantization scales)."""
        keys = [f.key for f in self.factors.values()]
        return keys + [f.quant.scale_key for f in self.factors.values() if f.quant is not None]

    def display_kind(self) -> str:
        """``kind`` plus what else shapes the table, e.g. ``quantized(lowrank, 8b/row)+hashed``."""
        kind = self.kind
        if self.quant is not None:
            kind = f"quantized({self.base or 'plain'}, {self.quant.bits}b/{self.quant.granularity})"
        return kind + ("+hashed" if self.hash else "")

    # ------------------------------------------------------------------ new entries
    def with_stage(self, record: StageRecord, **changes: Any) -> "TableEntry":
        """A copy with ``record`` appended to the history and the given fields replaced.

        Example:
            >>> e = TableEntry.plain("t", "t.weight", (10, 4))
            >>> [s.stage for s in e.with_stage(StageRecord.make("collapse")).stages]
            ['collapse']
        """
        return dataclasses.replace(self, stages=self.stages + (record,), **changes)

    @classmethod
    def plain(cls, name: str, key: str, shape: tuple[int, ...], dtype: str = "float32", *,
              module: str = "embedding", options: Optional[Mapping[str, Any]] = None) -> "TableEntry":
        """The entry of a plain n×d table stored at ``key``."""
        n, d = (int(s) for s in shape)
        return cls(name, "plain", n, d, {"weight": Factor(key, (n, d), dtype)}, module=module,
                   options=dict(options or {"padding_idx": None}))

    @classmethod
    def mlet(cls, name: str, table: Factor, proj: Factor, *, module: str = "embedding",
             options: Optional[Mapping[str, Any]] = None) -> "TableEntry":
        """The entry of MLET factors: ``table`` n×k and ``proj`` d×k."""
        n, k = table.shape
        return cls(name, "mlet", n, proj.shape[0], {"table": table, "proj": proj}, module=module,
                   options=dict(options or {"padding_idx": None}), stages=(StageRecord.make("mlet", inner_dim=k),))

    @classmethod
    def from_module(cls, name: str, module: Any) -> Optional["TableEntry"]:
        """The entry describing an embedding module of the model (None when it is not a table)."""
        from .table_modules import entry_from_module  # a cycle: table_modules builds on this module

        return entry_from_module(name, module)

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        """The table's JSON object (the inverse of :meth:`from_json`)."""
        out: dict[str, Any] = {
            "module": self.module, "kind": self.kind, "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim, "options": dict(self.options),
            "hash": self.hash.to_json() if self.hash else None,
            "factors": {k: f.to_json() for k, f in self.factors.items()},
            "stages": [s.to_json() for s in self.stages],
        }
        if self.base is not None:
            out["base"] = self.base
        if self.aliases:
            out["aliases"] = list(self.aliases)
        return out

    @classmethod
    def from_json(cls, name: str, obj: Any) -> "TableEntry":
        """Parse and :meth:`validate` one table object of the header.

        Raises:
            CheckpointError: a missing or malformed field (the message names the table and the field).
        """
        where = f"table {name!r}"
        f = _Fields(obj, where)
        facs = _Fields(f.get("factors", dict), f"{where} factors").obj
        hashed = None
        if f.obj.get("hash") is not None:
            h = _Fields(f.obj["hash"], f"{where} hash")
            hashed = HashSpec(h.get("num_buckets", int, positive=True), h.get("original_num_embeddings", int, positive=True))
        aliases = f.get("aliases", list, [])
        entry = cls(
            name=name, kind=f.get("kind", str), num_embeddings=f.get("num_embeddings", int),
            embedding_dim=f.get("embedding_dim", int), module=f.get("module", str, "embedding"),
            factors={k: Factor.from_json(v, f"{where} factor {k!r}") for k, v in facs.items()},
            options=dict(f.get("options", dict, {})),
            stages=tuple(StageRecord.from_json(s, f"{where} stage {i}") for i, s in enumerate(f.get("stages", list, []))),
            hash=hashed, base=f.get("base", str, None), aliases=tuple(str(a) for a in aliases),
        )
        entry.validate()
        return entry

    def validate(self, infos: Optional[Mapping[str, Any]] = None, source: str = "") -> None:
        """Check the entry is consistent, and with ``infos`` (tensor key → object with ``shape``) that its
        tensors exist with the recorded shapes.

        Raises:
            CheckpointError: naming the table, the field and the fix.
        """
        where = f"{source + ': ' if source else ''}table {self.name!r}"

        def bad(fld: str, why: str) -> CheckpointError:
            return CheckpointError(f"{where}: field {fld!r} {why}")

        if self.kind not in KINDS:
            raise bad("kind", f"is {self.kind!r}; known kinds: {', '.join(KINDS)} (upgrade mlet-compress?)")
        if self.module not in MODULES:
            raise bad("module", f"is {self.module!r}; expected one of {MODULES}")
        for fld in ("num_embeddings", "embedding_dim"):
            if getattr(self, fld) < 0:
                raise bad(fld, f"must be >= 0, got {getattr(self, fld)}")
        if self.kind == "quantized" and self.base not in ("plain", "lowrank"):
            raise bad("base", f"is {self.base!r}; a quantized table needs base 'plain' or 'lowrank'")
        want = FACTORS[(self.kind, self.base) if self.kind == "quantized" else self.kind]
        if set(self.factors) != set(want):
            raise bad("factors", f"are {sorted(self.factors)}; a {self.kind} table has {list(want)}")
        if self.kind == "quantized" and self.quant is None:
            raise bad("factors", "of a quantized table carry no 'quant' object")
        if self.hash is not None and self.hash.num_buckets != self.num_embeddings:
            raise bad("hash", f"num_buckets={self.hash.num_buckets} differs from num_embeddings={self.num_embeddings}")
        if infos is not None:
            self._validate_tensors(infos, bad)

    def _validate_tensors(self, infos: Mapping[str, Any], bad) -> None:
        for fname, fac in self.factors.items():
            if fac.key not in infos:
                raise bad("factors", f"name tensor {fac.key!r} ({fname}), which the file does not hold")
            if fac.quant is None and tuple(infos[fac.key].shape) != tuple(fac.shape):
                raise bad("factors", f"say {fname} {fac.key!r} is {list(fac.shape)} but the file holds "
                                     f"{list(infos[fac.key].shape)}")
            if fac.quant is not None and fac.quant.scale_key not in infos:
                raise bad("factors", f"name scale tensor {fac.quant.scale_key!r}, which the file does not hold")
            held = getattr(infos.get(fac.quant.scale_key), "dtype", None) if fac.quant is not None else None
            if held is not None and str(held).replace("torch.", "") != fac.quant.scale_dtype:
                raise bad("factors", f"say scale {fac.quant.scale_key!r} is {fac.quant.scale_dtype} but the file holds "
                                     f"{str(held).replace('torch.', '')}")
        shape = {k: tuple(infos[f.key].shape) if f.quant is None else f.shape for k, f in self.factors.items()}
        if self.kind == "mlet" and not (len(shape["table"]) == len(shape["proj"]) == 2
                                        and shape["table"][1] == shape["proj"][1]):
            raise bad("factors", f"table {list(shape['table'])} and proj {list(shape['proj'])} disagree on the "
                                 "inner dimension k (table is n×k, projection d×k)")
        if "A" in shape and not (len(shape["A"]) == len(shape["B"]) == 2 and shape["A"][1] == shape["B"][0]):
            raise bad("factors", f"A {list(shape['A'])} and B {list(shape['B'])} disagree on the rank")


@dataclass(frozen=True)
class CheckpointHeader:
    """The whole ``mlet_compress`` metadata document.

    Attributes:
        tables: name → :class:`TableEntry`. aliases: state-dict key → the key whose tensor it shares.
        model: ``{"name", "config"}`` to rebuild the model, or None. extra: free-form JSON.
        schema_version: the version read (writing always writes :data:`SCHEMA_VERSION`).
        producer: the writer, e.g. ``mlet-compress 0.2.0``.
        key_renames: on-disk key → current key for tensors a schema migration moved (read-only files).
    """

    tables: Mapping[str, TableEntry]
    aliases: Mapping[str, str] = field(default_factory=dict)
    model: Optional[dict] = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    producer: str = ""
    key_renames: Mapping[str, str] = field(default_factory=dict)

    def to_metadata(self, producer: str) -> dict[str, str]:
        """The safetensors ``__metadata__`` dict (always the current schema version)."""
        doc = {"schema_version": SCHEMA_VERSION, "producer": producer,
               "tables": {n: e.to_json() for n, e in self.tables.items()}, "aliases": dict(self.aliases),
               "model": self.model, "extra": dict(self.extra)}
        return {META_KEY: json.dumps(doc, sort_keys=True)}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], source: str) -> "CheckpointHeader":
        """Decode, validate and (for older versions) migrate the header of a checkpoint.

        Raises:
            CheckpointError: no/invalid metadata, a newer schema version, or a malformed table.
        """
        raw = meta.get(META_KEY)
        if raw is None:
            raise CheckpointError(f"{source}: no {META_KEY!r} metadata; not an mlet-compress checkpoint "
                                  "(save it with save_checkpoint or `mlet-compress convert`)")
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError:
            raise CheckpointError(f"{source}: {META_KEY!r} metadata is not valid JSON") from None
        f = _Fields(doc, f"{source}: {META_KEY!r} metadata")
        version = doc.get("schema_version") if isinstance(doc, dict) else None
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise CheckpointError(f"{source}: missing or invalid schema_version in {META_KEY!r} metadata")
        if version > SCHEMA_VERSION:
            raise CheckpointError(f"{source}: checkpoint schema version {version} is newer than this mlet-compress "
                                  f"supports ({SCHEMA_VERSION}); upgrade mlet-compress")
        if not isinstance(doc.get("tables"), dict):
            raise CheckpointError(f"{source}: {META_KEY!r} metadata has no 'tables' object")
        try:
            tables = {n: TableEntry.from_json(n, e) for n, e in doc["tables"].items()}
        except CheckpointError as exc:
            raise CheckpointError(f"{source}: {exc}") from None
        header = cls(tables, dict(f.get("aliases", dict, {})), f.get("model", dict, None), dict(f.get("extra", dict, {})),
                     version, f.get("producer", str, ""))
        return _migrate_v1(header) if version == 1 else header

    def validate(self, infos: Mapping[str, Any], source: str) -> None:
        """Check every table's tensors against the file's tensor infos (keys after migration)."""
        current = {self.key_renames.get(k, k): v for k, v in infos.items()}
        for entry in self.tables.values():
            entry.validate(current, source)
        for alias, key in self.aliases.items():
            if key not in current:
                raise CheckpointError(f"{source}: field 'aliases': {alias!r} points at tensor {key!r}, which the "
                                      "file does not hold")

    def with_tables(self, tables: Mapping[str, TableEntry], aliases: Optional[Mapping[str, str]] = None) -> "CheckpointHeader":
        """A copy with new tables (and aliases); the result describes a file in the current schema."""
        return dataclasses.replace(self, tables=dict(tables), aliases=dict(self.aliases if aliases is None else aliases),
                                   schema_version=SCHEMA_VERSION, key_renames={})


def _migrate_v1(header: CheckpointHeader) -> CheckpointHeader:
    """Version 1 stored a quantized low-rank table's r×d factor at ``<name>.proj``; version 2 at ``<name>.B``."""
    renames: dict[str, str] = {}
    tables = dict(header.tables)
    for name, e in header.tables.items():
        if e.kind == "quantized" and e.base == "lowrank" and e.factors["B"].key != table_key(name, "B"):
            old = e.factors["B"].key
            renames[old] = table_key(name, "B")
            tables[name] = dataclasses.replace(e, factors={**e.factors, "B": dataclasses.replace(e.factors["B"], key=renames[old])})
    aliases = {}
    for alias, key in header.aliases.items():  # an aliased module's key moves with its table's
        if key in renames and alias.endswith(".proj"):
            alias = alias[: -len("proj")] + "B"
        aliases[alias] = renames.get(key, key)
    return dataclasses.replace(header, tables=tables, aliases=aliases, key_renames=renames)


__all__ = ["META_KEY", "SCHEMA_VERSION", "KINDS", "QuantSpec", "Factor", "HashSpec", "StageRecord", "TableEntry",
           "CheckpointHeader", "table_key"]
