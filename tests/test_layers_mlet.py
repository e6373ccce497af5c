"""MLET layers: outputs equal the reference math for every option; paper Eq. 2; cross-category learning."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlet_compress import MLETConfig, MLETEmbedding, MLETEmbeddingBag, collapse, wrap
from mlet_compress.errors import TargetingError


def _ref_weight(m):
    return m.table.detach().double() @ m.proj.detach().double().T


@pytest.mark.parametrize("shape", [(7,), (3, 5)])
@pytest.mark.parametrize("padding_idx", [None, 2])
def test_embedding_matches_reference(shape, padding_idx):
    torch.manual_seed(0)
    m = MLETEmbedding(20, 6, 12, padding_idx=padding_idx).double()
    idx = torch.randint(0, 20, shape)
    idx.view(-1)[0] = 2
    out = m(idx)
    ref = F.embedding(idx, _ref_weight(m))
    assert out.shape == (*shape, 6)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    if padding_idx is not None:
        assert torch.count_nonzero(m.table[padding_idx]) == 0
        assert torch.count_nonzero(out.reshape(-1, 6)[0]) == 0


def test_padding_row_gets_no_gradient():
    m = MLETEmbedding(10, 4, 8, padding_idx=0)
    m(torch.tensor([0, 0, 3])).sum().backward()
    assert torch.count_nonzero(m.table.grad[0]) == 0
    assert torch.count_nonzero(m.table.grad[3]) > 0


BAG_CASES = [
    dict(mode="sum"),
    dict(mode="mean"),
    dict(mode="sum", psw=True),
    dict(mode="sum", padding_idx=1),
    dict(mode="mean", padding_idx=1),
    dict(mode="sum", include_last_offset=True),
    dict(mode="mean", include_last_offset=True, padding_idx=1),
]


@pytest.mark.parametrize("case", BAG_CASES)
def test_bag_matches_reference(case):
    torch.manual_seed(1)
    pad = case.get("padding_idx")
    ilo = case.get("include_last_offset", False)
    m = MLETEmbeddingBag(15, 5, 9, mode=case["mode"], padding_idx=pad, include_last_offset=ilo).double()
    idx = torch.tensor([1, 2, 4, 1, 1, 7, 3, 9, 14])
    offsets = torch.tensor([0, 3, 5, 5, 9]) if ilo else torch.tensor([0, 3, 5, 5])
    psw = torch.rand(len(idx), dtype=torch.float64) if case.get("psw") else None
    out = m(idx, offsets, per_sample_weights=psw)
    ref = F.embedding_bag(idx, _ref_weight(m), offsets, mode=case["mode"], per_sample_weights=psw,
                          include_last_offset=ilo, padding_idx=pad)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_bag_2d_input():
    torch.manual_seed(2)
    m = MLETEmbeddingBag(15, 5, 9, mode="mean").double()
    idx = torch.randint(0, 15, (4, 3))
    torch.testing.assert_close(m(idx), F.embedding_bag(idx, _ref_weight(m), mode="mean"), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("opt_name", ["sgd", "adagrad", "sparseadam"])
def test_sparse_gradients_and_optimizers(opt_name):
    torch.manual_seed(3)
    m = MLETEmbedding(50, 4, 8, sparse=True)
    out = m(torch.tensor([1, 5, 5]))
    out.pow(2).sum().backward()
    assert m.table.grad.is_sparse
    assert set(m.table.grad.coalesce().indices()[0].tolist()) == {1, 5}
    assert not m.proj.grad.is_sparse
    before = m.table.detach().clone()
    if opt_name == "sgd":
        opts = [torch.optim.SGD(m.parameters(), lr=0.1)]
    elif opt_name == "adagrad":
        opts = [torch.optim.Adagrad(m.parameters(), lr=0.1)]
    else:
        opts = [torch.optim.SparseAdam([m.table], lr=0.1), torch.optim.Adam([m.proj], lr=0.1)]
    for o in opts:
        o.step()
    changed = (m.table.detach() != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [1, 5]


def test_bag_sparse_gradient():
    m = MLETEmbeddingBag(50, 4, 8, mode="sum", sparse=True)
    m(torch.tensor([[1, 2], [3, 4]])).sum().backward()
    assert m.table.grad.is_sparse


def test_paper_eq2_update_is_second_order_accurate():
    """W(t+1) - W(t) = -eta (W1 W1^T G + G W2^T W2) + O(eta^2), paper Eq. 2, in our row-major layout.

    Our table is n×k (= W2^T), proj is d×k (= W1) and W = table @ proj.T is n×d (the paper's W^T).
    Transposing Eq. 2 with G = dL/dW (n×d): dW = -eta (table table^T G + G proj proj^T).
    """
    torch.manual_seed(4)
    n, d, k = 12, 3, 5
    base = MLETEmbedding(n, d, k).double()
    idx = torch.tensor([0, 3, 3, 7])
    target = torch.randn(len(idx), d, dtype=torch.float64)

    def loss_fn(weight_lookup):
        return ((weight_lookup - target) ** 2).sum()

    W0 = _ref_weight(base).detach()
    Wv = W0.clone().requires_grad_(True)
    loss_fn(F.embedding(idx, Wv)).backward()
    G = Wv.grad
    T, P = base.table.detach().double(), base.proj.detach().double()
    predicted = -(T @ T.T @ G + G @ P @ P.T)
    residuals = []
    for eta in (1e-2, 1e-3, 1e-4):
        m = MLETEmbedding(n, d, k).double()
        m.load_state_dict(base.state_dict())
        opt = torch.optim.SGD(m.parameters(), lr=eta)
        loss_fn(m(idx)).backward()
        opt.step()
        dW = _ref_weight(m) - W0
        residuals.append(float((dW - eta * predicted).norm()))
    # residual is O(eta^2): each 10x smaller step shrinks it ~100x
    assert residuals[1] / residuals[0] < 0.015 and residuals[2] / residuals[1] < 0.015
    # and at small eta the first-order term explains the update to ~eta relative accuracy
    assert residuals[2] < 1e-2 * float((1e-4 * predicted).norm())


def test_cross_category_learning():
    torch.manual_seed(5)
    n = 30
    plain = nn.Embedding(n, 4)
    mlet = MLETEmbedding(n, 4, 16)
    idx = torch.tensor([7])
    for mod, weight_fn in ((plain, lambda: plain.weight.detach().clone()), (mlet, lambda: _ref_weight(mlet).detach())):
        w0 = weight_fn()
        torch.optim.SGD(mod.parameters(), lr=0.1).zero_grad()
        mod(idx).sum().backward()
        with torch.no_grad():
            for p in mod.parameters():
                p -= 0.1 * p.grad
        changed = (weight_fn() != w0).any(dim=1)
        if mod is plain:
            assert changed.nonzero().flatten().tolist() == [7]
        else:
            assert bool(changed.all()), "every row of the MLET effective table moves"


def test_refuses_max_mode_and_max_norm():
    m = nn.Sequential(nn.EmbeddingBag(10, 4, mode="max"))
    with pytest.raises(TargetingError, match=r"'0'.*mode='max'"):
        wrap(m, MLETConfig(inner_dim=8))
    m = nn.ModuleDict({"user": nn.Embedding(10, 4, max_norm=1.0)})
    with pytest.raises(TargetingError, match=r"'user'.*max_norm"):
        wrap(m, MLETConfig(inner_dim=8))


def test_init_statistics():
    torch.manual_seed(6)
    model = nn.ModuleDict({"t": nn.Embedding(4000, 8)})
    with torch.no_grad():
        model["t"].weight.normal_(0, 0.05)
    wrap(model, MLETConfig(inner_dim=32, init_std=0.5))
    m = model["t"]
    assert abs(float(m.proj.detach().std()) - 0.5) < 0.1
    assert abs(float(m.table.detach().std()) - 0.05) < 0.005  # "match": the replaced table's scale


def test_preserve_function_is_exact():
    torch.manual_seed(7)
    model = nn.ModuleDict({"t": nn.Embedding(100, 8), "b": nn.EmbeddingBag(50, 4, mode="mean")})
    idx = torch.randint(0, 50, (6, 3))
    before = (model["t"](idx).detach(), model["b"](idx).detach())
    wrap(model, MLETConfig(inner_dim=16, preserve_function=True))
    torch.testing.assert_close(model["t"](idx), before[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model["b"](idx), before[1], rtol=1e-5, atol=1e-6)
    collapse(model)
    torch.testing.assert_close(model["t"](idx), before[0], rtol=1e-5, atol=1e-6)


def test_lookup_fields_batches_projections_exactly():
    from mlet_compress.layers.mlet import lookup_fields

    torch.manual_seed(8)
    tabs = [MLETEmbedding(40, 4, 8, padding_idx=0, sparse=True, num_buckets=None if i else 40).double() for i in range(4)]
    cols = [torch.randint(0, 40, (7,)) for _ in range(4)]
    cols[0][0] = 0
    batched = lookup_fields(tabs, cols)
    looped = torch.stack([m(c) for m, c in zip(tabs, cols)], dim=1)
    torch.testing.assert_close(batched, looped, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(batched)
    (batched * g).sum().backward()
    grads = [(m.table.grad.to_dense().clone(), m.proj.grad.clone()) for m in tabs]
    for m in tabs:
        m.zero_grad(set_to_none=True)
    (looped.detach() * 0 + torch.stack([m(c) for m, c in zip(tabs, cols)], dim=1) * g).sum().backward()
    for (tg, pg), m in zip(grads, tabs):
        torch.testing.assert_close(tg, m.table.grad.to_dense(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(pg, m.proj.grad, rtol=1e-12, atol=1e-12)
    mixed = [MLETEmbedding(40, 4, 8), nn.Embedding(40, 4)]
    assert lookup_fields(mixed, cols[:2]).shape == (7, 2, 4)
