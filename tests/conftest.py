"""Shared fixtures: small models with every kind of embedding placement."""

from pathlib import Path

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
