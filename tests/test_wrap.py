"""wrap/collapse on arbitrary models: targeting, aliases, skipping, state-dict compatibility."""

import pytest
import torch
from torch import nn

from conftest import ToyModel, toy_batch
from mlet_compress import MLETConfig, MLETEmbedding, MLETEmbeddingBag, collapse, wrap
from mlet_compress.errors import ConfigError, NumericalError, TargetingError


def test_wrap_finds_nested_moduledict_bag_alias_and_skips_1dim(toy):
    wrap(toy, MLETConfig(inner_dim=16))
    assert set(toy.mlet_wrapped) == {"user", "features.tables.item", "features.tables.tags"}
    assert toy.mlet_wrapped["user"]["aliases"] == ["user_alias"]
    assert isinstance(toy.user, MLETEmbedding) and toy.user_alias is toy.user
    assert isinstance(toy.features.tables["tags"], MLETEmbeddingBag)
    assert type(toy.features.tables["linear"]) is nn.Embedding  # 1-dim table skipped
    out = toy(*toy_batch())
    assert out.shape == (6,) and torch.isfinite(out).all()


def test_collapse_restores_exact_state_dict_and_outputs(toy):
    ref_keys = {k: (v.shape, v.dtype) for k, v in toy.state_dict().items()}
    wrap(toy, MLETConfig(inner_dim=16))
    opt = torch.optim.SGD(toy.parameters(), lr=0.05)
    for s in range(3):
        opt.zero_grad()
        toy(*toy_batch(s)).pow(2).mean().backward()
        opt.step()
    batch = toy_batch(9)
    with torch.no_grad():
        before = toy(*batch)
    collapse(toy)
    assert {k: (v.shape, v.dtype) for k, v in toy.state_dict().items()} == ref_keys
    assert type(toy.user) is nn.Embedding and toy.user.padding_idx == 0 and toy.user_alias is toy.user
    assert type(toy.features.tables["tags"]) is nn.EmbeddingBag and toy.features.tables["tags"].mode == "sum"
    with torch.no_grad():
        torch.testing.assert_close(toy(*batch), before, rtol=1e-5, atol=1e-6)
    fresh = ToyModel()
    fresh.load_state_dict(toy.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh(*batch), before, rtol=1e-5, atol=1e-6)


def test_targets_regex_list_exclude_and_inner_dims(toy):
    wrap(toy, MLETConfig(inner_dim=16, target_modules=r"features\.tables\.(item|tags)", inner_dims={"tags": 24}))
    assert set(toy.mlet_wrapped) == {"features.tables.item", "features.tables.tags"}
    assert toy.features.tables["tags"].inner_dim == 24 and toy.features.tables["item"].inner_dim == 16
    t2 = ToyModel()
    wrap(t2, MLETConfig(inner_dim=8, target_modules=["item", "user_alias"], exclude_modules=["item"]))
    assert set(t2.mlet_wrapped) == {"user"}  # matched through its alias


def test_wrap_errors(toy):
    with pytest.raises(TargetingError, match=r"no embedding table matched.*user \(plain 60x8\)"):
        wrap(toy, MLETConfig(target_modules="nothing"))
    wrap(toy, MLETConfig(inner_dim=8))
    with pytest.raises(TargetingError, match="already MLET-wrapped"):
        wrap(toy, MLETConfig(inner_dim=8))
    with pytest.raises(TargetingError, match="no MLET factors"):
        collapse(nn.Sequential(nn.Embedding(3, 2)))
    with pytest.raises(ConfigError):
        MLETConfig(inner_dim=0)
    with pytest.raises(ConfigError):
        MLETConfig(init_std=0)
    with pytest.raises(ConfigError, match="regex"):
        wrap(ToyModel(), MLETConfig(target_modules="("))


def test_collapse_refuses_nan(toy):
    wrap(toy, MLETConfig(inner_dim=8))
    with torch.no_grad():
        toy.user.table[3, 0] = float("nan")
    with pytest.raises(NumericalError, match="'user'"):
        collapse(toy)


def test_seeded_wrap_is_reproducible():
    torch.manual_seed(1)
    a = ToyModel()
    torch.manual_seed(1)
    b = ToyModel()
    wrap(a, MLETConfig(seed=3))
    torch.randn(10)  # the global RNG state does not matter with a seed
    wrap(b, MLETConfig(seed=3))
    assert torch.equal(a.user.proj, b.user.proj) and torch.equal(a.user.table, b.user.table)


def test_dtype_preserved_for_half_tables():
    m = nn.ModuleDict({"t": nn.Embedding(20, 4).to(torch.bfloat16)})
    wrap(m, MLETConfig(inner_dim=8))
    assert m["t"].table.dtype == torch.bfloat16
    collapse(m)
    assert m["t"].weight.dtype == torch.bfloat16


def test_config_json_round_trip():
    cfg = MLETConfig(inner_dim=32, target_modules=["a", "b"], inner_dims={"a": 8}, init_std=0.5)
    assert MLETConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown option"):
        MLETConfig.from_dict({"inner_dimm": 3})
