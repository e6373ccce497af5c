"""Apply a stage config to a model in place: ``compress_(model, config, filter_fn)`` (torchao's shape).

Each config type has a private handler that turns one embedding module into its compressed twin:

- :class:`HashConfig` → :class:`HashedEmbedding` / :class:`HashedEmbeddingBag` (``idx % m``, training time);
- :class:`LowRankConfig` → :class:`LowRankEmbedding` / :class:`LowRankEmbeddingBag` (truncated SVD);
- :class:`QuantConfig` → :class:`QuantizedEmbedding` / :class:`QuantizedEmbeddingBag` (grid-searched scale);
- :class:`MLETConfig` → :func:`mlet_compress.wrap`.

Valid orders: hash → MLET → collapse → SVD → quantize (any stage may be skipped). A stage applied to a
table in a state it does not compose with is refused with the reason (e.g. SVD of uncollapsed MLET
factors: call :func:`collapse` first).
"""

from __future__ import annotations

from typing import Callable, Optional

from torch import nn

from .config import HashConfig, LowRankConfig, MLETConfig, QuantConfig
from .errors import ConfigError, TargetingError
from .layers.hashed import HashedEmbedding, HashedEmbeddingBag
from .layers.lowrank import LowRankEmbedding, LowRankEmbeddingBag, to_low_rank
from .layers.mlet import MLETEmbedding, MLETEmbeddingBag
from .layers.quantized import QuantizedEmbedding, QuantizedEmbeddingBag, to_quantized
from .targeting import Found, describe_available, find_modules, replace_module, select

FilterFn = Callable[[str, nn.Module], bool]
TABLE_KINDS = (
    nn.Embedding, nn.EmbeddingBag, MLETEmbedding, MLETEmbeddingBag,
    LowRankEmbedding, LowRankEmbeddingBag, QuantizedEmbedding, QuantizedEmbeddingBag,
)
MLET_KINDS = (MLETEmbedding, MLETEmbeddingBag)
LOWRANK_KINDS = (LowRankEmbedding, LowRankEmbeddingBag)
QUANT_KINDS = (QuantizedEmbedding, QuantizedEmbeddingBag)
HASHED_KINDS = (HashedEmbedding, HashedEmbeddingBag)


def _chain(mod: nn.Module) -> list[dict]:
    return list(getattr(mod, "stage_chain", []))


def _state(mod: nn.Module) -> str:
    if isinstance(mod, MLET_KINDS):
        return "mlet"
    if isinstance(mod, LOWRANK_KINDS):
        return "lowrank"
    if isinstance(mod, QUANT_KINDS):
        return "quantized"
    return "plain"


def _refuse(name: str, mod: nn.Module, stage: str) -> None:
    state = _state(mod)
    reasons = {
        ("svd", "mlet"): "holds uncollapsed MLET factors; collapse(model) first (SVD applies to the trained n×d table)",
        ("svd", "lowrank"): "is already low-rank; apply SVD to the original table",
        ("svd", "quantized"): "is quantized; apply SVD before quantizing (MLET → collapse → SVD → quantize)",
        ("quantize", "mlet"): "holds uncollapsed MLET factors; collapse(model) first",
        ("quantize", "quantized"): "is already quantized",
        ("hash", "mlet"): "is already MLET-wrapped; hash before wrap (hashing is a training-time stage)",
        ("hash", "lowrank"): "is low-rank; hashing shrinks the index space and must be applied before training",
        ("hash", "quantized"): "is quantized; hashing must be applied before training",
    }
    reason = reasons.get((stage, state))
    if reason is None and stage == "hash" and isinstance(mod, HASHED_KINDS):
        reason = "is already hashed"
    if reason is not None:
        raise TargetingError(f"cannot apply {stage} to {name!r}: the table {reason}")


def _hash_one(name: str, mod: nn.Module, cfg: HashConfig) -> Optional[nn.Module]:
    _refuse(name, mod, "hash")
    n, d = mod.weight.shape
    m = cfg.buckets_for(n)
    if m >= n:
        return None
    if mod.padding_idx is not None and mod.padding_idx >= m:
        raise ConfigError(f"cannot hash {name!r}: padding_idx={mod.padding_idx} does not fit in {m} buckets")
    kw = dict(original_num_embeddings=n, padding_idx=mod.padding_idx, scale_grad_by_freq=mod.scale_grad_by_freq,
              sparse=mod.sparse, max_norm=mod.max_norm, norm_type=mod.norm_type, device=mod.weight.device,
              dtype=mod.weight.dtype, _weight=mod.weight.detach()[:m].clone())
    if isinstance(mod, nn.EmbeddingBag):
        new = HashedEmbeddingBag(m, d, mode=mod.mode, include_last_offset=mod.include_last_offset, **kw)
    else:
        new = HashedEmbedding(m, d, **kw)
    new.stage_chain = _chain(mod) + [{"stage": "hash", "num_buckets": m, "original_num_embeddings": n}]
    return new


def _svd_one(name: str, mod: nn.Module, cfg: LowRankConfig) -> nn.Module:
    _refuse(name, mod, "svd")
    new = to_low_rank(mod, rank=cfg.rank, energy=cfg.energy, chunk_rows=cfg.chunk_rows)
    stage = {"stage": "svd", "rank": new.rank, "rel_error": new.rel_error}
    if cfg.energy is not None:
        stage["energy"] = cfg.energy
    new.stage_chain = _chain(mod) + [stage]
    return new


def _quant_one(name: str, mod: nn.Module, cfg: QuantConfig) -> nn.Module:
    _refuse(name, mod, "quantize")
    new = to_quantized(mod, bits=cfg.bits, grid=cfg.grid, granularity=cfg.granularity, chunk_rows=cfg.chunk_rows)
    new.stage_chain = _chain(mod) + [{
        "stage": "quantize", "bits": cfg.bits, "granularity": cfg.granularity, "grid": cfg.grid,
        "l2_error": new.l2_error, "sqnr_db": new.sqnr_db,
    }]
    return new


_HANDLERS: dict[type, tuple[str, Callable]] = {
    HashConfig: ("hash", _hash_one),
    LowRankConfig: ("svd", _svd_one),
    QuantConfig: ("quantize", _quant_one),
}


def compress_(
    model: nn.Module,
    config,
    filter_fn: Optional[FilterFn] = None,
) -> dict[str, dict]:
    """Apply one stage to the model's embedding tables, in place.

    Args:
        model: any ``nn.Module`` holding embedding tables (plain, hashed, collapsed, low-rank...).
        config: :class:`HashConfig`, :class:`LowRankConfig`, :class:`QuantConfig` or :class:`MLETConfig`.
        filter_fn: optional ``filter_fn(name, module) -> bool`` on top of the config's targets.

    Returns:
        ``{module name: {"stage", "rows", "dim", ...}}`` for every table changed.

    Raises:
        TargetingError: nothing matched, or a matched table is in a state the stage does not compose with.
        ConfigError: bad stage parameters for a table (e.g. rank > d).

    Example:
        >>> m = nn.ModuleDict({"t": nn.Embedding(100, 8)})
        >>> compress_(m, QuantConfig(bits=8))["t"]["stage"]
        'quantize'
    """
    if isinstance(config, MLETConfig):
        from .wrap import wrap

        wrap(model, config)
        return {n: {"stage": "mlet", **info} for n, info in model.mlet_wrapped.items()}
    try:
        stage, handler = _HANDLERS[type(config)]
    except KeyError:
        raise ConfigError(f"compress_: unsupported config {type(config).__name__}; use HashConfig, LowRankConfig, QuantConfig or MLETConfig") from None
    found = find_modules(model, TABLE_KINDS)
    min_dim = getattr(config, "min_embedding_dim", 2)

    def keep(f: Found) -> bool:
        if f.module.embedding_dim < min_dim:
            return False
        if stage == "hash" and f.module.num_embeddings < config.min_rows:
            return False
        return filter_fn is None or any(filter_fn(n, f.module) for n in f.names)

    chosen = select(found, config.target_modules, config.exclude_modules, extra=keep)
    if not chosen:
        raise TargetingError(
            f"{stage}: no embedding table matched target_modules={config.target_modules!r} "
            f"(exclude_modules={config.exclude_modules!r}, min_embedding_dim={min_dim}); " + describe_available(found)
        )
    report: dict[str, dict] = {}
    for f in chosen:
        new = handler(f.name, f.module, config)
        if new is None:
            continue
        new.train(f.module.training)
        replace_module(model, f.names, new)
        report[f.name] = {"rows": new.num_embeddings, "dim": new.embedding_dim, **new.stage_chain[-1]}
    return report
