"""MLET for TorchRec: :class:`MLETEmbeddingBagCollection`, a drop-in for ``torchrec.EmbeddingBagCollection``.

Each table W (n×d) of the EBC it replaces trains as an inner n×k table T (held by a plain k-dim
``EmbeddingBagCollection``, so ``DistributedModelParallel`` shards it with the stock
``EmbeddingBagCollectionSharder``) and a bias-free projection P (d×k) applied **after pooling**:
``pool(T[idx]) @ P.T == pool(T[idx] @ P.T)`` for SUM and MEAN pooling and for weighted bags, because
pooling is linear. The projections are ordinary dense parameters (data-parallel under DMP).
:func:`collapse_ebc` turns it back into a plain d-dim EBC whose tables are ``T @ P.T``.

State-dict keys (``<p>`` is the module's prefix, e.g. ``sparse_arch.embedding_bag_collection.``):

* MLET table ``t``: ``<p>inner.embedding_bags.<t>.weight`` (n×k) and ``<p>projs.<t>`` (d×k);
* table left single-layer (``select`` said no): ``<p>inner.embedding_bags.<t>.weight`` (n×d);
* after :func:`collapse_ebc`: ``<p>embedding_bags.<t>.weight`` (n×d), exactly the keys of the original
  EBC, so a collapsed state dict loads into the unwrapped TorchRec model with ``strict=True``.

Importing this module imports torchrec; importing ``mlet_compress`` never does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from functools import partial
from typing import Callable, Iterator, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from ..errors import ConfigError, NumericalError, TargetingError

INSTALL_HINT = "pip install mlet-compress[torchrec]; see README (TorchRec section)"


class TorchRecUnavailableError(ConfigError, ImportError):
    """TorchRec or its FBGEMM kernels cannot be imported (an ``ImportError`` and a :class:`ConfigError`)."""


try:
    from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
    from torchrec.modules.embedding_modules import (EmbeddingBagCollection, EmbeddingBagCollectionInterface,
                                                    get_embedding_names_by_table)
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor
except (ImportError, OSError) as exc:  # OSError: an fbgemm_gpu build that does not match torch
    raise TorchRecUnavailableError(f"mlet_compress.integrations.torchrec cannot import torchrec ({exc}); {INSTALL_HINT}") from exc

InnerDims = Union[Mapping[str, int], Callable[[str], Optional[int]], None]
Select = Optional[Callable[[str], bool]]
POOLINGS = {PoolingType.SUM: "sum", PoolingType.MEAN: "mean"}


def resolve_inner_dim(table: str, inner_dim: int, inner_dims: InnerDims = None, select: Select = None) -> Optional[int]:
    """The inner width k of ``table``, or None when ``select`` leaves it single-layer.

    Args:
        table: table name. inner_dim: default k. inner_dims: per-table k (a dict, or a callable
            returning k or None for "use the default"). select: ``select(table) -> bool``.

    Returns:
        k (a positive int) or None.

    Raises:
        ConfigError: k is not a positive integer.

    Example:
        >>> resolve_inner_dim("t0", 64, {"t0": 32}), resolve_inner_dim("t1", 64, select=lambda t: t == "t0")
        (32, None)
    """
    if select is not None and not select(table):
        return None
    k = inner_dims(table) if callable(inner_dims) else (inner_dims or {}).get(table)
    k = inner_dim if k is None else k
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"table {table!r}: inner_dim={k!r} must be a positive integer")
    return k


def _uniform_std(cfg: EmbeddingBagConfig) -> float:
    """Std of the config's default uniform init (what an unwrapped EBC table starts with)."""
    return (cfg.get_weight_init_max() - cfg.get_weight_init_min()) / math.sqrt(12.0)


@contextlib.contextmanager
def _seeded(seed: Optional[int]) -> Iterator[None]:
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _check_tables(tables: list, where: str) -> None:
    if not tables:
        raise ConfigError(f"{where}: no tables; pass at least one EmbeddingBagConfig")
    names = [getattr(cfg, "name", None) for cfg in tables]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: duplicate table names in {names}")
    for cfg in tables:
        if not isinstance(cfg, EmbeddingBagConfig):
            raise ConfigError(f"{where}: expected torchrec EmbeddingBagConfig, got {type(cfg).__name__}")
        if cfg.pooling not in POOLINGS:
            raise ConfigError(f"{where}: table {cfg.name!r} has pooling {cfg.pooling}; MLET commutes with SUM/MEAN only")
        if not cfg.feature_names:  # the EBC does the same
            cfg.feature_names = [cfg.name]


class Projections(nn.ParameterDict):
    """The d×k projections by table name, N(0, init_std²); ``reset_parameters`` lets DMP materialise meta ones."""

    def __init__(self, shapes: Mapping[str, tuple[int, int]], init_std: float, device=None) -> None:
        super().__init__({t: nn.Parameter(torch.empty(*shape, device=device)) for t, shape in shapes.items()})
        self.init_std = init_std
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Draw every projection from N(0, init_std²) (no-op on the meta device)."""
        for p in self.values():
            p.normal_(0.0, self.init_std)


class MLETEmbeddingBagCollection(EmbeddingBagCollectionInterface):
    """Drop-in for ``torchrec.EmbeddingBagCollection``: inner n×k tables, k→d projections after pooling.

    Implements TorchRec's ``EmbeddingBagCollectionInterface`` (``forward(KJT) -> KeyedTensor``,
    ``embedding_bag_configs()``, ``is_weighted()``), so EBC-based models such as ``DLRM`` take it unchanged.

    Args:
        tables: the d-dim ``EmbeddingBagConfig`` list of the EBC this replaces (returned unchanged by
            :meth:`embedding_bag_configs`).
        inner_dim: default inner width k. inner_dims: per-table k (dict or callable, see
            :func:`resolve_inner_dim`). select: ``select(table) -> bool``; False keeps the table single-layer.
        is_weighted: whether input KJTs carry per-sample weights. device: as for the EBC.
        init_std: std of the Gaussian projections (paper: 0.25 for DLRM).
        table_std: std of the Gaussian inner tables, one float or a per-table dict; default: the std
            of the uniform init the replaced table would have had. seed: reproducible initialisation.

    Raises:
        ConfigError: empty ``tables``, duplicate names, NONE pooling, bad k or init_std.

    Example:
        >>> cfg = EmbeddingBagConfig(name="t0", embedding_dim=8, num_embeddings=100, feature_names=["f0"])
        >>> m = MLETEmbeddingBagCollection([cfg], inner_dim=32)
        >>> kjt = KeyedJaggedTensor.from_lengths_sync(["f0"], torch.tensor([1, 2, 3]), torch.tensor([2, 1]))
        >>> m(kjt).values().shape, tuple(m.tables["t0"].shape), tuple(m.projections["t0"].shape)
        (torch.Size([2, 8]), (100, 32), (8, 32))
    """

    def __init__(self, tables: list[EmbeddingBagConfig], inner_dim: int = 64, inner_dims: InnerDims = None, *,
                 is_weighted: bool = False, device: Optional[torch.device] = None, init_std: float = 0.25,
                 table_std: Union[float, Mapping[str, float], None] = None, seed: Optional[int] = None,
                 select: Select = None) -> None:
        super().__init__()
        tables = list(tables)
        _check_tables(tables, type(self).__name__)
        if not init_std > 0:
            raise ConfigError(f"init_std must be > 0, got {init_std}; tiny values stall MLET (paper Fig. 4)")
        self._configs, self._is_weighted = tables, bool(is_weighted)
        self.inner_dims: dict[str, Optional[int]] = {c.name: resolve_inner_dim(c.name, inner_dim, inner_dims, select)
                                                     for c in tables}
        inner_cfgs = []
        for c in tables:
            k = self.inner_dims[c.name]
            std = table_std.get(c.name) if isinstance(table_std, Mapping) else table_std
            init = partial(nn.init.normal_, mean=0.0, std=float(std if std is not None else _uniform_std(c)))
            inner_cfgs.append(dataclasses.replace(c) if k is None else dataclasses.replace(c, embedding_dim=k, init_fn=init))
        with _seeded(seed):
            self.inner = EmbeddingBagCollection(inner_cfgs, is_weighted=self._is_weighted, device=device)
            self._device = self.inner.device
            self.projs = Projections({c.name: (c.embedding_dim, k) for c in tables
                                      if (k := self.inner_dims[c.name]) is not None}, init_std, self._device)
        names = get_embedding_names_by_table(tables)
        self._key_table = {key: c.name for c, keys in zip(tables, names) for key in keys}
        self._key_dim = {key: c.embedding_dim for c, keys in zip(tables, names) for key in keys}
        shapes = {(c.embedding_dim, k) for c in tables if (k := self.inner_dims[c.name]) is not None}
        # every table MLET with one (d, k): project all features with one batched matmul
        self._uniform = shapes.pop() if len(shapes) == 1 and len(self.projs) == len(tables) else None

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """Pool the inner k-dim rows per feature, project each feature's slice to d; a KeyedTensor like the EBC's."""
        pooled = self.inner(features)  # under DMP: a LazyAwaitable, resolved by the first attribute access
        keys, values = pooled.keys(), pooled.values()
        dims = [self._key_dim[k] for k in keys]
        if self._uniform is not None:  # B×F×k @ (F×d×k)ᵀ: one bmm instead of F small matmuls (and their backward)
            d, k = self._uniform
            projs = torch.stack([self.projs[self._key_table[key]] for key in keys])
            out = torch.bmm(values.reshape(-1, len(keys), k).transpose(0, 1), projs.transpose(1, 2))
            return KeyedTensor(keys=keys, length_per_key=dims, values=out.transpose(0, 1).reshape(-1, len(keys) * d))
        outs = []
        for key, part in zip(keys, values.split(pooled.length_per_key(), dim=1)):
            table = self._key_table[key]
            outs.append(part @ self.projs[table].T if table in self.projs else part)
        return KeyedTensor(keys=keys, length_per_key=dims, values=torch.cat(outs, dim=1))

    def embedding_bag_configs(self) -> list[EmbeddingBagConfig]:
        """The d-dim configs of the replaced EBC (what ``DLRM`` and other EBC-based models read)."""
        return self._configs

    def is_weighted(self) -> bool:
        """Whether input KJTs carry per-sample weights."""
        return self._is_weighted

    @property
    def device(self) -> torch.device:
        """Device the tables were created on."""
        return self._device

    @property
    def tables(self) -> dict[str, Tensor]:
        """Inner n×k table weights of the MLET tables, by table name (unsharded module only)."""
        return {t: self.inner.embedding_bags[t].weight for t in self.projs}

    @property
    def projections(self) -> dict[str, nn.Parameter]:
        """d×k projections by table name (a lookup is ``T[idx] @ P.T``)."""
        return dict(self.projs.items())

    def effective_weight(self, table: str, chunk_rows: int = 65536) -> Tensor:
        """The n×d table ``T @ P.T`` (fp32 accumulation, chunked), or the stored n×d table of a single-layer one.

        Raises:
            ConfigError: unknown table name.
        """
        if table not in self.inner_dims:
            raise ConfigError(f"unknown table {table!r}; tables: {sorted(self.inner_dims)}")
        with torch.no_grad():
            w = self.inner.embedding_bags[table].weight
            if table not in self.projs:
                return w.detach().clone()
            p = self.projs[table]
            out = torch.empty(w.shape[0], p.shape[0], dtype=torch.float32, device=w.device)
            for a, rows in product_chunks(w, p, chunk_rows):
                out[a:a + rows.shape[0]] = rows
            return out

    def extra_repr(self) -> str:  # noqa: D102
        return ", ".join(f"{c.name}: {c.num_embeddings}x{c.embedding_dim}" +
                         (f" (k={self.inner_dims[c.name]})" if self.inner_dims[c.name] else " (single-layer)")
                         for c in self._configs)


@torch.no_grad()
def product_chunks(table: Tensor, proj: Tensor, chunk_rows: int = 65536):
    """Row chunks ``(start, T[a:b] @ P.T)`` of an MLET table's collapsed n×d product, fp32 accumulation.

    The one place the collapse product is computed: :meth:`MLETEmbeddingBagCollection.effective_weight` and
    the streamed, one-table-at-a-time :func:`~.torchrec_save.save_sharded_checkpoint` both use it, so their
    tables are bitwise equal (same chunk boundaries, same matmul shapes).

    Example:
        >>> [(a, r.shape) for a, r in product_chunks(torch.ones(5, 3), torch.ones(2, 3), chunk_rows=4)]
        [(0, torch.Size([4, 2])), (4, torch.Size([1, 2]))]
    """
    p = proj.detach().to(torch.float32)
    for a in range(0, table.shape[0], chunk_rows):
        yield a, table[a:a + chunk_rows].detach().to(torch.float32) @ p.T


@torch.no_grad()
def factor_from_weight(weight: Tensor, inner_dim: int, init_std: float = 0.25,
                       generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """Factors (T n×k, P d×k) with ``T @ P.T == weight`` to float round-off (P: orthogonal rows, norm ``init_std·√k``).

    Raises:
        ConfigError: k < d (a rank-k product cannot hold an arbitrary n×d table).

    Example:
        >>> w = torch.randn(10, 4); t, p = factor_from_weight(w, 8)
        >>> bool(torch.allclose(t @ p.T, w, atol=1e-5))
        True
    """
    n, d = weight.shape
    if inner_dim < d:
        raise ConfigError(f"preserve_function needs inner_dim >= embedding_dim, got k={inner_dim} < d={d}")
    q, _ = torch.linalg.qr(torch.randn(inner_dim, d, generator=generator, dtype=torch.float64))
    s = init_std * math.sqrt(inner_dim)
    proj = q.T * s  # proj @ proj.T = s² I
    table = weight.to(torch.float64) @ proj / (s * s)
    return table.to(weight.dtype), proj.to(torch.float32)


def wrap_ebc(ebc: EmbeddingBagCollection, inner_dim: int = 64, inner_dims: InnerDims = None, init_std: float = 0.25,
             seed: Optional[int] = None, preserve_function: bool = False, select: Select = None, *,
             table_std: Optional[float] = None) -> MLETEmbeddingBagCollection:
    """A new :class:`MLETEmbeddingBagCollection` replacing ``ebc`` (same configs, device, ``is_weighted``).

    MLET tables start from N(0, σ²) with σ the std of the replaced table (or, with ``preserve_function``,
    from factors whose product is the current table); tables ``select`` rejects keep their weights.

    Args:
        ebc: a plain ``torchrec.EmbeddingBagCollection``. inner_dim / inner_dims / select: see
            :func:`resolve_inner_dim`. init_std: projection std. seed: reproducible init.
        preserve_function: start from ``T @ P.T == W`` (needs k ≥ d).
        table_std: std of every inner table's Gaussian init (default: each replaced table's own std).

    Returns:
        The new module (``ebc`` is left unchanged).

    Raises:
        TargetingError: ``ebc`` is already MLET or not a torchrec EBC. ConfigError: bad k / init_std.

    Example:
        >>> ebc = EmbeddingBagCollection([EmbeddingBagConfig(name="t0", embedding_dim=8, num_embeddings=50)])
        >>> wrap_ebc(ebc, inner_dim=32).inner_dims
        {'t0': 32}
    """
    if isinstance(ebc, MLETEmbeddingBagCollection):
        raise TargetingError("wrap_ebc: module is already an MLETEmbeddingBagCollection; collapse_ebc it first")
    if type(ebc) is not EmbeddingBagCollection:
        raise TargetingError(f"wrap_ebc: expected a torchrec EmbeddingBagCollection, got {type(ebc).__name__}")
    weights = {c.name: ebc.embedding_bags[c.name].weight for c in ebc.embedding_bag_configs()}
    stds = {t: float(w.detach().float().std()) for t, w in weights.items() if not w.is_meta and w.numel() > 1}
    stds = {t: s for t, s in stds.items() if s > 0 and math.isfinite(s)}
    new = MLETEmbeddingBagCollection(ebc.embedding_bag_configs(), inner_dim, inner_dims, is_weighted=ebc.is_weighted(),
                                     device=ebc.device, init_std=init_std, seed=seed, select=select,
                                     table_std=stds if table_std is None else table_std)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    with torch.no_grad():
        for t, k in new.inner_dims.items():
            if weights[t].is_meta:
                continue
            if k is None:
                new.inner.embedding_bags[t].weight.copy_(weights[t])
            elif preserve_function:
                table, proj = factor_from_weight(weights[t].detach(), k, init_std, gen)
                new.inner.embedding_bags[t].weight.copy_(table)
                new.projs[t].copy_(proj)
    return new


def _probe_kjt(mlet: MLETEmbeddingBagCollection, rows_per_table: int = 32) -> KeyedJaggedTensor:
    """Bags of one row at spread-out indices of each table, plus one bag of all of them (and one empty bag)."""
    keys, values, lengths = [], [], []
    cfgs = mlet.embedding_bag_configs()
    batch = max(min(c.num_embeddings, rows_per_table) for c in cfgs) + 2
    for c in cfgs:
        r = min(c.num_embeddings, rows_per_table)
        rows = torch.linspace(0, c.num_embeddings - 1, r).round().long()
        for f in c.feature_names:
            keys.append(f)
            values += [rows, rows]
            lengths += [torch.ones(r, dtype=torch.long), torch.tensor([r]), torch.zeros(batch - r - 1, dtype=torch.long)]
    vals = torch.cat(values)
    weights = (0.5 + 0.25 * (torch.arange(vals.numel()) % 3)).float() if mlet.is_weighted() else None
    return KeyedJaggedTensor.from_lengths_sync(keys, vals.to(mlet.device), torch.cat(lengths).to(mlet.device),
                                               weights=None if weights is None else weights.to(mlet.device))


def _check_collapsed(mlet: MLETEmbeddingBagCollection, ebc: EmbeddingBagCollection) -> None:
    kjt = _probe_kjt(mlet)
    with torch.no_grad():
        want, got = mlet(kjt).to_dict(), ebc(kjt).to_dict()
    half = any(c.data_type.name != "FP32" for c in mlet.embedding_bag_configs())
    rtol = 1e-2 if half else 1e-4
    for key, a in want.items():
        b = got[key]
        tol = rtol * float(a.abs().max()) + 1e-6 if a.numel() else 0.0
        if not torch.isfinite(b).all():
            raise NumericalError(f"collapse_ebc: feature {key!r}: the collapsed table holds NaN/Inf")
        if a.numel() and float((a - b).abs().max()) > tol:
            raise NumericalError(f"collapse_ebc: feature {key!r}: collapsed lookups differ from the MLET ones by "
                                 f"{float((a - b).abs().max()):.3g} > {tol:.3g}; the factors may be non-finite or huge")


def collapse_ebc(mlet_ebc: MLETEmbeddingBagCollection, check: bool = True) -> EmbeddingBagCollection:
    """The plain d-dim ``EmbeddingBagCollection`` equal to ``mlet_ebc`` (tables ``T @ P.T``), for inference.

    Args:
        mlet_ebc: an unsharded :class:`MLETEmbeddingBagCollection`.
        check: compare lookups of both modules on probe rows of every table.

    Returns:
        A new EBC with the same configs, device and ``is_weighted``; its state-dict keys are those of the
        originally wrapped EBC.

    Raises:
        ConfigError: the inner EBC is sharded (load its state into an unsharded module first).
        NumericalError: the check fails (non-finite or diverging tables).

    Example:
        >>> m = MLETEmbeddingBagCollection([EmbeddingBagConfig(name="t0", embedding_dim=4, num_embeddings=20)], 16)
        >>> list(collapse_ebc(m).state_dict())
        ['embedding_bags.t0.weight']
    """
    if type(mlet_ebc.inner) is not EmbeddingBagCollection:
        raise ConfigError(f"collapse_ebc: the inner EBC is a {type(mlet_ebc.inner).__name__}; load the trained state "
                          "into an unsharded MLETEmbeddingBagCollection and collapse that")
    cfgs = [dataclasses.replace(c) for c in mlet_ebc.embedding_bag_configs()]
    weights = [p for p in mlet_ebc.inner.parameters()]  # where the tables are now (e.g. meta, for a structure copy)
    device = weights[0].device if weights else mlet_ebc.device
    out = EmbeddingBagCollection(cfgs, is_weighted=mlet_ebc.is_weighted(), device=device)
    with torch.no_grad():
        for c in cfgs:
            dest = out.embedding_bags[c.name].weight
            dest.copy_(mlet_ebc.effective_weight(c.name).to(dest.dtype))
    if check:
        _check_collapsed(mlet_ebc, out)
    return out


__all__ = [
    "MLETEmbeddingBagCollection", "TorchRecUnavailableError", "INSTALL_HINT", "resolve_inner_dim", "factor_from_weight",
    "wrap_ebc", "collapse_ebc", "product_chunks",
]
