"""One cell of a sweep: a (model, arm, d, k, lr multiplier, hash ratio, seed) training run, and the grid.

Roles (the ``role`` column of ``results.json``):

* ``baseline`` — single-layer at the paper's learning rate (the paper's baseline);
* ``tuned`` — single-layer with an embedding-lr multiplier other than 1 (a candidate of the tuned baseline);
* ``mlet`` — MLET at the paper's learning rate;
* ``mlet-tuned`` — MLET with another multiplier (a candidate of the tuned MLET arm).

The tuned pick of an arm (``best_on_val``) is chosen among its multipliers (×1 included) on validation.

Example:
    >>> c = Cell("dlrm", dim=8, k=32, emb_lr_mult=4.0, hash_ratio=None, seed=1)
    >>> c.cell_id, c.role, c.variant
    ('dlrm-d8-mlet-k32-lr4-s1', 'mlet-tuned', 'MLET k=32 d=8 emb-lr×4')
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from ..training.config import TrainConfig


@dataclass(frozen=True)
class Cell:
    """One training run of the grid.

    Attributes:
        model: model name. dim: d. k: MLET inner dimension (0: single-layer).
        emb_lr_mult: embedding learning-rate multiplier. hash_ratio: training-time hashing ratio or None.
        seed: training seed.
    """

    model: str
    dim: int
    k: int
    emb_lr_mult: float
    hash_ratio: Optional[float]
    seed: int

    @property
    def arm(self) -> str:
        """``single`` or ``mlet``."""
        return "mlet" if self.k else "single"

    @property
    def role(self) -> str:
        """``baseline``, ``tuned``, ``mlet`` or ``mlet-tuned`` (see the module docstring)."""
        plain = self.emb_lr_mult == 1.0
        if self.k:
            return "mlet" if plain else "mlet-tuned"
        return "baseline" if plain else "tuned"

    @property
    def cell_id(self) -> str:
        """A file-name-safe unique id, e.g. ``dlrm-d8-mlet-k32-lr4-h0.5-s1``."""
        arm = f"mlet-k{self.k}" if self.k else "single"
        hashed = f"-h{self.hash_ratio:g}" if self.hash_ratio else ""
        return f"{self.model}-d{self.dim}-{arm}-lr{self.emb_lr_mult:g}{hashed}-s{self.seed}"

    @property
    def variant(self) -> str:
        """The human label (``TrainConfig.variant`` plus the hash ratio)."""
        base = f"MLET k={self.k} d={self.dim}" if self.k else f"single d={self.dim}"
        if self.emb_lr_mult != 1.0:
            base += f" emb-lr×{self.emb_lr_mult:g}"
        return base + (f" hash×{self.hash_ratio:g}" if self.hash_ratio else "")

    @property
    def group(self) -> tuple:
        """Cells that differ only in ``emb_lr_mult`` share a group (the tuned pick is made within it)."""
        return (self.model, self.arm, self.dim, self.k, self.hash_ratio, self.seed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields."""
        return dataclasses.asdict(self)

    def train_config(self, sweep: Any) -> TrainConfig:
        """The :class:`TrainConfig` of this cell under the sweep's shared settings (nothing saved but the model).

        Args:
            sweep: the :class:`~mlet_compress.sweep.config.SweepConfig`.
        """
        return TrainConfig(
            model=self.model, dim=self.dim, inner_dim=self.k, init_std=sweep.init_std, hash_ratio=self.hash_ratio,
            hash_min_rows=sweep.hash_min_rows, optimizer=sweep.optimizer, lr=sweep.lr, emb_lr_mult=self.emb_lr_mult,
            batch_size=sweep.batch_size, epochs=sweep.epochs, patience=sweep.patience, select=sweep.select,
            calibrate=sweep.calibrate, seed=self.seed, save_state=False, max_steps_per_epoch=sweep.max_steps_per_epoch,
            eval_batch_size=sweep.eval_batch_size, device=sweep.device, data=sweep.data,
        )


def grid_cells(sweep: Any) -> list[Cell]:
    """Every cell of ``sweep``'s grid: per model, d, seed and hash ratio, the single-layer cells then MLET per k.

    Args:
        sweep: a :class:`~mlet_compress.sweep.config.SweepConfig`.

    Returns:
        The cells in run order (the order of ``results.json``).
    """
    out = []
    for model in sweep.models:
        for dim in sweep.dims:
            for seed in sweep.seeds:
                for ratio in (None, *sweep.hash_ratios):
                    for k in (0, *sweep.ks):
                        out.extend(Cell(model, dim, k, m, ratio, seed) for m in sweep.lr_mults())
    return out


__all__ = ["Cell", "grid_cells"]
