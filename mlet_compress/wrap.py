"""``wrap`` a model's embedding tables into MLET factors and ``collapse`` them back (paper Fig. 1a)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .config import MLETConfig
from .errors import ConfigError, NumericalError, TargetingError
from .layers._base import module_options
from .layers.hashed import HashedEmbedding, HashedEmbeddingBag
from .layers.mlet import MLETEmbedding, MLETEmbeddingBag
from .ops.collapse import check_finite
from .targeting import describe_available, find_modules, lookup_by_name, replace_module, select

EMBEDDING_KINDS = (nn.Embedding, nn.EmbeddingBag)
MLET_KINDS = (MLETEmbedding, MLETEmbeddingBag)


def _refuse_unsupported(name: str, mod: nn.Module) -> None:
    if getattr(mod, "max_norm", None) is not None:
        raise TargetingError(
            f"module {name!r}: max_norm={mod.max_norm} renormalises looked-up rows and does not commute with "
            "the MLET projection; remove max_norm or exclude this module (exclude_modules)"
        )
    if isinstance(mod, nn.EmbeddingBag) and mod.mode == "max":
        raise TargetingError(
            f"module {name!r}: mode='max' does not commute with the MLET projection; use 'sum'/'mean' "
            "or exclude this module (exclude_modules)"
        )


def _make_mlet(name: str, mod: nn.Module, k: int, cfg: MLETConfig) -> nn.Module:
    w = mod.weight
    n, d = w.shape
    opts = module_options(mod)
    sparse = opts["sparse"] if cfg.sparse is None else cfg.sparse
    table_init, table_std = cfg.table_init, 1.0
    if table_init == "match":  # Gaussian with the replaced table's std: keeps the model's own init scale
        table_init = "normal"
        with torch.no_grad():
            table_std = float(w.float().std()) if w.numel() > 1 else 1.0
        if not table_std > 0 or table_std != table_std:
            table_std = 1.0
    common = dict(
        num_buckets=getattr(mod, "num_buckets", None), init_std=cfg.init_std, table_init=table_init,
        table_std=table_std, dtype=w.dtype, device=w.device, scale_grad_by_freq=opts["scale_grad_by_freq"],
        sparse=sparse, padding_idx=mod.padding_idx,
    )
    if isinstance(mod, nn.EmbeddingBag):
        new = MLETEmbeddingBag(n, d, k, mode=mod.mode, include_last_offset=mod.include_last_offset, **common)
    else:
        new = MLETEmbedding(n, d, k, **common)
    if cfg.preserve_function:
        new.init_from_weight(w.detach(), cfg.init_std)
    new.stage_chain = list(getattr(mod, "stage_chain", [])) + [{"stage": "mlet", "inner_dim": k}]
    # Remember the replaced module's class and options so collapse restores exactly that architecture.
    new._mlet_origin = {  # type: ignore[attr-defined]
        "cls": type(mod),
        "dtype": w.dtype,
        "options": opts,
        "original_num_embeddings": getattr(mod, "original_num_embeddings", None),
    }
    return new


def wrap(model: nn.Module, config: Optional[MLETConfig] = None) -> nn.Module:
    """Replace the model's embedding tables by MLET factors (in place) and return the model.

    Args:
        model: any ``nn.Module``; ``nn.Embedding`` / ``nn.EmbeddingBag`` modules anywhere inside it
            (nested, in ``ModuleDict``s, aliased) are candidates.
        config: :class:`MLETConfig` (targets, inner dims, init). Default: ``MLETConfig()``.

    Returns:
        The same model object. ``model.mlet_wrapped`` maps each wrapped module name to
        ``{"aliases", "num_embeddings", "embedding_dim", "inner_dim"}``.

    Raises:
        TargetingError: nothing matched (the message lists the embedding modules present), the model
            is already wrapped, or a matched module uses ``mode='max'`` / ``max_norm``.

    Example:
        >>> model = nn.Sequential(nn.Embedding(100, 8))
        >>> wrap(model, MLETConfig(inner_dim=32)).mlet_wrapped["0"]["inner_dim"]
        32
    """
    cfg = config or MLETConfig()
    if find_modules(model, MLET_KINDS):
        raise TargetingError("model is already MLET-wrapped; collapse(model) first or wrap the original model")
    found = find_modules(model, EMBEDDING_KINDS)
    chosen = select(
        found, cfg.target_modules, cfg.exclude_modules,
        extra=lambda f: f.module.weight.dim() == 2 and f.module.weight.shape[1] >= cfg.min_embedding_dim,
    )
    if not chosen:
        raise TargetingError(
            f"no embedding module matched target_modules={cfg.target_modules!r} "
            f"(exclude_modules={cfg.exclude_modules!r}, min_embedding_dim={cfg.min_embedding_dim}); "
            + describe_available(found)
        )
    for f in chosen:
        _refuse_unsupported(f.name, f.module)
        if not f.module.weight.is_floating_point():
            raise ConfigError(f"module {f.name!r} has a non-float weight ({f.module.weight.dtype}); cannot wrap")
    record: dict[str, dict] = {}
    for i, f in enumerate(chosen):
        k = lookup_by_name(cfg.inner_dims, f.name)
        for alias in f.names[1:]:
            k = k if k is not None else lookup_by_name(cfg.inner_dims, alias)
        k = int(k if k is not None else cfg.inner_dim)
        if cfg.seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed + i)
                new = _make_mlet(f.name, f.module, k, cfg)
        else:
            new = _make_mlet(f.name, f.module, k, cfg)
        replace_module(model, f.names, new)
        record[f.name] = {
            "aliases": f.names[1:],
            "num_embeddings": new.num_embeddings,
            "embedding_dim": new.embedding_dim,
            "inner_dim": k,
        }
    model.mlet_wrapped = record  # type: ignore[attr-defined]
    model.mlet_config = cfg  # type: ignore[attr-defined]
    return model


def collapsed_module(mod: nn.Module) -> nn.Module:
    """The plain module (``nn.Embedding``/``nn.EmbeddingBag`` or hashed twin) equal to an MLET module."""
    origin = getattr(mod, "_mlet_origin", None) or {}
    opts = origin.get("options", {})
    dtype = origin.get("dtype", mod.table.dtype)
    weight = mod.effective_weight(dtype)
    n, d = weight.shape
    is_bag = isinstance(mod, MLETEmbeddingBag)
    kwargs = dict(
        padding_idx=mod.padding_idx,
        scale_grad_by_freq=mod.scale_grad_by_freq,
        sparse=opts.get("sparse", mod.sparse),
        max_norm=opts.get("max_norm"),
        norm_type=opts.get("norm_type", 2.0),
        _weight=weight,
        device=weight.device,
        dtype=weight.dtype,
    )
    if is_bag:
        kwargs.update(mode=mod.mode, include_last_offset=mod.include_last_offset)
    cls = origin.get("cls")
    if mod.num_buckets is not None:
        cls = HashedEmbeddingBag if is_bag else HashedEmbedding
        kwargs["original_num_embeddings"] = origin.get("original_num_embeddings") or n
    elif cls is None or not issubclass(cls, EMBEDDING_KINDS) or cls in (HashedEmbedding, HashedEmbeddingBag):
        cls = nn.EmbeddingBag if is_bag else nn.Embedding
    plain = cls(n, d, **kwargs)
    plain.stage_chain = list(getattr(mod, "stage_chain", [])) + [{"stage": "collapse"}]
    return plain


def _check_equivalent(name: str, mlet: nn.Module, plain: nn.Module, probe_rows: int) -> None:
    n = mlet.num_embeddings
    with torch.no_grad():
        w = plain.weight
        check_finite(w, f"collapsed table {name!r}")
        idx = torch.randperm(n)[:probe_rows].to(w.device)
        ref = mlet.effective_weight(torch.float64)[idx] if n <= probe_rows else (
            mlet.table[idx].double() @ mlet.proj.double().T
        )
        got = w[idx].double()
        tol = 1e-5 if w.dtype in (torch.float32, torch.float64) else 2e-2
        scale = ref.abs().max().clamp_min(1.0)
        err = float((got - ref).abs().max() / scale)
        if err > tol:
            raise NumericalError(
                f"collapse check failed for {name!r}: max relative difference {err:.3g} > {tol} on {len(idx)} probe rows"
            )


def collapse(model: nn.Module, *, check: bool = True, probe_rows: int = 1024) -> nn.Module:
    """Replace every MLET module by a plain table holding ``table @ proj.T`` (in place); return the model.

    The collapsed model's ``state_dict()`` has exactly the keys, shapes and dtypes of the original
    unwrapped model, so it loads into the original model class with ``strict=True``.

    Args:
        model: a model returned by :func:`wrap` (or containing MLET modules).
        check: verify the collapsed lookup equals the MLET lookup on up to ``probe_rows`` random rows
            (fp64 reference) and refuse NaN/Inf.
        probe_rows: rows probed by the check.

    Raises:
        TargetingError: the model holds no MLET modules.
        NumericalError: NaN/Inf in a collapsed table, or the equivalence check failed.

    Example:
        >>> m = wrap(nn.Sequential(nn.Embedding(10, 4)), MLETConfig(inner_dim=8))
        >>> type(collapse(m)[0]).__name__
        'Embedding'
    """
    found = find_modules(model, MLET_KINDS)
    if not found:
        raise TargetingError("model has no MLET modules to collapse; did you call wrap(model, MLETConfig(...))?")
    for f in found:
        plain = collapsed_module(f.module)
        if check:
            _check_equivalent(f.name, f.module, plain, probe_rows)
        plain.train(f.module.training)
        replace_module(model, f.names, plain)
    for attr in ("mlet_wrapped", "mlet_config"):
        if hasattr(model, attr):
            delattr(model, attr)
    return model
