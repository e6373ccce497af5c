"""The hashing stage: modulo hashing of indices, ``idx % m`` into an m-row table (a training-time stage).

- op: :func:`~mlet_compress.ops.hashing.hash_indices`;
- module handler: a ``HashedEmbedding(Bag)`` of ``m`` rows (initialised from the first ``m`` rows);
- no file plan: hashing changes which rows lookups read, so it is applied before training, not to a
  trained checkpoint;
- order: first (before MLET wrapping, SVD and quantization); a table is hashed once.
"""

from __future__ import annotations

from typing import Optional

from torch import nn

from ..config import HashConfig
from ..errors import ConfigError
from ..layers.hashed import HashedEmbedding, HashedEmbeddingBag
from ..ops.hashing import hash_indices
from ..schema import StageRecord
from .base import Candidate, OrderRule, Stage, register

ORDER = OrderRule(refuse={
    "mlet": "is already MLET-wrapped; hash before wrap (hashing is a training-time stage)",
    "lowrank": "is low-rank; hashing shrinks the index space and must be applied before training",
    "quantized": "is quantized; hashing must be applied before training",
    "hashed": "is already hashed",
})


def _skip(c: Candidate, cfg: HashConfig) -> Optional[str]:
    if c.dim < cfg.min_embedding_dim:
        return f"narrower than min_embedding_dim={cfg.min_embedding_dim}"
    if c.rows < cfg.min_rows:
        return f"{c.rows} rows, fewer than min_rows={cfg.min_rows}"
    if cfg.buckets_for(c.rows) >= c.rows:
        return f"{cfg.buckets_for(c.rows)} buckets would not shrink its {c.rows} rows"
    return None


def _to_module(name: str, mod: nn.Module, cfg: HashConfig) -> tuple[nn.Module, StageRecord]:
    n, d = mod.weight.shape
    m = cfg.buckets_for(n)
    if mod.padding_idx is not None and mod.padding_idx >= m:
        raise ConfigError(f"cannot hash {name!r}: padding_idx={mod.padding_idx} does not fit in {m} buckets")
    kw = dict(original_num_embeddings=n, padding_idx=mod.padding_idx, scale_grad_by_freq=mod.scale_grad_by_freq,
              sparse=mod.sparse, max_norm=mod.max_norm, norm_type=mod.norm_type, device=mod.weight.device,
              dtype=mod.weight.dtype, _weight=mod.weight.detach()[:m].clone())
    if isinstance(mod, nn.EmbeddingBag):
        new = HashedEmbeddingBag(m, d, mode=mod.mode, include_last_offset=mod.include_last_offset, **kw)
    else:
        new = HashedEmbedding(m, d, **kw)
    return new, StageRecord.make("hash", num_buckets=m, original_num_embeddings=n)


register(Stage(
    name="hash", config=HashConfig, op=hash_indices, to_module=_to_module, order=ORDER, skip_reason=_skip,
    file_refusal="hashing is a training-time stage (it changes which rows lookups read); hash the model before "
                 "training with compress_(model, HashConfig(...))",
))

__all__ = ["ORDER"]
