"""Stage composition: hashing with MLET, module- and checkpoint-level SVD/quantization, lookups == reconstruct."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from mlet_compress import (
    HashConfig, LowRankConfig, MLETConfig, QuantConfig, collapse, collapse_checkpoint, compress_checkpoint,
    load_checkpoint, save_checkpoint, wrap,
)
from mlet_compress.checkpoint import META_KEY
from mlet_compress.errors import ConfigError, MLETError, TargetingError
from mlet_compress.layers.hashed import HashedEmbedding, HashedEmbeddingBag
from mlet_compress.lookup import dense_weight, load_lookup_modules, load_model_state, reconstruct
from mlet_compress.schema import HashSpec
from mlet_compress.stages import compress_


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.big = nn.Embedding(3000, 8)
        self.bag = nn.EmbeddingBag(2000, 8, mode="mean")
        self.small = nn.Embedding(20, 8)
        self.lin = nn.Embedding(3000, 1)

    def forward(self, a, b, c):
        return (self.big(a) + self.bag(b) + self.small(c)).sum(1) + self.lin(a).squeeze(1)


def _batch(seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 3000, (32,), generator=g), torch.randint(0, 2000, (32, 3), generator=g),
            torch.randint(0, 20, (32,), generator=g))


def test_hashing_semantics_and_targeting():
    torch.manual_seed(0)
    m = Net()
    rep = compress_(m, HashConfig(ratio=0.5, min_rows=1000))
    assert set(rep) == {"big", "bag"}  # small table (< min_rows) and the 1-dim table stay plain
    assert isinstance(m.big, HashedEmbedding) and m.big.num_embeddings == 1500
    assert isinstance(m.bag, HashedEmbeddingBag) and m.bag.num_embeddings == 1000
    idx = torch.tensor([0, 1499, 1500, 2999])
    assert torch.equal(m.big(idx), m.big.weight[idx % 1500])
    assert torch.equal(m.big(torch.tensor([7])), m.big(torch.tensor([1507])))
    with pytest.raises(TargetingError, match="already hashed"):
        compress_(m, HashConfig(num_buckets=10, target_modules=["big"]))


def test_mlet_plus_hashing_trains_collapses_and_inference_uses_modulus(tmp_path):
    torch.manual_seed(1)
    m = Net()
    compress_(m, HashConfig(ratio=0.5, min_rows=1000))
    wrap(m, MLETConfig(inner_dim=16))
    assert m.big.num_buckets == 1500 and m.big.table.shape == (1500, 16)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for s in range(5):
        opt.zero_grad()
        m(*_batch(s)).pow(2).mean().backward()
        opt.step()
    probe = _batch(99)
    with torch.no_grad():
        train_out = m(*probe)
    factors = save_checkpoint(m, tmp_path / "f.safetensors")
    collapse(m)
    assert isinstance(m.big, HashedEmbedding) and m.big.weight.shape == (1500, 8)
    with torch.no_grad():
        torch.testing.assert_close(m(*probe), train_out, rtol=1e-5, atol=1e-5)
    out = collapse_checkpoint(factors)
    ck = load_checkpoint(out)
    assert ck.tables["big"].hash == HashSpec(num_buckets=1500, original_num_embeddings=3000)
    assert [s.stage for s in ck.tables["big"].stages] == ["hash", "mlet", "collapse"]
    fresh = Net()
    load_model_state(fresh, ck)
    with torch.no_grad():
        torch.testing.assert_close(fresh(*probe), train_out, rtol=1e-5, atol=1e-5)


def test_module_chain_equals_checkpoint_chain_and_reconstruct(tmp_path):
    torch.manual_seed(2)
    m = wrap(Net(), MLETConfig(inner_dim=16))
    src = save_checkpoint(m, tmp_path / "m.safetensors")
    collapsed = collapse_checkpoint(src)
    rep = compress_checkpoint(collapsed, LowRankConfig(rank=4, chunk_rows=500))
    qrep = compress_checkpoint(rep.output, QuantConfig(bits=8, chunk_rows=700))
    q8 = qrep.output
    assert rep["big"]["rank"] == 4 and qrep["big"]["bits"] == 8
    collapse(m)
    compress_(m, LowRankConfig(rank=4))
    compress_(m, QuantConfig(bits=8))
    rec = reconstruct(q8)
    for name in ("big", "bag", "small"):  # same math; float32 round-off may differ with memory layout
        torch.testing.assert_close(rec[name], dense_weight(getattr(m, name)), rtol=1e-5, atol=1e-5, msg=name)
    mods = load_lookup_modules(q8)  # no model code
    idx = torch.randint(0, 3000, (50,))
    assert torch.equal(mods["big"](idx), F.embedding(idx, rec["big"]))
    bags = torch.randint(0, 2000, (10, 3))
    torch.testing.assert_close(mods["bag"](bags), F.embedding_bag(bags, rec["bag"], mode="mean"), rtol=1e-6, atol=1e-6)
    ck = load_checkpoint(q8)
    assert [s.stage for s in ck.tables["big"].stages] == ["mlet", "collapse", "svd", "quantize"]
    fresh = Net()
    load_model_state(fresh, ck)
    with torch.no_grad():
        torch.testing.assert_close(fresh(*_batch(5)), m(*_batch(5)), rtol=1e-5, atol=1e-5)


def test_svd_on_uncollapsed_mlet_resolves_by_collapsing_first(tmp_path):
    torch.manual_seed(3)
    m = wrap(Net(), MLETConfig(inner_dim=16))
    src = save_checkpoint(m, tmp_path / "m.safetensors")
    rep = compress_checkpoint(src, LowRankConfig(rank=6))
    out = rep.output
    assert rep["big"]["collapsed_first"] and any("collapsed" in n for n in rep.notes)
    assert "saves nothing" in rep.skipped["small"]  # 20×8: 6·(20+8) = 168 >= 160 values
    collapse(m)
    w = m.big.weight.detach().double()
    sigma = torch.linalg.svdvals(w)
    best = float((sigma[6:] ** 2).sum().sqrt() / (sigma ** 2).sum().sqrt())  # Eckart–Young
    got = float((reconstruct(out)["big"].double() - w).norm() / w.norm())
    assert abs(got - best) <= 1e-5 and abs(rep["big"]["rel_error"] - best) <= 1e-5
    with pytest.raises(TargetingError, match="collapse"):
        compress_(wrap(Net(), MLETConfig(inner_dim=8)), LowRankConfig(rank=2))


def test_invalid_orders_refused(tmp_path):
    m = Net()
    compress_(m, QuantConfig(bits=8))
    with pytest.raises(TargetingError, match="SVD before quantizing"):
        compress_(m, LowRankConfig(rank=2))
    src = save_checkpoint(m, tmp_path / "q.safetensors")
    with pytest.raises(TargetingError, match="already quantized"):
        compress_checkpoint(src, LowRankConfig(rank=2), tables="big")
    with pytest.raises(TargetingError, match="already quantized"):
        compress_checkpoint(src, QuantConfig(), tables="big")


def _plain_ckpt(tmp_path, weight, name="t"):
    entry = {"module": "embedding", "kind": "plain", "num_embeddings": int(weight.shape[0]),
             "embedding_dim": int(weight.shape[1]) if weight.dim() == 2 else 0, "options": {}, "hash": None,
             "factors": {"weight": {"key": f"{name}.weight", "shape": list(weight.shape), "dtype": str(weight.dtype).split(".")[1]}},
             "stages": []}
    path = tmp_path / f"{name}.safetensors"
    save_file({f"{name}.weight": weight}, str(path), metadata={META_KEY: json.dumps({"schema_version": 1, "tables": {name: entry}})})
    return path


@pytest.mark.parametrize("kwargs,match", [
    (dict(bits=0), "bits"), (dict(bits=1), "bits"), (dict(bits=9), "bits"), (dict(grid=0), "grid"),
    (dict(granularity="col"), "granularity"),
])
def test_bad_quant_arguments(tmp_path, kwargs, match):
    src = _plain_ckpt(tmp_path, torch.randn(50, 4))
    with pytest.raises(ConfigError, match=match):
        compress_checkpoint(src, QuantConfig(**kwargs))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]


@pytest.mark.parametrize("kwargs,match", [
    (dict(rank=0), "rank"), (dict(rank=5), "exceeds"), (dict(energy=0.0), "energy"), (dict(energy=1.5), "energy"),
    (dict(), "exactly one"), (dict(rank=2, energy=0.5), "exactly one"),
])
def test_bad_svd_arguments(tmp_path, kwargs, match):
    src = _plain_ckpt(tmp_path, torch.randn(50, 4))
    with pytest.raises(ConfigError, match=match):
        compress_checkpoint(src, LowRankConfig(**kwargs))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]


@pytest.mark.parametrize("weight,match", [
    (torch.randint(0, 5, (10, 4)), "float"),
    (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), "NaN"),
    (torch.tensor([[1.0, float("inf")], [0.0, 1.0]]), "NaN|Inf"),
    (torch.zeros(0, 4), "0 rows|empty|no rows"),
])
def test_bad_tables(tmp_path, weight, match):
    src = _plain_ckpt(tmp_path, weight)
    for fn in (lambda: compress_checkpoint(src, QuantConfig(), tables="t"),
               lambda: compress_checkpoint(src, LowRankConfig(rank=1), tables="t")):
        with pytest.raises(MLETError, match=match):
            fn()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]


def test_regex_matching_nothing(tmp_path):
    src = _plain_ckpt(tmp_path, torch.randn(10, 4))
    with pytest.raises(TargetingError, match="no embedding table matched tables='nope'"):
        compress_checkpoint(src, QuantConfig(), tables="nope")
    with pytest.raises(TargetingError, match="no embedding table matched"):
        compress_(Net(), QuantConfig(target_modules="nope"))


def test_load_model_state_mismatch_is_a_clear_error(tmp_path):
    from mlet_compress.errors import CheckpointError

    src = save_checkpoint(nn.ModuleDict({"big": nn.Embedding(10, 8)}), tmp_path / "s.safetensors")
    with pytest.raises(CheckpointError, match="does not fit.*size mismatch"):
        load_model_state(nn.ModuleDict({"big": nn.Embedding(12, 8)}), src)
    with pytest.raises(CheckpointError, match="no module of that name"):
        load_model_state(nn.ModuleDict({"other": nn.Embedding(10, 8)}), src)
