"""Shared pieces of the embedding layers: option validation, index hashing and generic bag pooling."""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, TargetingError
from ..ops.bags import bag_offsets

EMBEDDING_BAG_MODES = ("sum", "mean")


def check_mode(mode: str, where: str) -> None:
    """Refuse pooling modes that do not commute with a linear map (``max``)."""
    if mode not in EMBEDDING_BAG_MODES:
        raise ConfigError(
            f"{where}: mode={mode!r} is not supported; only 'sum' and 'mean' commute with the "
            "projection/factorisation (max pooling of projected rows != projection of max-pooled rows)"
        )


def pooled_lookup(
    rows_fn: Callable[[Tensor], Tensor],
    input: Tensor,
    offsets: Optional[Tensor],
    *,
    mode: str = "mean",
    per_sample_weights: Optional[Tensor] = None,
    include_last_offset: bool = False,
    padding_idx: Optional[int] = None,
) -> Tensor:
    """EmbeddingBag semantics over a table that is only available row by row.

    ``rows_fn(idx)`` returns the (already dense, float) rows for a 1-D tensor of *unique* indices.
    The rows are materialised once per unique index, then pooled with ``F.embedding_bag`` over the
    compact table, so sum/mean, ``per_sample_weights``, ``include_last_offset`` and ``padding_idx``
    (excluded from the bag, also from the mean's count) behave exactly as in torch.
    """
    flat, offsets = bag_offsets(input, offsets)
    uniq, inverse = torch.unique(flat, return_inverse=True)
    compact = rows_fn(uniq)
    compact_pad = None
    if padding_idx is not None:
        hit = (uniq == padding_idx).nonzero()
        if hit.numel():
            compact_pad = int(hit[0, 0])
    if per_sample_weights is not None:
        per_sample_weights = per_sample_weights.reshape(-1).to(compact.dtype)
    return F.embedding_bag(
        inverse,
        compact,
        offsets,
        mode=mode,
        per_sample_weights=per_sample_weights,
        include_last_offset=include_last_offset,
        padding_idx=compact_pad,
    )


def normalize_padding_idx(padding_idx: Optional[int], num_embeddings: int, where: str) -> Optional[int]:
    """``nn.Embedding``'s rule: a negative padding_idx counts from the end; out of range is an error."""
    if padding_idx is None:
        return None
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise ConfigError(f"{where}: padding_idx={padding_idx} is outside the table of {num_embeddings} rows")
    return padding_idx + num_embeddings if padding_idx < 0 else padding_idx


def refuse_max_norm(module: torch.nn.Module, where: str) -> None:
    """Refuse tables whose lookups renormalise rows in place (``max_norm``): the factors cannot honour it."""
    if getattr(module, "max_norm", None) is not None:
        raise TargetingError(f"{where}: max_norm={module.max_norm} renormalises looked-up rows in place, which "
                             "factorised or compressed tables cannot honour; build the embedding with max_norm=None "
                             "or leave this module out (exclude_modules)")


def module_options(module: torch.nn.Module) -> dict:
    """The torch constructor options of an Embedding/EmbeddingBag-like module, JSON-serialisable."""
    opts = {
        "padding_idx": getattr(module, "padding_idx", None),
        "max_norm": getattr(module, "max_norm", None),
        "norm_type": float(getattr(module, "norm_type", 2.0)),
        "scale_grad_by_freq": bool(getattr(module, "scale_grad_by_freq", False)),
        "sparse": bool(getattr(module, "sparse", False)),
    }
    if hasattr(module, "mode"):
        opts["mode"] = module.mode
        opts["include_last_offset"] = bool(getattr(module, "include_last_offset", False))
    return opts
