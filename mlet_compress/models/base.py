"""Common base of the seven CTR models: config capture, input checks, the L2 ``reg_loss``.

Every model subclasses :class:`CTRModel`, whose contract is:

* ``forward(dense [B, num_dense] float, sparse [B, F] long) -> logits [B]`` (raw logits);
* ``config``: the full constructor kwargs, JSON-serialisable, so ``build_model(name, **config)``
  rebuilds the same architecture (state dict loads with ``strict=True``);
* ``reg_loss``: a scalar tensor set by each forward, to be added to the data loss by the trainer.

L2 regularisation (DeepCTR-Torch's ``l2_reg_embedding`` / ``l2_reg_linear`` / ``l2_reg_cross``):
DeepCTR-Torch penalises whole embedding tables, which makes every table gradient dense. To keep
gradients sparse (``sparse=True`` tables, sparse SGD / Adagrad) the penalty here is taken on the
embedding vectors *looked up in the batch*: ``l2_reg_embedding * Σ_{b,f} ||e_{b,f}||²`` (summed over the
batch, so a row seen c times is penalised c times), and likewise for the first-order weights. Dense
parameters (cross kernels, the dense linear weight) are penalised whole, once per step. The sum
over the batch matches DeepCTR-Torch, which adds its L2 terms to a *sum*-reduced BCE; a trainer
using a mean-reduced BCE should divide ``reg_loss`` by the batch size to keep the same balance.
``reg_loss`` is 0 in eval mode or when all coefficients are 0. Because it is computed on the output of
each table call, it stays correct when tables are swapped for MLET modules (it then penalises the
effective embeddings T[idx] @ P.T).

Example:
    >>> from mlet_compress.models import build_model
    >>> m = build_model("wdl", vocab_sizes=[5, 7], num_dense=2, embed_dim=4)
    >>> m(torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.long)).shape
    torch.Size([3])
"""

from __future__ import annotations

import inspect
import numbers
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from mlet_compress.errors import ConfigError, DataError
from mlet_compress.models.embedding import FeatureEmbedding, LinearFeatures, check_sparse_input, is_int

LinearOut = Optional[Tuple[torch.Tensor, torch.Tensor]]


def _jsonable(value: Any) -> Any:
    """Sequences / arrays -> lists, NumPy scalars -> Python scalars (recursively); str, bool, None kept."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def check_nonneg(name: str, value: float) -> None:
    """Raise ConfigError unless ``value`` is a real number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{name} = {value!r} must be a number >= 0")


def check_common(num_dense: int, embed_dim: int, init_std: float) -> None:
    """Validate the arguments every model shares.

    Raises:
        ConfigError: negative ``num_dense``, non-positive ``embed_dim`` or ``init_std``.
    """
    if not is_int(num_dense) or num_dense < 0:
        raise ConfigError(f"num_dense = {num_dense!r} must be an int >= 0 (0 when there are no dense features)")
    if not is_int(embed_dim) or embed_dim < 1:
        raise ConfigError(f"embed_dim = {embed_dim!r} must be a positive int")
    if isinstance(init_std, bool) or not isinstance(init_std, (int, float)) or not init_std > 0:
        raise ConfigError(f"init_std = {init_std!r} must be a number > 0")


class CTRModel(nn.Module):
    """Base class: holds ``config``, ``reg_loss`` and the shared input checks.

    Subclasses call ``self._record_config(locals())`` first thing in ``__init__`` (after
    ``super().__init__()``) and ``self._store_reg(...)`` in ``forward``.
    """

    name: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {}
        self.reg_loss: torch.Tensor = torch.zeros(())
        self.num_dense = 0

    def _record_config(self, frame_locals: Mapping[str, Any]) -> None:
        """Store every constructor argument of ``type(self).__init__`` (JSON-friendly) in ``config``."""
        params = inspect.signature(type(self).__init__).parameters
        self.config = {p: _jsonable(frame_locals[p]) for p in params if p != "self"}

    def _check_inputs(self, dense: torch.Tensor, sparse: torch.Tensor, num_fields: int) -> None:
        """Check shapes and dtypes of a batch.

        Raises:
            DataError: wrong shapes, mismatched batch sizes or dtypes.
        """
        check_sparse_input(sparse, num_fields, self.name)
        if dense.dim() != 2 or dense.shape[1] != self.num_dense or dense.shape[0] != sparse.shape[0]:
            raise DataError(
                f"{self.name}: dense input has shape {tuple(dense.shape)}, expected "
                f"[{sparse.shape[0]}, {self.num_dense}] (batch of sparse, num_dense)"
            )
        if not dense.is_floating_point():
            raise DataError(f"{self.name}: dense input has dtype {dense.dtype}; pass a float tensor")

    def _store_reg(self, like: torch.Tensor, *terms: tuple[float, Callable[[], torch.Tensor]]) -> None:
        """Set ``reg_loss`` = Σ coef * fn() over terms with coef > 0, in training mode only (else 0)."""
        reg = like.new_zeros(())
        if self.training:
            for coef, fn in terms:
                if coef > 0:
                    reg = reg + coef * fn()
        self.reg_loss = reg


class DeepCTRModel(CTRModel):
    """Shared parts of the six DeepCTR-Torch models: N(0, init_std) embeddings, optional linear
    (wide / first-order) part, the output bias (DeepCTR's ``PredictionLayer``) and the L2 terms.

    Subclasses call :meth:`_setup` in ``__init__``; in ``forward`` :meth:`_inputs` then :meth:`_finish`.
    """

    def _setup(
        self,
        vocab_sizes: Sequence[int],
        num_dense: int,
        embed_dim: int,
        field_names: Sequence[str] | None,
        *,
        sparse: bool,
        init_std: float,
        l2_reg_embedding: float,
        l2_reg_linear: float | None,
    ) -> None:
        """Build ``embedding``, ``linear`` (only when ``l2_reg_linear`` is not None) and ``bias``."""
        check_common(num_dense, embed_dim, init_std)
        check_nonneg("l2_reg_embedding", l2_reg_embedding)
        self.num_dense = num_dense = int(num_dense)
        self.l2_reg_embedding = float(l2_reg_embedding)
        self.embedding = FeatureEmbedding(
            vocab_sizes, embed_dim, field_names, sparse=sparse, init="normal", init_std=init_std
        )
        if l2_reg_linear is not None:
            check_nonneg("l2_reg_linear", l2_reg_linear)
            self.l2_reg_linear = float(l2_reg_linear)
            self.linear: LinearFeatures | None = LinearFeatures(
                vocab_sizes, num_dense, field_names, sparse=sparse, init_std=init_std
            )
        else:
            self.l2_reg_linear = 0.0
            self.linear = None
        self.bias = nn.Parameter(torch.zeros(1))

    @property
    def num_fields(self) -> int:
        """Number of sparse fields F."""
        return self.embedding.num_fields

    @property
    def deep_input_dim(self) -> int:
        """Width of :func:`deep_input`: F * d + num_dense."""
        return self.num_fields * self.embedding.embed_dim + self.num_dense

    def _inputs(self, dense: torch.Tensor, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, LinearOut]:
        """Check the batch; return (embeddings [B, F, d], dense as float, linear part or None).

        The linear part is ``(logit [B], looked-up first-order weights [B, F])``.
        """
        self._check_inputs(dense, sparse, self.num_fields)
        emb = self.embedding(sparse)
        dense = dense.to(emb.dtype)
        lin = self.linear(dense, sparse) if self.linear is not None else None
        return emb, dense, lin

    def _finish(
        self,
        logit: torch.Tensor,
        emb: torch.Tensor,
        lin: LinearOut,
        *extra: tuple[float, Callable[[], torch.Tensor]],
    ) -> torch.Tensor:
        """Add the linear logit (if any) and the bias, store ``reg_loss``; return logits [B]."""
        terms = [(self.l2_reg_embedding, sq_sum(emb)), *extra]
        if lin is not None and self.linear is not None:
            lin_logit, lin_w = lin
            logit = logit + lin_logit
            linear = self.linear
            terms.append((self.l2_reg_linear, lambda: linear.l2_penalty(lin_w)))
        logit = logit + self.bias
        self._store_reg(logit, *terms)
        return logit


def deep_input(emb: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """DeepCTR's ``combined_dnn_input``: flattened field embeddings [B, F*d] then dense values [B, n]."""
    return torch.cat([emb.flatten(1), dense.to(emb.dtype)], dim=1)


def sq_sum(t: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A lazy Σ t² (evaluated only when its coefficient is > 0)."""
    return lambda: t.pow(2).sum()


__all__ = ["CTRModel", "DeepCTRModel", "check_common", "check_nonneg", "deep_input", "sq_sum"]
