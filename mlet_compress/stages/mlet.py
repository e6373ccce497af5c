"""The MLET stages: ``wrap`` a model's tables into n×k table @ k→d projection factors (training time), and
``collapse`` them back into one n×d table (models and checkpoints; paper Fig. 1a).

- ``MLETConfig``: op :func:`~mlet_compress.layers.mlet.MLETEmbedding` factors; module handler ``_wrap_one``;
  no file plan (MLET is a training-time stage).
- ``CollapseConfig``: op :func:`~mlet_compress.ops.collapse.collapse_rows`; module handler
  :func:`collapsed_module` (restores the replaced module's class and options; ``collapse(model)`` in the
  package runs it on every MLET module); file plan
  :func:`_collapse_plan` (streams row chunks of ``table @ proj.T``).

Tables of TorchRec ``EmbeddingBagCollection`` s take the same verbs through
:mod:`mlet_compress.integrations.ebc_tables` (``to_ebc``): wrap swaps each EBC holding selected tables for an
``MLETEmbeddingBagCollection``, collapse swaps it back for a plain EBC of the product tables; in files a
TorchRec MLET entry collapses like any other and its single-layer siblings move to the original EBC key.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch
from torch import nn

from ..config import CollapseConfig, MLETConfig
from ..errors import ConfigError, NumericalError, TargetingError
from ..integrations import ebc_tables
from ..layers._base import module_options, refuse_max_norm
from ..layers.hashed import HashedEmbedding, HashedEmbeddingBag
from ..layers.mlet import MLETEmbedding, MLETEmbeddingBag, ModuleOrigin
from ..ops.collapse import check_finite, collapse_rows
from ..schema import Factor, StageRecord, TableEntry, table_key
from ..safetensors_io import dtype_name
from ..streaming import OutTensor, RowReader, TablePlan, copy_chunks
from ..table_modules import MLET_KINDS, PLAIN_KINDS, set_stage_chain, stage_chain
from ..targeting import find_modules, lookup_by_name, replace_module
from .base import Candidate, OrderRule, Stage, model_candidates, register, select_tables

EMBEDDING_KINDS = PLAIN_KINDS


# ------------------------------------------------------------------------------------------------ wrap
def _refuse_unsupported(name: str, mod: nn.Module) -> None:
    refuse_max_norm(mod, f"module {name!r}")
    if isinstance(mod, nn.EmbeddingBag) and mod.mode == "max":
        raise TargetingError(f"module {name!r}: mode='max' does not commute with the MLET projection; use 'sum'/'mean' "
                             "or leave this module out (exclude_modules)")
    if not mod.weight.is_floating_point():
        raise ConfigError(f"module {name!r} has a non-float weight ({mod.weight.dtype}); cannot wrap it")


def _table_std(w: torch.Tensor) -> float:
    """The std of the replaced table (``table_init="match"``), 1.0 when undefined."""
    with torch.no_grad():
        std = float(w.float().std()) if w.numel() > 1 else 1.0
    return std if std > 0 and std == std else 1.0


def _wrap_one(name: str, mod: nn.Module, k: int, cfg: MLETConfig) -> nn.Module:
    """The MLET twin of one plain table (its options and origin recorded for :func:`collapse`)."""
    w = mod.weight
    n, d = w.shape
    opts = module_options(mod)
    table_init, table_std = ("normal", _table_std(w)) if cfg.table_init == "match" else (cfg.table_init, 1.0)
    common = dict(
        num_buckets=getattr(mod, "num_buckets", None), init_std=cfg.init_std, table_init=table_init,
        table_std=table_std, dtype=w.dtype, device=w.device, scale_grad_by_freq=opts["scale_grad_by_freq"],
        sparse=opts["sparse"] if cfg.sparse is None else cfg.sparse, padding_idx=mod.padding_idx,
    )
    if isinstance(mod, nn.EmbeddingBag):
        new = MLETEmbeddingBag(n, d, k, mode=mod.mode, include_last_offset=mod.include_last_offset, **common)
    else:
        new = MLETEmbedding(n, d, k, **common)
    if cfg.preserve_function:
        new.init_from_weight(w.detach(), cfg.init_std)
    new.origin = ModuleOrigin(type(mod), w.dtype, opts, getattr(mod, "original_num_embeddings", None))
    return set_stage_chain(new, stage_chain(mod) + (StageRecord.make("mlet", inner_dim=k),))


def _inner_dim(names: list[str], cfg: MLETConfig) -> int:
    for n in names:
        k = lookup_by_name(cfg.inner_dims, n)
        if k is not None:
            return int(k)
    return int(cfg.inner_dim)


def wrap(model: nn.Module, config: Optional[MLETConfig] = None) -> nn.Module:
    """Replace the model's embedding tables by MLET factors (in place) and return the model.

    Args:
        model: any ``nn.Module``; ``nn.Embedding`` / ``nn.EmbeddingBag`` modules anywhere inside it
            (nested, in ``ModuleDict``s, aliased) are candidates, and so are the tables of TorchRec
            ``EmbeddingBagCollection`` s, named ``<ebc path>.embedding_bags.<table>`` (each EBC holding a
            selected table becomes an ``MLETEmbeddingBagCollection``; see :mod:`~mlet_compress.integrations.ebc_tables`).
        config: :class:`MLETConfig` (targets, inner dims, init). Default: ``MLETConfig()``.

    Returns:
        The same model object. ``model.mlet_wrapped`` maps each wrapped module name to
        ``{"aliases", "num_embeddings", "embedding_dim", "inner_dim"}``.

    Raises:
        TargetingError: nothing matched (the message lists the embedding tables present), the model
            is already wrapped, or a matched module uses ``mode='max'`` / ``max_norm``.

    Example:
        >>> model = nn.Sequential(nn.Embedding(100, 8))
        >>> wrap(model, MLETConfig(inner_dim=32)).mlet_wrapped["0"]["inner_dim"]
        32
    """
    cfg = config or MLETConfig()
    if find_modules(model, MLET_KINDS) or any(t.in_mlet_ebc for t in ebc_tables.find_ebc_tables(model)):
        raise TargetingError("model is already MLET-wrapped; collapse(model) first or wrap the original model")
    candidates = select_tables(STAGE, model_candidates(model), cfg, in_file=False)[0]
    chosen = [c.obj for c in candidates if not c.ebc]
    for f in chosen:
        _refuse_unsupported(f.name, f.module)
    record: dict[str, dict] = {}
    for i, f in enumerate(chosen):
        k = _inner_dim(f.names, cfg)
        with torch.random.fork_rng(devices=[], enabled=cfg.seed is not None):
            if cfg.seed is not None:
                torch.manual_seed(cfg.seed + i)
            new = _wrap_one(f.name, f.module, k, cfg)
        replace_module(model, f.names, new)
        record[f.name] = {"aliases": f.names[1:], "num_embeddings": new.num_embeddings,
                          "embedding_dim": new.embedding_dim, "inner_dim": k}
    record.update(ebc_tables.wrap_tables(model, [c.obj for c in candidates if c.ebc], cfg, first_index=len(chosen)))
    model.mlet_wrapped = record  # type: ignore[attr-defined]
    if any(getattr(f.module, "sparse", False) for f in chosen):
        explicit_sparse_checks()
    return model


def explicit_sparse_checks() -> None:
    """Make torch's default (no sparse-tensor invariant checks) explicit, unless checks were turned on.

    The first optimizer step on a sparse gradient otherwise prints torch's "Sparse invariant checks are
    implicitly disabled ... To silence this warning, explicitly opt in or out" once per process: noise the
    user cannot act on. Behaviour is unchanged: checks stay off, or on if the user enabled them.
    """
    checks = torch.sparse.check_sparse_tensor_invariants
    if not checks.is_enabled():
        checks.disable()


# ------------------------------------------------------------------------------------------------ collapse
def collapsed_module(mod: nn.Module) -> nn.Module:
    """The plain module (the replaced class, or a hashed twin) whose table is ``table @ proj.T``."""
    origin: Optional[ModuleOrigin] = mod.origin
    opts = origin.options if origin is not None else {}
    weight = mod.effective_weight(origin.dtype if origin is not None else mod.table.dtype)
    n, d = weight.shape
    is_bag = isinstance(mod, MLETEmbeddingBag)
    kwargs: dict[str, Any] = dict(
        padding_idx=mod.padding_idx, scale_grad_by_freq=mod.scale_grad_by_freq, sparse=opts.get("sparse", mod.sparse),
        max_norm=opts.get("max_norm"), norm_type=opts.get("norm_type", 2.0), _weight=weight, device=weight.device,
        dtype=weight.dtype,
    )
    if is_bag:
        kwargs.update(mode=mod.mode, include_last_offset=mod.include_last_offset)
    cls = origin.cls if origin is not None else None
    if mod.num_buckets is not None:
        cls = HashedEmbeddingBag if is_bag else HashedEmbedding
        kwargs["original_num_embeddings"] = (origin.original_num_embeddings if origin is not None else None) or n
    elif cls is None or not issubclass(cls, EMBEDDING_KINDS) or issubclass(cls, (HashedEmbedding, HashedEmbeddingBag)):
        cls = nn.EmbeddingBag if is_bag else nn.Embedding
    return set_stage_chain(cls(n, d, **kwargs), stage_chain(mod) + (StageRecord.make("collapse"),))


def _check_equivalent(name: str, mlet: nn.Module, plain: nn.Module, probe_rows: int) -> None:
    n = mlet.num_embeddings
    with torch.no_grad():
        w = plain.weight
        check_finite(w, f"collapsed table {name!r}")
        idx = torch.randperm(n)[:probe_rows].to(w.device)
        ref = collapse_rows(mlet.table[idx], mlet.proj, torch.float64)
        got = w[idx].double()
        tol = 1e-5 if w.dtype in (torch.float32, torch.float64) else 2e-2
        err = float((got - ref).abs().max() / ref.abs().max().clamp_min(1.0)) if idx.numel() else 0.0
        if err > tol:
            raise NumericalError(f"collapse check failed for {name!r}: max relative difference {err:.3g} > {tol} "
                                 f"on {len(idx)} probe rows")


def _collapse_one(name: str, mod: nn.Module, cfg: CollapseConfig) -> tuple[nn.Module, StageRecord]:
    plain = collapsed_module(mod)
    if cfg.check:
        _check_equivalent(name, mod, plain, cfg.probe_rows)
    return plain, StageRecord.make("collapse")


def _move_plan(entry: TableEntry, reader: RowReader) -> tuple[TablePlan, dict]:
    """A single-layer table of a TorchRec MLET-EBC: its rows move to ``<name>.weight``, the original EBC's key."""
    old, new_key = entry.factors["weight"].key, table_key(entry.name, "weight")
    info = reader.info(old)
    new = dataclasses.replace(entry, factors={"weight": dataclasses.replace(entry.factors["weight"], key=new_key)})
    out = OutTensor(new_key, info.dtype, tuple(info.shape), copy_chunks(reader, old))
    return TablePlan([old], [out], new), {"rows": entry.num_embeddings, "dim": entry.embedding_dim, "stage": "collapse",
                                          "moved_from": old}


def _collapse_plan(entry: TableEntry, reader: RowReader, cfg: CollapseConfig) -> tuple[TablePlan, dict]:
    if entry.kind == "plain":
        return _move_plan(entry, reader)
    name = entry.name
    tkey, pkey = entry.factors["table"].key, entry.factors["proj"].key
    proj = reader.full(pkey)
    check_finite(proj, f"table {name!r}: projection {pkey!r}")
    n, k = reader.info(tkey).shape
    d, out_dtype = int(proj.shape[0]), reader.info(tkey).dtype
    out_key = table_key(name, "weight")

    def chunks():
        for a, rows in zip(range(0, max(n, 1), cfg.chunk_rows), reader.chunks(tkey, cfg.chunk_rows)):
            out = collapse_rows(rows, proj, out_dtype)
            # NaN/Inf in a table row always reaches its output row (x*0 is NaN for x = ±Inf), so checking
            # the (k/d times smaller) output covers the input too.
            check_finite(out, f"table {name!r}: rows {a}..{a + rows.shape[0] - 1} of {tkey!r} (collapsed)")
            yield out

    new = entry.with_stage(StageRecord.make("collapse"), kind="plain", embedding_dim=d,
                           factors={"weight": Factor(out_key, (int(n), d), dtype_name(out_dtype))})
    stats = {"rows": int(n), "dim": d, "inner_dim": int(k), "stage": "collapse"}
    return TablePlan([tkey, pkey], [OutTensor(out_key, out_dtype, (int(n), d), chunks)], new), stats


def _not_mlet(c: Candidate, cfg: Any) -> Optional[str]:
    if c.kind == "mlet":
        return None
    if c.ebc and c.obj.in_mlet_ebc:  # single-layer in an MLET-EBC: collapse gives it the original EBC's key
        return None
    if isinstance(c.obj, TableEntry) and ebc_tables.moves_on_collapse(c.obj):
        return None
    return f"holds no MLET factors (it is {c.kind}); nothing to collapse"


def _too_narrow(c: Candidate, cfg: MLETConfig) -> Optional[str]:
    return f"narrower than min_embedding_dim={cfg.min_embedding_dim}" if c.dim < cfg.min_embedding_dim else None


STAGE = register(Stage(
    name="mlet", config=MLETConfig, op=MLETEmbedding, to_module=lambda name, mod, cfg: None, skip_reason=_too_narrow,
    to_ebc=ebc_tables.wrap_tables,
    order=OrderRule(refuse={
        "mlet": "is already MLET-wrapped; collapse(model) first",
        "lowrank": "is low-rank; MLET trains a table before compression (wrap the original model)",
        "quantized": "is quantized; MLET trains a table before compression (wrap the original model)",
    }),
    file_refusal="MLET is a training-time stage: wrap the model, train it, then save or collapse it",
))
register(Stage(
    name="collapse", config=CollapseConfig, op=collapse_rows, to_module=_collapse_one, plan_file=_collapse_plan,
    order=OrderRule(), skip_reason=_not_mlet, suffix=lambda cfg: "collapsed",
    to_ebc=lambda model, tables, cfg: ebc_tables.collapse_tables(model, tables, cfg.check),
))

__all__ = ["wrap", "collapsed_module"]
