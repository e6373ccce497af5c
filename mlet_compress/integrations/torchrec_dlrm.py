"""The TorchRec DLRM of ``mlet-compress train --engine torchrec``, with the package's model interface.

:class:`TorchRecDLRM` is ``torchrec.models.dlrm.DLRM`` (an ``EmbeddingBagCollection`` with one table per
sparse field, dense arch, dot interaction, over arch) that also takes the package's ``(dense [B, n],
sparse [B, F] ids)`` batches and returns logits ``[B]``, and carries ``name`` / ``config`` so
``build_model("torchrec_dlrm", **config)`` rebuilds it (``mlet-compress eval``). Its state-dict keys are
DLRM's own (``sparse_arch.embedding_bag_collection.embedding_bags.t_<field>.weight``, ...), so a
collapsed checkpoint loads into it, and into a plain TorchRec DLRM of the same sizes, with ``strict=True``.

Also :func:`plan_summary` (table → sharding type, kernel, ranks of a DMP plan) and :func:`plan_lines`.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from ..errors import ConfigError
from ..models.embedding import sanitize_field_names
from .torchrec_ebc import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor

from torchrec.models.dlrm import DLRM  # noqa: E402  (torchrec imported above, with the install hint)


class TorchRecDLRM(DLRM):
    """TorchRec's DLRM over one EBC table per field, with the layer sizes of the package's ``dlrm``.

    Args:
        vocab_sizes: rows per sparse field.
        num_dense: number of dense features (> 0: TorchRec's DLRM always has a dense arch).
        embed_dim: embedding dimension d (the dense arch's output width too).
        field_names: sparse field names (features; tables are ``t_<sanitized name>``).
        bottom_mlp / top_mlp: hidden sizes before the final d-wide / 1-wide layer (as the package's DLRM).
        sparse: accepted for the package's builder signature; TorchRec tables take no sparse flag.
        device: where the tables and layers are created (``meta`` for a structure-only copy).

    MLP layers get the DLRM reference initialisation of the package's DLRM (W ~ N(0, sqrt(2/(in+out))),
    b ~ N(0, sqrt(1/out))); tables TorchRec's default U(±sqrt(1/n)), the DLRM reference's.

    Raises:
        ConfigError: no dense features, or sizes that do not fit.

    Example:
        >>> m = TorchRecDLRM([10, 20], num_dense=3, embed_dim=4, bottom_mlp=(8,), top_mlp=(8,))
        >>> m(torch.randn(5, 3), torch.zeros(5, 2, dtype=torch.long)).shape
        torch.Size([5])
    """

    name = "torchrec_dlrm"

    def __init__(self, vocab_sizes: Sequence[int], num_dense: int, embed_dim: int = 16, *,
                 field_names: Optional[Sequence[str]] = None, bottom_mlp: Sequence[int] = (512, 256, 128),
                 top_mlp: Sequence[int] = (512, 256), sparse: bool = False,
                 device: Optional[Union[str, torch.device]] = None) -> None:
        if int(num_dense) < 1:
            raise ConfigError("the TorchRec DLRM needs dense features and this data has none; train it with {engine}",
                              option="engine", value="torch")
        vocab = [int(v) for v in vocab_sizes]
        names = list(field_names) if field_names is not None else [f"C{i}" for i in range(len(vocab))]
        if len(names) != len(vocab):
            raise ConfigError(f"TorchRecDLRM: {len(names)} field names for {len(vocab)} vocabularies")
        dev = torch.device(device) if device is not None else None
        tables = [EmbeddingBagConfig(name=f"t_{t}", embedding_dim=int(embed_dim), num_embeddings=n, feature_names=[f])
                  for t, f, n in zip(sanitize_field_names(names, len(names)), names, vocab)]
        super().__init__(embedding_bag_collection=EmbeddingBagCollection(tables, device=dev),
                         dense_in_features=int(num_dense),
                         dense_arch_layer_sizes=[int(u) for u in bottom_mlp] + [int(embed_dim)],
                         over_arch_layer_sizes=[int(u) for u in top_mlp] + [1], dense_device=dev)
        self.feature_names = names
        self.config: dict[str, Any] = {"vocab_sizes": vocab, "num_dense": int(num_dense), "embed_dim": int(embed_dim),
                                       "field_names": names, "bottom_mlp": [int(u) for u in bottom_mlp],
                                       "top_mlp": [int(u) for u in top_mlp]}
        if dev is None or dev.type != "meta":
            with torch.no_grad():
                for mod in self.modules():
                    if isinstance(mod, nn.Linear):
                        n_out, n_in = mod.weight.shape
                        mod.weight.normal_(0.0, math.sqrt(2.0 / (n_in + n_out)))
                        mod.bias.normal_(0.0, math.sqrt(1.0 / n_out))

    def forward(self, dense_features: torch.Tensor, sparse_features: Any) -> torch.Tensor:  # type: ignore[override]
        """``(dense [B, n], sparse [B, F] ids or a KeyedJaggedTensor)`` -> logits ``[B]``."""
        if isinstance(sparse_features, torch.Tensor):
            ids = sparse_features.to(torch.int64)
            sparse_features = KeyedJaggedTensor.from_lengths_sync(
                self.feature_names, ids.T.reshape(-1), torch.ones(ids.numel(), dtype=torch.int64, device=ids.device))
        return super().forward(dense_features.float(), sparse_features).squeeze(1)


def plan_summary(dmp: nn.Module) -> dict[str, dict[str, Any]]:
    """Per sharded table of a DMP model: ``{"module", "sharding_type", "compute_kernel", "ranks"}``.

    Example:
        >>> plan_summary(dmp)["t_C0"]["sharding_type"]  # doctest: +SKIP
        'table_wise'
    """
    out: dict[str, dict[str, Any]] = {}
    for module, mplan in dmp.plan.plan.items():
        for table, ps in mplan.items():
            out[table] = {"module": module, "sharding_type": ps.sharding_type, "compute_kernel": ps.compute_kernel,
                          "ranks": list(ps.ranks) if ps.ranks is not None else None}
    return out


def plan_lines(summary: dict[str, dict[str, Any]]) -> list[str]:
    """One line per table: ``t_C0: table_wise (fused) on ranks [1]``."""
    return [f"{t}: {p['sharding_type']} ({p['compute_kernel']}) on ranks {p['ranks']}" for t, p in summary.items()]


__all__ = ["TorchRecDLRM", "plan_summary", "plan_lines"]
