"""Tests of the seven CTR models, their shared blocks and the interaction math (tiny dims, fast)."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlet_compress.errors import ConfigError, DataError
from mlet_compress.models import MODELS, DeepFM, FeatureEmbedding, LinearFeatures, build_model, default_optimizer
from mlet_compress.models.embedding import sanitize_field_names
from mlet_compress.models.interactions import (
    bi_interaction,
    cross_layer,
    dot_interaction,
    fm_cross_term,
    multi_head_self_attention,
)
from mlet_compress.models.layers import CIN, MLP, CrossNet

VOCAB = [7, 5, 11, 3]
B = 6
SMALL = {
    "dlrm": {"bottom_mlp": (8,), "top_mlp": (8,)},
    "wdl": {"dnn_hidden_units": (8, 4)},
    "deepfm": {"dnn_hidden_units": (8, 4)},
    "xdeepfm": {"dnn_hidden_units": (8,), "cin_layer_size": (4, 2)},
    "dcn": {"dnn_hidden_units": (8,)},
    "autoint": {"att_layer_num": 2, "att_embedding_size": 2, "dnn_hidden_units": (8,)},
    "nfm": {"dnn_hidden_units": (8,)},
}
ALL = sorted(MODELS)


def small(name: str, num_dense: int = 3, **kw) -> nn.Module:
    return build_model(name, vocab_sizes=VOCAB, num_dense=num_dense, embed_dim=4, **{**SMALL[name], **kw})


def batch(num_dense: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(B, num_dense, generator=g)
    sparse = torch.stack([torch.randint(0, n, (B,), generator=g) for n in VOCAB], dim=1)
    return dense, sparse


def mlp_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, MLP) for m in m.linears]


# ---------------------------------------------------------------- every model


@pytest.mark.parametrize("num_dense", [0, 3])
@pytest.mark.parametrize("name", ALL)
def test_forward_backward_reaches_every_table_and_mlp(name: str, num_dense: int) -> None:
    torch.manual_seed(0)
    model = small(name, num_dense)
    dense, sparse = batch(num_dense)
    logits = model(dense, sparse)
    assert logits.shape == (B,)
    assert torch.isfinite(logits).all()
    (F.binary_cross_entropy_with_logits(logits, torch.ones(B)) + model.reg_loss).backward()
    for p_name, p in model.named_parameters():
        assert p.grad is not None, p_name
        assert torch.isfinite(p.grad).all(), p_name
    tables = list(model.embedding.tables.values())
    assert len(tables) == len(VOCAB)
    for t in tables:
        assert t.weight.grad.abs().sum() > 0
    if getattr(model, "linear", None) is not None:
        for t in model.linear.tables.values():
            assert t.weight.grad.abs().sum() > 0
    weights = mlp_weights(model)
    assert weights
    for w in weights:
        assert w.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL)
def test_config_rebuilds_and_state_dict_round_trips_strict(name: str) -> None:
    model = small(name, field_names=["site id", "app", "1st", "app"]).eval()
    config = json.loads(json.dumps(model.config))
    assert config == model.config and type(model).name == name
    clone = build_model(name, **config).eval()
    clone.load_state_dict(model.state_dict(), strict=True)
    dense, sparse = batch(3)
    assert torch.equal(clone(dense, sparse), model(dense, sparse))
    assert list(model.embedding.tables) == ["site_id", "app", "f_1st", "app_2"]


def test_build_model_errors_name_valid_choices() -> None:
    with pytest.raises(ConfigError, match="unknown.*autoint.*dcn.*deepfm.*dlrm.*nfm.*wdl.*xdeepfm"):
        build_model("fm", vocab_sizes=[3], num_dense=0)
    with pytest.raises(ConfigError, match="dnn_units"):
        build_model("wdl", vocab_sizes=[3], num_dense=0, dnn_units=(4,))
    assert type(build_model("DeepFM", vocab_sizes=[3, 3], num_dense=0)).name == "deepfm"


def test_default_optimizer_matches_paper() -> None:
    assert default_optimizer("dlrm") == {"optimizer": "sgd", "lr": 0.2, "init_std": 0.25}
    for name in set(ALL) - {"dlrm"}:
        assert default_optimizer(name) == {"optimizer": "adagrad", "lr": 0.02, "init_std": 0.5}
    default_optimizer("nfm")["lr"] = 1.0  # a copy: does not leak
    assert default_optimizer("nfm")["lr"] == 0.02
    with pytest.raises(ConfigError):
        default_optimizer("lr")


def test_default_architectures_follow_paper_and_deepctr() -> None:
    vocab = [4] * 26
    dlrm = build_model("dlrm", vocab_sizes=vocab, num_dense=13)
    assert [lin.weight.shape[1] for lin in dlrm.bottom_mlp.linears] == [13, 512, 256, 128]
    assert dlrm.bottom_mlp.out_dim == 16
    assert [lin.weight.shape[1] for lin in dlrm.top_mlp.linears] == [16 + 27 * 26 // 2, 512, 256]
    assert dlrm.top_mlp.out_dim == 1
    deep_in = 26 * 16 + 13
    x = build_model("xdeepfm", vocab_sizes=vocab, num_dense=13)
    assert x.cin.out_dim == 256 // 2 + 128 and [m.out_channels for m in x.cin.convs] == [256, 128]
    assert [lin.out_features for lin in x.dnn.linears] == [256, 256]
    dcn = build_model("dcn", vocab_sizes=vocab, num_dense=13)
    assert len(dcn.crossnet.kernels) == 2 and dcn.dnn_linear.in_features == deep_in + 128
    auto = build_model("autoint", vocab_sizes=vocab, num_dense=13)
    assert len(auto.int_layers) == 3 and auto.int_layers[0].w_query.shape == (16, 16)
    assert auto.dnn_linear.in_features == 26 * 16 + 128
    nfm = build_model("nfm", vocab_sizes=vocab, num_dense=13)
    assert nfm.dnn.linears[0].in_features == 16 + 13 and nfm.dnn.out_dim == 128
    for name in ("wdl", "deepfm"):
        m = build_model(name, vocab_sizes=vocab, num_dense=13)
        assert [lin.out_features for lin in m.dnn.linears] == [256, 128]
        assert m.dnn.linears[0].in_features == deep_in
        assert m.config["l2_reg_embedding"] == 1e-5 and m.config["init_std"] == 1e-4


def test_initialisation() -> None:
    dlrm = build_model("dlrm", vocab_sizes=[10000, 4], num_dense=1, bottom_mlp=(4,), top_mlp=(4,))
    w = dlrm.embedding.tables["C0"].weight
    assert w.abs().max() <= math.sqrt(1 / 10000) and w.abs().max() > 0.9 * math.sqrt(1 / 10000)
    wdl = build_model("wdl", vocab_sizes=[10000, 4], num_dense=1)
    std = wdl.embedding.tables["C0"].weight.std().item()
    assert abs(std - 1e-4) < 0.05 * 1e-4  # 40k samples: std error ~0.4%
    assert abs(wdl.dnn.linears[0].weight.std().item() - 1e-4) < 0.05 * 1e-4


@pytest.mark.parametrize("name", ALL)
def test_input_validation(name: str) -> None:
    model = small(name)
    dense, sparse = batch(3)
    with pytest.raises(DataError, match="sparse"):
        model(dense, sparse[:, :3])
    with pytest.raises(DataError, match="dense"):
        model(dense[:, :2], sparse)
    with pytest.raises(DataError, match="dtype"):
        model(dense.long(), sparse)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="num_dense=0"):
        build_model("dlrm", vocab_sizes=[5], num_dense=0)
    with pytest.raises(ConfigError, match="vocab_sizes"):
        build_model("wdl", vocab_sizes=[5, 0], num_dense=0)
    with pytest.raises(ConfigError, match="embed_dim"):
        build_model("dcn", vocab_sizes=[5], num_dense=0, embed_dim=0)
    with pytest.raises(ConfigError, match="field_names"):
        build_model("nfm", vocab_sizes=[5, 5], num_dense=0, field_names=["a"])
    with pytest.raises(ConfigError, match="even"):
        build_model("xdeepfm", vocab_sizes=[5, 5], num_dense=0, cin_layer_size=(3, 2))
    with pytest.raises(ConfigError, match="l2_reg_embedding"):
        build_model("autoint", vocab_sizes=[5, 5], num_dense=0, l2_reg_embedding=-1.0)


# ---------------------------------------------------------------- embedding blocks


class FactoredLookup(nn.Module):
    """Same call signature as nn.Embedding: idx -> table[idx] @ proj.T (an MLET-like stand-in)."""

    def __init__(self, n: int, k: int, d: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(n, k))
        self.proj = nn.Parameter(torch.randn(d, k))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return F.embedding(idx, self.table) @ self.proj.T


def test_feature_embedding_tables_swappable() -> None:
    model = small("deepfm")
    emb = model.embedding
    for name, n in zip(list(emb.tables), VOCAB):
        setattr(emb.tables, name, FactoredLookup(n, 6, 4))
    dense, sparse = batch(3)
    expected = torch.stack(
        [t.table[sparse[:, i]] @ t.proj.T for i, t in enumerate(emb.tables.values())], dim=1
    )
    torch.testing.assert_close(emb(sparse), expected, rtol=0, atol=0)
    model(dense, sparse).sum().backward()
    for t in emb.tables.values():
        assert t.proj.grad.abs().sum() > 0 and t.table.grad.abs().sum() > 0


def test_sanitize_field_names() -> None:
    assert sanitize_field_names(None, 3) == ["C0", "C1", "C2"]
    got = sanitize_field_names(["a b", "1x", "a_b", "keys", "class", "", "é"], 7)
    assert got == ["a_b", "f_1x", "a_b_2", "keys_", "class_", "f_", "_"]
    assert all(n.isidentifier() for n in got) and len(set(got)) == len(got)


def test_linear_features_math() -> None:
    lin = LinearFeatures([4, 6], num_dense=2, init_std=0.5)
    dense, sparse = torch.randn(3, 2), torch.tensor([[0, 5], [3, 1], [2, 2]])
    logit, w = lin(dense, sparse)
    t0, t1 = lin.tables["C0"].weight[:, 0], lin.tables["C1"].weight[:, 0]
    torch.testing.assert_close(w, torch.stack([t0[sparse[:, 0]], t1[sparse[:, 1]]], dim=1))
    torch.testing.assert_close(logit, w.sum(1) + dense @ lin.dense_weight)
    assert all(t.embedding_dim == 1 for t in lin.tables.values())


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
@pytest.mark.parametrize("name", ALL)
def test_sparse_true_gives_sparse_table_grads(name: str) -> None:
    model = small(name, sparse=True)
    dense, sparse = batch(3)
    model.train()
    logits = model(dense, sparse)
    (logits.sum() + model.reg_loss).backward()
    tables = list(model.embedding.tables.values())
    if getattr(model, "linear", None) is not None:
        tables += list(model.linear.tables.values())
    for t in tables:
        assert t.sparse and t.weight.grad.is_sparse
    before = tables[0].weight.detach().clone()
    torch.optim.Adagrad(model.parameters(), lr=0.1).step()
    changed = (tables[0].weight.detach() != before).any(dim=1)
    assert torch.equal(changed.nonzero().flatten(), sparse[:, 0].unique())


@pytest.mark.parametrize("name", ALL)
def test_reg_loss_is_l2_of_looked_up_embeddings(name: str) -> None:
    kw = {"l2_reg_embedding": 0.3}
    if name in ("wdl", "deepfm", "xdeepfm", "nfm"):
        kw["l2_reg_linear"] = 0.0
    if name == "dcn":
        kw["l2_reg_cross"] = 0.0
    model = small(name, **kw).train()
    dense, sparse = batch(3)
    model(dense, sparse)
    emb = model.embedding(sparse)
    manual = 0.3 * sum(
        model.embedding.tables[n].weight[sparse[b, i]].pow(2).sum()
        for b in range(B)
        for i, n in enumerate(model.embedding.field_names)
    )
    torch.testing.assert_close(model.reg_loss, manual, rtol=1e-6, atol=0)
    torch.testing.assert_close(model.reg_loss, 0.3 * emb.pow(2).sum(), rtol=1e-6, atol=0)
    model.eval()
    model(dense, sparse)
    assert model.reg_loss.item() == 0.0


def test_reg_loss_linear_and_cross_terms() -> None:
    m = small("deepfm", l2_reg_embedding=0.0, l2_reg_linear=0.7).train()
    dense, sparse = batch(3)
    m(dense, sparse)
    _, w = m.linear(dense, sparse)
    expected = 0.7 * (w.pow(2).sum() + m.linear.dense_weight.pow(2).sum())
    torch.testing.assert_close(m.reg_loss, expected, rtol=1e-6, atol=0)
    d = small("dcn", l2_reg_embedding=0.0, l2_reg_cross=0.2).train()
    d(dense, sparse)
    expected = 0.2 * sum(k.pow(2).sum() for k in d.crossnet.kernels)
    torch.testing.assert_close(d.reg_loss, expected, rtol=1e-6, atol=0)
    off = small("wdl", l2_reg_embedding=0.0, l2_reg_linear=0.0).train()
    off(dense, sparse)
    assert off.reg_loss.item() == 0.0
    assert small("dlrm").config["l2_reg_embedding"] == 0.0


# ---------------------------------------------------------------- interaction math


def test_dot_interaction_equals_loop() -> None:
    t = torch.randn(2, 4, 3, dtype=torch.float64)
    loop = torch.stack(
        [torch.stack([t[b, i] @ t[b, j] for i in range(4) for j in range(i)]) for b in range(2)]
    )
    torch.testing.assert_close(dot_interaction(t), loop, rtol=1e-12, atol=0)


@pytest.mark.parametrize("num_dense", [0, 2])
def test_dlrm_forward_equals_manual(num_dense: int) -> None:
    m = small("dlrm", num_dense).double().eval()
    dense, sparse = batch(num_dense)
    dense = dense.double()
    e = [m.embedding.tables[n].weight[sparse[:, i]] for i, n in enumerate(m.embedding.field_names)]
    vecs = ([m.bottom_mlp(dense)] if num_dense else []) + e
    dots = torch.stack(
        [(vecs[i] * vecs[j]).sum(1) for i in range(len(vecs)) for j in range(i)], dim=1
    )
    r = torch.cat([vecs[0], dots], dim=1) if num_dense else dots
    torch.testing.assert_close(m(dense, sparse), m.top_mlp(r).squeeze(1), rtol=1e-12, atol=0)


def test_fm_cross_term_equals_formula_and_pairwise_sum() -> None:
    v = torch.randn(3, 5, 4, dtype=torch.float64)
    formula = 0.5 * ((v.sum(1) ** 2) - (v**2).sum(1)).sum(1)
    pairs = sum((v[:, i] * v[:, j]).sum(1) for i, j in itertools.combinations(range(5), 2))
    torch.testing.assert_close(fm_cross_term(v), formula, rtol=1e-12, atol=0)
    torch.testing.assert_close(fm_cross_term(v), pairs, rtol=1e-12, atol=1e-12)


def test_deepfm_forward_equals_sum_of_parts() -> None:
    m = small("deepfm").double().eval()
    dense, sparse = batch(3)
    dense = dense.double()
    emb = m.embedding(sparse)
    lin, _ = m.linear(dense, sparse)
    deep = m.dnn_linear(m.dnn(torch.cat([emb.flatten(1), dense], 1))).squeeze(1)
    expected = lin + fm_cross_term(emb) + deep + m.bias
    torch.testing.assert_close(m(dense, sparse), expected, rtol=1e-12, atol=0)
    assert isinstance(m, DeepFM)


def test_bi_interaction_equals_pairwise_products() -> None:
    v = torch.randn(2, 4, 3, dtype=torch.float64)
    pairs = sum(v[:, i] * v[:, j] for i, j in itertools.combinations(range(4), 2))
    torch.testing.assert_close(bi_interaction(v), pairs, rtol=1e-12, atol=1e-12)


def test_cross_layer_and_crossnet_equal_manual_formula() -> None:
    x0, xl = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    w, b = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    manual = torch.stack([x0[i] * (xl[i] @ w) + b + xl[i] for i in range(3)])
    torch.testing.assert_close(cross_layer(x0, xl, w, b), manual, rtol=1e-12, atol=0)
    net = CrossNet(5, 2).double()
    with torch.no_grad():
        for p in net.biases:
            p.normal_()
    x1 = x0 * (x0 @ net.kernels[0]).unsqueeze(1) + net.biases[0] + x0
    x2 = x0 * (x1 @ net.kernels[1]).unsqueeze(1) + net.biases[1] + x1
    torch.testing.assert_close(net(x0), x2, rtol=1e-12, atol=0)


def test_cin_shapes_and_first_layer_math() -> None:
    x0 = torch.randn(2, 3, 4, dtype=torch.float64)
    cin = CIN(3, (4, 6, 3), split_half=True).double()
    assert cin.out_dim == (4 + 6) // 2 + 3 and cin(x0).shape == (2, 8)
    assert [c.in_channels for c in cin.convs] == [9, 6, 9]
    assert CIN(3, (4, 6, 3), split_half=False).out_dim == 13
    assert CIN(3, (4, 5), split_half=False).double()(x0).shape == (2, 9)
    one = CIN(3, (5,), split_half=True).double()
    w, bias = one.convs[0].weight[:, :, 0], one.convs[0].bias  # [5, 9], [5]
    z = torch.zeros(2, 5, 4, dtype=torch.float64)
    for h, i, j in itertools.product(range(5), range(3), range(3)):
        z[:, h] += w[h, i * 3 + j] * x0[:, i] * x0[:, j]
    manual = torch.relu(z + bias[None, :, None]).sum(2)
    torch.testing.assert_close(one(x0), manual, rtol=1e-10, atol=1e-12)


def test_self_attention_equals_per_head_loop() -> None:
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    wq, wk, wv = (torch.randn(4, 6, dtype=torch.float64) for _ in range(3))
    out = multi_head_self_attention(x, wq, wk, wv, head_num=2)
    heads = []
    for h in range(2):
        sl = slice(3 * h, 3 * h + 3)
        q, k, v = x @ wq[:, sl], x @ wk[:, sl], x @ wv[:, sl]
        heads.append(torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v)
    torch.testing.assert_close(out, torch.cat(heads, dim=-1), rtol=1e-12, atol=1e-12)


def test_feature_embedding_stacks_lookups() -> None:
    emb = FeatureEmbedding([3, 4], 2, init="normal", init_std=1.0)
    ids = torch.tensor([[2, 0], [1, 3]])
    out = emb(ids)
    assert out.shape == (2, 2, 2)
    assert torch.equal(out[:, 1], emb.tables["C1"].weight[ids[:, 1]])
    with pytest.raises(ConfigError, match="init"):
        FeatureEmbedding([3], 2, init="xavier")
