"""Feature-embedding blocks shared by the seven CTR models.

:class:`FeatureEmbedding` holds one plain ``nn.Embedding(vocab, embed_dim)`` per sparse field in a
``nn.ModuleDict`` named ``tables`` (keys: sanitised field names). Its forward only *calls* each
table (``tables[name](ids)``) and never reads ``.weight``, so a table can be swapped in place for any
module with the same call signature (e.g. an MLET embedding that computes ``T[idx] @ P.T``) and the
model keeps working. :class:`LinearFeatures` is the wide / first-order block: 1-dim tables (skipped
by MLET, whose minimum dimension is 2) plus a linear map over the dense features.

Initialisation lives here (``init="normal"``: N(0, init_std) as DeepCTR-Torch; ``init="dlrm"``:
U(±sqrt(1/n)) as the DLRM reference), so a wrapper that replaces the tables later brings its own.

Example:
    >>> emb = FeatureEmbedding([10, 5], 4, field_names=["site-id", "app"])
    >>> list(emb.tables.keys())
    ['site_id', 'app']
    >>> emb(torch.tensor([[1, 2], [3, 4]])).shape
    torch.Size([2, 2, 4])
"""

from __future__ import annotations

import keyword
import math
import numbers
import re
from typing import Sequence

import torch
from torch import nn

from mlet_compress.errors import ConfigError, DataError
from mlet_compress.layers.mlet import lookup_fields

INITS = ("normal", "dlrm")

_RESERVED = frozenset(dir(nn.ModuleDict()))


def is_int(value: object) -> bool:
    """True for Python / NumPy integers (not bools)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def sanitize_field_names(field_names: Sequence[str] | None, num_fields: int) -> list[str]:
    """Turn user field names into unique Python identifiers usable as ``ModuleDict`` keys.

    Non-identifier characters become ``_``; a leading digit (or an empty name) gets an ``f_`` prefix;
    keywords and names clashing with ``nn.ModuleDict`` attributes get a ``_`` suffix; duplicates get
    ``_2``, ``_3``, ... suffixes. ``None`` gives ``C0 .. C{F-1}``.

    Args:
        field_names: the names, or None for the defaults.
        num_fields: number of sparse fields (length check).

    Returns:
        A list of ``num_fields`` unique identifiers, in field order.

    Raises:
        ConfigError: the number of names differs from ``num_fields``.

    Example:
        >>> sanitize_field_names(["a b", "1x", "a_b", "keys"], 4)
        ['a_b', 'f_1x', 'a_b_2', 'keys_']
    """
    if field_names is None:
        return [f"C{i}" for i in range(num_fields)]
    names = [str(n) for n in field_names]
    if len(names) != num_fields:
        raise ConfigError(
            f"field_names has {len(names)} names but vocab_sizes has {num_fields} fields; "
            "pass one name per sparse field"
        )
    out: list[str] = []
    seen: set[str] = set()
    for raw in names:
        name = re.sub(r"\W", "_", raw, flags=re.ASCII)
        if not name or name[0].isdigit():
            name = "f_" + name
        if keyword.iskeyword(name) or name in _RESERVED:
            name += "_"
        base, k = name, 2
        while name in seen:
            name = f"{base}_{k}"
            k += 1
        seen.add(name)
        out.append(name)
    return out


def check_vocab_sizes(vocab_sizes: Sequence[int]) -> list[int]:
    """Validate per-field vocabulary sizes.

    Raises:
        ConfigError: empty list, or a size that is not a positive integer.
    """
    if hasattr(vocab_sizes, "tolist"):
        vocab_sizes = vocab_sizes.tolist()  # numpy array / tensor
    sizes = list(vocab_sizes)
    if not sizes:
        raise ConfigError("vocab_sizes is empty; pass one vocabulary size per sparse field")
    for i, n in enumerate(sizes):
        if not is_int(n) or n < 1:
            raise ConfigError(f"vocab_sizes[{i}] = {n!r} is not a positive int; every field needs >= 1 row")
    return [int(n) for n in sizes]


def init_table_(weight: torch.Tensor, init: str, init_std: float) -> None:
    """Initialise one embedding table in place (``normal``: N(0, init_std); ``dlrm``: U(±sqrt(1/n)))."""
    with torch.no_grad():
        if init == "normal":
            weight.normal_(0.0, init_std)
        else:
            bound = math.sqrt(1.0 / weight.shape[0])
            weight.uniform_(-bound, bound)


def _check_init(init: str, init_std: float) -> None:
    if init not in INITS:
        raise ConfigError(f"embedding init {init!r} is unknown; use one of {list(INITS)}")
    if not init_std > 0:
        raise ConfigError(f"init_std = {init_std!r} must be > 0")


def check_sparse_input(sparse: torch.Tensor, num_fields: int, who: str) -> None:
    """Check that ``sparse`` is an integer [B, num_fields] tensor.

    Raises:
        DataError: wrong rank, width or dtype.
    """
    if sparse.dim() != 2 or sparse.shape[1] != num_fields:
        raise DataError(
            f"{who}: sparse input has shape {tuple(sparse.shape)}, expected [B, {num_fields}] (one id per field)"
        )
    if sparse.dtype not in (torch.int64, torch.int32):
        raise DataError(f"{who}: sparse input has dtype {sparse.dtype}; pass int64 (LongTensor) ids")


class FeatureEmbedding(nn.Module):
    """One ``nn.Embedding(vocab, embed_dim)`` per sparse field; looks all fields up and stacks them.

    Args:
        vocab_sizes: rows per field.
        embed_dim: embedding dimension d.
        field_names: optional names (sanitised into ``ModuleDict`` keys); default ``C0..C{F-1}``.
        sparse: create tables with ``sparse=True`` (sparse gradients for SGD / Adagrad).
        init: ``"normal"`` (N(0, init_std), DeepCTR-Torch) or ``"dlrm"`` (U(±sqrt(1/n)), DLRM reference).
        init_std: standard deviation for ``init="normal"``.

    Raises:
        ConfigError: bad sizes, names, init or dimension.

    Example:
        >>> FeatureEmbedding([3, 7], 2)(torch.zeros(5, 2, dtype=torch.long)).shape
        torch.Size([5, 2, 2])
    """

    def __init__(
        self,
        vocab_sizes: Sequence[int],
        embed_dim: int,
        field_names: Sequence[str] | None = None,
        sparse: bool = False,
        init: str = "normal",
        init_std: float = 1e-4,
    ) -> None:
        super().__init__()
        sizes = check_vocab_sizes(vocab_sizes)
        if not is_int(embed_dim) or embed_dim < 1:
            raise ConfigError(f"embed_dim = {embed_dim!r} must be a positive int")
        _check_init(init, init_std)
        self.field_names = sanitize_field_names(field_names, len(sizes))
        self.embed_dim = embed_dim = int(embed_dim)
        self.tables = nn.ModuleDict()
        for name, n in zip(self.field_names, sizes):
            table = nn.Embedding(n, embed_dim, sparse=sparse)
            init_table_(table.weight, init, init_std)
            self.tables[name] = table

    @property
    def num_fields(self) -> int:
        """Number of sparse fields F."""
        return len(self.field_names)

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        """Look every field up: LongTensor [B, F] -> [B, F, embed_dim]."""
        check_sparse_input(sparse, self.num_fields, "FeatureEmbedding")
        # lookup_fields batches the projections when the tables have been MLET-wrapped
        return lookup_fields([self.tables[n] for n in self.field_names], [sparse[:, i] for i in range(self.num_fields)])


class LinearFeatures(nn.Module):
    """Wide / first-order block: Σ_f w_f[id_f] + dense · w_dense (no bias; the model owns the bias).

    Holds 1-dim ``nn.Embedding(vocab, 1)`` tables in the ``ModuleDict`` ``tables`` (same keys as
    :class:`FeatureEmbedding`) and, when ``num_dense > 0``, a ``dense_weight`` parameter [num_dense].
    Initialised N(0, init_std) like DeepCTR-Torch's ``Linear``.

    Args:
        vocab_sizes: rows per field.
        num_dense: number of dense features (0 allowed).
        field_names: optional names, sanitised as in :func:`sanitize_field_names`.
        sparse: create tables with ``sparse=True``.
        init_std: N(0, init_std) initialisation of all weights.

    Example:
        >>> lin = LinearFeatures([4, 4], 1)
        >>> logit, w = lin(torch.ones(3, 1), torch.zeros(3, 2, dtype=torch.long))
        >>> logit.shape, w.shape
        (torch.Size([3]), torch.Size([3, 2]))
    """

    def __init__(
        self,
        vocab_sizes: Sequence[int],
        num_dense: int,
        field_names: Sequence[str] | None = None,
        sparse: bool = False,
        init_std: float = 1e-4,
    ) -> None:
        super().__init__()
        sizes = check_vocab_sizes(vocab_sizes)
        _check_init("normal", init_std)
        self.field_names = sanitize_field_names(field_names, len(sizes))
        self.num_dense = num_dense = int(num_dense)
        self.tables = nn.ModuleDict()
        for name, n in zip(self.field_names, sizes):
            table = nn.Embedding(n, 1, sparse=sparse)
            init_table_(table.weight, "normal", init_std)
            self.tables[name] = table
        if num_dense > 0:
            self.dense_weight = nn.Parameter(torch.empty(num_dense).normal_(0.0, init_std))
        else:
            self.register_parameter("dense_weight", None)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(logit [B], looked-up first-order weights [B, F])`` (the latter for L2 terms)."""
        check_sparse_input(sparse, len(self.field_names), "LinearFeatures")
        w = torch.cat([self.tables[n](sparse[:, i]) for i, n in enumerate(self.field_names)], dim=1)
        logit = w.sum(dim=1)
        if self.dense_weight is not None:
            logit = logit + dense @ self.dense_weight
        return logit, w

    def l2_penalty(self, looked_up: torch.Tensor) -> torch.Tensor:
        """Σ squares of the looked-up first-order weights plus Σ squares of ``dense_weight``."""
        total = looked_up.pow(2).sum()
        if self.dense_weight is not None:
            total = total + self.dense_weight.pow(2).sum()
        return total


__all__ = [
    "FeatureEmbedding",
    "LinearFeatures",
    "sanitize_field_names",
    "check_vocab_sizes",
    "check_sparse_input",
    "init_table_",
    "is_int",
    "INITS",
]
