"""The tables of TorchRec ``EmbeddingBagCollection`` modules, for the stage registry, checkpoints and loading.

This is how ``mc.wrap`` / ``mc.collapse`` / ``mc.save_checkpoint`` / ``mc.load_model_state`` see TorchRec
models. It never imports torchrec: a model can hold an EBC only once torchrec is imported, so every
function returns at once (no EBC tables) while torchrec is not in ``sys.modules``, and imports
:mod:`.torchrec_model` only when it is.

**Names.** Table ``t`` of the (MLET-)EBC at module path ``p`` is named ``p.embedding_bags.t`` — the path
of its ``nn.EmbeddingBag`` in the plain EBC — before and after wrapping, so ``target_modules=["t"]``
selects it by suffix as for ``nn.Embedding``, and its collapsed key ``<name>.weight`` is the original
EBC's key. An MLET table's factors keep the MLET-EBC's keys, recorded in its checkpoint entry:
``p.inner.embedding_bags.t.weight`` (n×k) and ``p.projs.t`` (d×k); a table an MLET-EBC leaves single-layer
is stored at ``p.inner.embedding_bags.t.weight`` (n×d) and moves to ``<name>.weight`` on collapse (files
too). Entries carry ``options["torchrec"] = {"table", "feature_names", "is_weighted"}``, so a checkpoint
can be exported to TorchRec's quantized EBC with no model code.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Optional

from torch import nn

from ..errors import CheckpointError, ConfigError, TargetingError
from ..layers._base import module_options
from ..safetensors_io import dtype_name
from ..schema import Factor, StageRecord, TableEntry
from ..table_modules import set_stage_chain, stage_chain
from ..targeting import lookup_by_name

#: The key of an entry's ``options`` that holds its TorchRec facts.
TORCHREC_OPTION = "torchrec"
REFUSAL = ("is in a TorchRec EmbeddingBagCollection, which holds float tables only: apply the stage to its saved "
           "checkpoint (compress_checkpoint) and serve quantized tables with to_torchrec_quant")


@dataclass
class EBCTable:
    """One table of a (MLET-)EBC in a model.

    Attributes:
        name: ``<ebc path>.embedding_bags.<table>`` (see the module docstring). ebc_name: the EBC's path.
        table: the TorchRec table name. ebc: the (MLET-)EBC module. inner_dim: k of an MLET table, else None.
        in_mlet_ebc: the EBC is an ``MLETEmbeddingBagCollection``. rows, dim: n and d.
    """

    name: str
    ebc_name: str
    table: str
    ebc: nn.Module
    inner_dim: Optional[int]
    in_mlet_ebc: bool
    rows: int
    dim: int

    @property
    def kind(self) -> str:
        """``mlet`` or ``plain``."""
        return "mlet" if self.inner_dim else "plain"

    @property
    def prefix(self) -> str:
        """The EBC's state-dict prefix (``"sparse_arch.embedding_bag_collection."``)."""
        return f"{self.ebc_name}." if self.ebc_name else ""

    @property
    def bag(self) -> nn.Module:
        """The ``nn.EmbeddingBag`` holding the stored rows (n×k for MLET, n×d otherwise)."""
        return (self.ebc.inner if self.in_mlet_ebc else self.ebc).embedding_bags[self.table]

    @property
    def weight_key(self) -> str:
        """State-dict key of the stored rows."""
        return f"{self.prefix}{'inner.' if self.in_mlet_ebc else ''}embedding_bags.{self.table}.weight"


def find_ebc_tables(model: nn.Module) -> list[EBCTable]:
    """Every table of every (MLET-)EBC in ``model``; ``[]`` without importing anything when torchrec is not loaded."""
    if sys.modules.get("torchrec") is None:  # not imported (or blocked): no model can hold an EBC
        return []
    from . import torchrec_model  # torchrec is loaded: the integration imports nothing new

    out = []
    for ebc_name, ebc in torchrec_model.find_ebcs(model).items():
        mlet = isinstance(ebc, torchrec_model.MLETEmbeddingBagCollection)
        prefix = f"{ebc_name}." if ebc_name else ""
        for c in ebc.embedding_bag_configs():
            out.append(EBCTable(f"{prefix}embedding_bags.{c.name}", ebc_name, c.name, ebc,
                                ebc.inner_dims[c.name] if mlet else None, mlet, int(c.num_embeddings),
                                int(c.embedding_dim)))
    return out


def owned_module_ids(tables: list[EBCTable]) -> set[int]:
    """Ids of every module inside the tables' EBCs (their ``nn.EmbeddingBag`` s are not tables of their own)."""
    return {id(m) for t in tables for m in t.ebc.modules()}


def table_entry(t: EBCTable) -> TableEntry:
    """The checkpoint entry of one EBC table (keys relative to the model the table was found in)."""
    bag = t.bag
    opts = {**module_options(bag), TORCHREC_OPTION: {
        "table": t.table, "feature_names": list(_config(t).feature_names), "is_weighted": bool(t.ebc.is_weighted())}}
    w = bag.weight
    if t.kind == "mlet":
        proj = t.ebc.projs[t.table]
        factors = {"table": Factor(t.weight_key, (t.rows, t.inner_dim), dtype_name(w.dtype)),
                   "proj": Factor(f"{t.prefix}projs.{t.table}", (t.dim, t.inner_dim), dtype_name(proj.dtype))}
        stages = stage_chain(bag) or (StageRecord.make("mlet", inner_dim=t.inner_dim),)
    else:
        factors = {"weight": Factor(t.weight_key, (t.rows, t.dim), dtype_name(w.dtype))}
        stages = stage_chain(bag)
    return TableEntry(t.name, t.kind, t.rows, t.dim, factors, module="embedding_bag", options=opts, stages=stages)


def moves_on_collapse(entry: TableEntry) -> bool:
    """A single-layer table of an MLET-EBC in a checkpoint: collapse moves it to ``<name>.weight``."""
    return (entry.kind == "plain" and TORCHREC_OPTION in entry.options
            and entry.factors["weight"].key != f"{entry.name}.weight")


def _config(t: EBCTable) -> Any:
    return next(c for c in t.ebc.embedding_bag_configs() if c.name == t.table)


def _by_ebc(tables: list[EBCTable]) -> dict[str, list[EBCTable]]:
    groups: dict[str, list[EBCTable]] = {}
    for t in tables:
        groups.setdefault(t.ebc_name, []).append(t)
    return groups


def _replace(model: nn.Module, ebc_name: str, new: nn.Module, verb: str) -> None:
    from . import torchrec_model

    if not ebc_name:
        raise TargetingError(f"the model itself is a TorchRec EmbeddingBagCollection; {verb} a model that contains it "
                             f"(or use mlet_compress.integrations.torchrec.{verb}_ebc, which returns the new module)")
    new.train(model.get_submodule(ebc_name).training)
    torchrec_model.replace_ebc(model, ebc_name, new)


def wrap_tables(model: nn.Module, tables: list[EBCTable], cfg: Any, first_index: int = 0) -> dict[str, dict]:
    """Replace the EBCs holding ``tables`` with MLET-EBCs in which exactly those tables are MLET (in place).

    Args:
        model: the model. tables: the selected tables (of plain EBCs). cfg: the :class:`~mlet_compress.MLETConfig`
            (``inner_dim`` / ``inner_dims`` by table name or suffix, ``init_std``, ``table_init`` "match" or
            "normal", ``preserve_function``, ``seed``; ``sparse`` does not apply: FBGEMM updates rows sparsely).
        first_index: seed offset (``cfg.seed + first_index + i`` for the i-th EBC).

    Returns:
        ``{name: {"aliases", "num_embeddings", "embedding_dim", "inner_dim"}}`` of the wrapped tables.

    Raises:
        ConfigError: ``table_init`` other than "match"/"normal". TargetingError: the model is the EBC itself.
    """
    if not tables:
        return {}
    from . import torchrec_ebc

    if cfg.table_init not in ("match", "normal"):
        raise ConfigError(f"table_init={cfg.table_init!r} is not available for TorchRec tables; use 'match' or 'normal'",
                          option="table_init", value="match")
    record: dict[str, dict] = {}
    for i, (ebc_name, group) in enumerate(_by_ebc(tables).items()):
        ebc = group[0].ebc
        k = {t.table: int(lookup_by_name(cfg.inner_dims, t.name) or cfg.inner_dim) for t in group}
        seed = None if cfg.seed is None else cfg.seed + first_index + i
        new = torchrec_ebc.wrap_ebc(ebc, cfg.inner_dim, inner_dims=k, init_std=cfg.init_std, seed=seed,
                                    preserve_function=cfg.preserve_function, select=lambda table: table in k,
                                    table_std=1.0 if cfg.table_init == "normal" else None)
        for c in ebc.embedding_bag_configs():
            added = (StageRecord.make("mlet", inner_dim=k[c.name]),) if c.name in k else ()
            set_stage_chain(new.inner.embedding_bags[c.name], stage_chain(ebc.embedding_bags[c.name]) + added)
        _replace(model, ebc_name, new, "wrap")
        record.update({t.name: {"aliases": [], "num_embeddings": t.rows, "embedding_dim": t.dim,
                                "inner_dim": k[t.table]} for t in group})
    return record


def collapse_tables(model: nn.Module, tables: list[EBCTable], check: bool = True) -> dict[str, dict]:
    """Replace the MLET-EBCs holding ``tables`` with plain EBCs of the product tables (in place).

    An MLET-EBC is collapsed as a whole, so all of its MLET tables must be selected.

    Returns:
        The report rows ``{name: {"rows", "dim", "stage", "inner_dim", "bytes_before", "bytes_after"}}``.

    Raises:
        TargetingError: only some MLET tables of an MLET-EBC selected, or the model is the EBC itself.
        NumericalError: the collapsed lookups differ from the MLET ones (``check``).
    """
    if not tables:
        return {}
    from . import torchrec_ebc

    report: dict[str, dict] = {}
    for ebc_name, group in _by_ebc(tables).items():
        ebc = group[0].ebc
        missing = sorted(set(t for t, k in ebc.inner_dims.items() if k) - {t.table for t in group})
        if missing:
            raise TargetingError(f"collapse turns the whole MLETEmbeddingBagCollection {ebc_name!r} back into an EBC; "
                                 f"its MLET tables {missing} are not selected (select all of its tables or none)")
        before = {t.name: _nbytes(t.bag.weight) + (_nbytes(ebc.projs[t.table]) if t.inner_dim else 0) for t in group}
        new = torchrec_ebc.collapse_ebc(ebc, check=check)
        for c in ebc.embedding_bag_configs():
            added = (StageRecord.make("collapse"),) if ebc.inner_dims[c.name] else ()
            set_stage_chain(new.embedding_bags[c.name], stage_chain(ebc.inner.embedding_bags[c.name]) + added)
        _replace(model, ebc_name, new, "collapse")
        for t in group:
            report[t.name] = {"rows": t.rows, "dim": t.dim, "stage": "collapse", "inner_dim": t.inner_dim,
                              "bytes_before": before[t.name], "bytes_after": _nbytes(new.embedding_bags[t.table].weight)}
    return report


def _nbytes(t: Any) -> int:
    return t.numel() * t.element_size()


def prepare_load(model: nn.Module, entries: dict[str, TableEntry]) -> set[str]:
    """Make ``model``'s EBCs fit a checkpoint's entries before a strict ``load_state_dict``; returns the entries handled.

    Plain (collapsed) entries load into plain EBCs as they are; MLET entries load into an MLET-EBC with the
    same k, and a plain EBC holding them is wrapped first (k from the entries). Stage chains are restored.

    Raises:
        CheckpointError: a low-rank, quantized or hashed entry (TorchRec's float EBC cannot hold it: serve
            quantized tables with ``to_torchrec_quant``), a plain entry for a table the model trains as MLET,
            or an MLET entry whose k differs from the model's.
    """
    tables = {t.name: t for t in find_ebc_tables(model)}
    handled = [name for name in entries if name in tables]
    to_wrap: dict[str, dict[str, int]] = {}
    for name in handled:
        e, t = entries[name], tables[name]
        if e.kind not in ("plain", "mlet") or e.hash is not None:
            raise CheckpointError(f"checkpoint table {name!r} is {e.display_kind()}; a TorchRec EmbeddingBagCollection "
                                  "holds float tables only: serve quantized tables with to_torchrec_quant, or read "
                                  "dense ones with reconstruct()")
        if e.kind == "plain" and t.kind == "mlet":
            raise CheckpointError(f"checkpoint table {name!r} is a plain n×d table but the model trains it as MLET "
                                  "factors; load it into the unwrapped model, or collapse(model) first")
        if e.kind == "mlet" and t.kind == "mlet" and e.inner_dim != t.inner_dim:
            raise CheckpointError(f"checkpoint table {name!r} has k={e.inner_dim}, the model's MLET table k={t.inner_dim}")
        if e.kind == "mlet" and t.kind == "plain":
            if t.in_mlet_ebc:
                raise CheckpointError(f"checkpoint table {name!r} holds MLET factors but the model's "
                                      "MLETEmbeddingBagCollection keeps it single-layer; wrap the original model instead")
            to_wrap.setdefault(t.ebc_name, {})[t.table] = int(e.inner_dim)
    if to_wrap:
        from . import torchrec_ebc

        for ebc_name, ks in to_wrap.items():
            ebc = next(t.ebc for t in tables.values() if t.ebc_name == ebc_name)
            new = torchrec_ebc.wrap_ebc(ebc, max(ks.values()), inner_dims=ks, select=lambda table: table in ks)
            _replace(model, ebc_name, new, "wrap")
        tables = {t.name: t for t in find_ebc_tables(model)}
    for name in handled:
        set_stage_chain(tables[name].bag, entries[name].stages)
    return set(handled)


__all__ = ["TORCHREC_OPTION", "REFUSAL", "EBCTable", "find_ebc_tables", "owned_module_ids", "table_entry",
           "moves_on_collapse", "wrap_tables", "collapse_tables", "prepare_load"]
