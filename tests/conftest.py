"""Shared fixtures: small models with every kind of embedding placement."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class ToyModel(nn.Module):
    """Nested modules, a ModuleDict of tables, an EmbeddingBag, a 1-dim table and an aliased table."""

    def __init__(self):
        super().__init__()
        self.user = nn.Embedding(60, 8, padding_idx=0)
        self.features = nn.Module()
        self.features.tables = nn.ModuleDict({
            "item": nn.Embedding(40, 8),
            "tags": nn.EmbeddingBag(30, 8, mode="sum"),
            "linear": nn.Embedding(40, 1),
        })
        self.user_alias = self.user  # the same table registered under two names
        self.head = nn.Linear(8 * 3 + 1, 1)

    def forward(self, user, item, tags, tag_offsets):
        u = self.user(user)
        i = self.features.tables["item"](item)
        t = self.features.tables["tags"](tags, tag_offsets)
        lin = self.features.tables["linear"](item)
        ua = self.user_alias(user)
        return self.head(torch.cat([u + ua, i, t, lin], dim=1)).squeeze(1)


def toy_batch(seed=0, b=6):
    g = torch.Generator().manual_seed(seed)
    user = torch.randint(0, 60, (b,), generator=g)
    item = torch.randint(0, 40, (b,), generator=g)
    tags = torch.randint(0, 30, (2 * b,), generator=g)
    offsets = torch.arange(0, 2 * b, 2)
    return user, item, tags, offsets


@pytest.fixture
def toy():
    torch.manual_seed(0)
    return ToyModel()


def criteo_rows(n: int, seed: int = 0) -> list[list[str]]:
    """Random Criteo-like rows: label, 13 ints (some empty/negative), 26 hex cats (some empty)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        ints = ["" if rng.random() < 0.2 else str(int(rng.integers(-2, 500))) for _ in range(13)]
        cats = ["" if rng.random() < 0.1 else f"{int(rng.integers(0, 6)) * 0x1234567:08x}" for _ in range(26)]
        rows.append([str(int(rng.random() < 0.3))] + ints + cats)
    return rows


def write_lines(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.write_bytes((newline.join(lines) + newline).encode())
    return path
