"""Synthetic CTR data with a known click model: the toolkit's embedded default dataset.

Model (all parameters drawn from ``seed``):

* ``F`` categorical fields; field ``f`` has ``V_f`` categories whose frequencies follow a Zipf law,
  ``P(rank r) ∝ r^-s`` (``s = zipf_exponent``), so a few categories are frequent and most are rare
  (the long tail on which MLET's cross-category learning matters). Ranks are mapped to category ids
  by a random permutation.
* every category has a bias ``b ~ N(0, 1)`` and a latent vector ``v ~ N(0, I_k / k)``;
  ``D`` dense features ``x ~ N(0, 1)`` with weights ``w ~ N(0, 1)``.
* logit ``= mu + sigma * z`` with ``z = sqrt(a) B + sqrt(c) Q + sqrt(e) X``, where ``B = Σ_f b_f``,
  ``Q = Σ_{f<g} <v_f, v_g>`` (FM pairwise interactions) and ``X = w·x``, each standardised on a fixed
  calibration sample, and ``(a, c, e)`` the normalised variance shares. ``sigma`` is calibrated so the
  Bayes-optimal AUC equals ``target_auc`` and ``mu`` so the mean CTR equals ``target_ctr``; a click
  is ``Bernoulli(sigmoid(logit))``.

Rows are generated in fixed blocks of ``block_rows`` rows, block ``i`` from
``numpy.random.default_rng([seed, 2, i])``, so any size (1e3..1e8 rows) streams in bounded memory and
the rows do not depend on how they are consumed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Iterator

import numpy as np

from ..errors import ConfigError
from .types import RawColumn, RawTable, TabularData

_CALIB_ROWS = 65_536
_MAX_IN_MEMORY_ROWS = 50_000_000


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of the synthetic generator (defaults: ~200k rows, 10 fields, vocabularies 10..50k)."""

    num_rows: int = 200_000        # rows generated
    num_fields: int = 10           # categorical fields (ignored when vocab_sizes is given)
    min_vocab: int = 10            # smallest field vocabulary (geometric spacing up to max_vocab)
    max_vocab: int = 50_000        # largest field vocabulary
    vocab_sizes: tuple | None = None  # explicit per-field vocabulary sizes (overrides the three above)
    zipf_exponent: float = 1.1     # P(rank r) ∝ r^-s; larger = shorter tail
    latent_dim: int = 8            # dimension of the ground-truth category vectors
    num_dense: int = 4             # dense N(0,1) features
    target_ctr: float = 0.25       # mean click probability
    target_auc: float = 0.78       # Bayes-optimal AUC the logit scale is calibrated to
    bias_share: float = 0.35       # variance share of per-category biases in the logit
    interaction_share: float = 0.5  # variance share of the pairwise latent interactions
    dense_share: float = 0.15      # variance share of the dense features
    seed: int = 0                  # seed of the parameters and of the rows
    block_rows: int = 65_536       # generation block (part of the determinism contract)

    def __post_init__(self) -> None:
        if self.vocab_sizes is not None and not isinstance(self.vocab_sizes, tuple):
            object.__setattr__(self, "vocab_sizes", tuple(int(v) for v in self.vocab_sizes))

    def resolved_vocab_sizes(self) -> list[int]:
        """Per-field vocabulary sizes (raw categories, without an OOV id)."""
        if self.vocab_sizes is not None:
            return [int(v) for v in self.vocab_sizes]
        if self.num_fields == 1:
            return [int(self.max_vocab)]
        g = np.geomspace(self.min_vocab, self.max_vocab, self.num_fields)
        return [int(round(v)) for v in g]

    def validate(self) -> None:
        """Raise ConfigError on an impossible setting."""
        sizes = self.resolved_vocab_sizes()
        checks = [
            (self.num_rows >= 1, f"num_rows={self.num_rows} must be >= 1"),
            (len(sizes) >= 2, f"need at least 2 categorical fields for pairwise interactions, got {len(sizes)}"),
            (all(v >= 2 for v in sizes), f"vocabulary sizes {sizes} must all be >= 2"),
            (0 < self.min_vocab <= self.max_vocab, f"min_vocab={self.min_vocab} must be in [1, max_vocab]"),
            (self.zipf_exponent > 0, f"zipf_exponent={self.zipf_exponent} must be > 0"),
            (self.latent_dim >= 1 and self.num_dense >= 0, "latent_dim must be >= 1 and num_dense >= 0"),
            (0.01 <= self.target_ctr <= 0.99, f"target_ctr={self.target_ctr} must be in [0.01, 0.99]"),
            (0.5 < self.target_auc < 0.99, f"target_auc={self.target_auc} must be in (0.5, 0.99)"),
            (min(self.bias_share, self.interaction_share, self.dense_share) >= 0
             and self.bias_share + self.interaction_share + self.dense_share > 0, "shares must be >= 0, sum > 0"),
            (self.block_rows >= 1024, f"block_rows={self.block_rows} must be >= 1024"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"SyntheticConfig: {msg}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["vocab_sizes"] = None if self.vocab_sizes is None else list(self.vocab_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SyntheticConfig":
        d = dict(d)
        if d.get("vocab_sizes") is not None:
            d["vocab_sizes"] = tuple(d["vocab_sizes"])
        return cls(**d)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _bayes_auc_sorted(p: np.ndarray) -> float:
    """Expected AUC of the true probabilities, ``p`` sorted by increasing logit (no ties)."""
    neg_before = np.cumsum(1.0 - p) - (1.0 - p)
    num = float(np.sum(p * neg_before))
    den = float(p.sum() * (1.0 - p).sum() - np.sum(p * (1.0 - p)))
    return num / den


def _mu_for_ctr(z: np.ndarray, sigma: float, ctr: float) -> float:
    mu = float(np.log(ctr / (1 - ctr)))
    for _ in range(50):
        p = _sigmoid(mu + sigma * z)
        g = p.mean() - ctr
        if abs(g) < 1e-12:
            break
        mu -= g / max(float((p * (1 - p)).mean()), 1e-12)
    return mu


class _Truth:
    """Ground-truth parameters and calibration of one config."""

    def __init__(self, cfg: SyntheticConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        self.sizes = cfg.resolved_vocab_sizes()
        rng = np.random.default_rng([cfg.seed, 0])
        self.cdf, self.perm, self.bias, self.vec = [], [], [], []
        for v in self.sizes:
            w = np.arange(1, v + 1, dtype=np.float64) ** -cfg.zipf_exponent
            c = np.cumsum(w)
            self.cdf.append(c / c[-1])
            self.perm.append(rng.permutation(v).astype(np.int32))
            self.bias.append(rng.standard_normal(v))
            self.vec.append(rng.standard_normal((v, cfg.latent_dim)) / np.sqrt(cfg.latent_dim))
        self.w_dense = rng.standard_normal(cfg.num_dense)
        shares = np.array([cfg.bias_share, cfg.interaction_share, cfg.dense_share if cfg.num_dense else 0.0])
        self.shares = shares / shares.sum()
        self.scale = np.ones(3)
        b, q, x = self._components(*self._draw(np.random.default_rng([cfg.seed, 1]), _CALIB_ROWS))
        self.scale = np.array([max(float(c.std()), 1e-12) for c in (b, q, x)])
        z = np.sort(self._z(b, q, x))
        lo, hi = 0.0, 30.0
        if _bayes_auc_sorted(_sigmoid(_mu_for_ctr(z, hi, cfg.target_ctr) + hi * z)) < cfg.target_auc:
            raise ConfigError(f"SyntheticConfig: target_auc={cfg.target_auc} is not reachable; lower it")
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            mu = _mu_for_ctr(z, mid, cfg.target_ctr)
            if _bayes_auc_sorted(_sigmoid(mu + mid * z)) < cfg.target_auc:
                lo = mid
            else:
                hi = mid
        self.sigma = 0.5 * (lo + hi)
        self.mu = _mu_for_ctr(z, self.sigma, cfg.target_ctr)

    def _draw(self, rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
        u = rng.random((m, len(self.sizes)))
        cats = np.empty((m, len(self.sizes)), np.int32)
        for f, (cdf, perm) in enumerate(zip(self.cdf, self.perm)):
            rank = np.minimum(np.searchsorted(cdf, u[:, f], side="right"), len(cdf) - 1)
            cats[:, f] = perm[rank]
        dense = rng.standard_normal((m, self.cfg.num_dense))
        return cats, dense

    def _components(self, cats: np.ndarray, dense: np.ndarray):
        b = np.zeros(len(cats))
        vsum = np.zeros((len(cats), self.cfg.latent_dim))
        vsq = np.zeros(len(cats))
        for f in range(len(self.sizes)):
            b += self.bias[f][cats[:, f]]
            v = self.vec[f][cats[:, f]]
            vsum += v
            vsq += np.einsum("ij,ij->i", v, v)
        q = 0.5 * (np.einsum("ij,ij->i", vsum, vsum) - vsq)
        x = dense @ self.w_dense if self.cfg.num_dense else np.zeros(len(cats))
        return b, q, x

    def _z(self, b, q, x) -> np.ndarray:
        s = np.sqrt(self.shares) / self.scale
        return s[0] * b + s[1] * q + s[2] * x

    def block(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(raw category ids int32 [m, F], dense float32 [m, D], labels float32 [m], probs [m]) of block i."""
        cfg = self.cfg
        m = min(cfg.block_rows, cfg.num_rows - i * cfg.block_rows)
        rng = np.random.default_rng([cfg.seed, 2, i])
        cats, dense = self._draw(rng, m)
        p = _sigmoid(self.mu + self.sigma * self._z(*self._components(cats, dense)))
        labels = (rng.random(m) < p).astype(np.float32)
        return cats, dense.astype(np.float32), labels, p


@lru_cache(maxsize=4)
def _truth(cfg: SyntheticConfig) -> _Truth:
    return _Truth(cfg)


def synthetic_vocab_sizes(cfg: SyntheticConfig) -> list[int]:
    """Vocabulary sizes of :func:`iter_synthetic` / :func:`generate_synthetic` ids (raw + the unused id 0)."""
    return [v + 1 for v in cfg.resolved_vocab_sizes()]


def iter_synthetic(cfg: SyntheticConfig, *, with_probs: bool = False) -> Iterator:
    """Stream the rows block by block (bounded memory for any ``num_rows``).

    Ids are ``raw category + 1`` (id 0 is never used; vocab sizes: :func:`synthetic_vocab_sizes`).

    Args:
        cfg: the generator settings.
        with_probs: also yield the true click probabilities.

    Yields:
        :class:`TabularData` blocks of ``cfg.block_rows`` rows (last one shorter), or
        ``(TabularData, probs)`` when ``with_probs``.

    Example:
        >>> cfg = SyntheticConfig(num_rows=3000, block_rows=1024)
        >>> [len(b) for b in iter_synthetic(cfg)]
        [1024, 1024, 952]
    """
    truth = _truth(cfg)
    for i in range(-(-cfg.num_rows // cfg.block_rows)):
        cats, dense, labels, p = truth.block(i)
        data = TabularData(dense, cats.astype(np.int64) + 1, labels)
        yield (data, p) if with_probs else data


def generate_synthetic(cfg: SyntheticConfig | None = None) -> TabularData:
    """All rows in memory (ids = raw category + 1), for sizes that fit.

    Raises:
        ConfigError: more than 5e7 rows (use :func:`iter_synthetic`).

    Example:
        >>> d = generate_synthetic(SyntheticConfig(num_rows=2000))
        >>> d.sparse.shape, d.dense.shape
        ((2000, 10), (2000, 4))
    """
    cfg = cfg or SyntheticConfig()
    raw, _ = synthetic_raw(cfg)
    sparse = np.stack([c.codes.astype(np.int64) + 1 for c in raw.columns], axis=1)
    return TabularData(raw.dense.astype(np.float32), sparse, raw.labels)


def synthetic_raw(cfg: SyntheticConfig) -> tuple[RawTable, np.ndarray]:
    """The rows as a :class:`RawTable` (raw ids, keys ``0..V-1``) plus the true click probabilities."""
    if cfg.num_rows > _MAX_IN_MEMORY_ROWS:
        raise ConfigError(f"SyntheticConfig.num_rows={cfg.num_rows} is too large to hold in memory; "
                          f"stream it with iter_synthetic()")
    truth = _truth(cfg)
    f, d = len(truth.sizes), cfg.num_dense
    cats = np.empty((cfg.num_rows, f), np.int32)
    dense = np.empty((cfg.num_rows, d), np.float32)
    labels = np.empty(cfg.num_rows, np.float32)
    probs = np.empty(cfg.num_rows, np.float64)
    for i in range(-(-cfg.num_rows // cfg.block_rows)):
        s = i * cfg.block_rows
        c, x, y, p = truth.block(i)
        cats[s:s + len(y)], dense[s:s + len(y)], labels[s:s + len(y)], probs[s:s + len(y)] = c, x, y, p
    columns = [RawColumn(np.ascontiguousarray(cats[:, j]), np.arange(v, dtype=np.int64))
               for j, v in enumerate(truth.sizes)]
    raw = RawTable(labels, dense.astype(np.float64), [f"x{j}" for j in range(d)],
                   [f"c{j}" for j in range(f)], columns, 0)
    return raw, probs
