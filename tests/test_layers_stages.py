"""LowRankEmbedding(Bag) and QuantizedEmbedding(Bag): lookups equal the tables they represent."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlet_compress.errors import ConfigError, TargetingError
from mlet_compress.layers.hashed import HashedEmbedding, HashedEmbeddingBag
from mlet_compress.layers.lowrank import LowRankEmbedding, LowRankEmbeddingBag, to_low_rank
from mlet_compress.layers.quantized import QuantizedEmbedding, QuantizedEmbeddingBag, to_quantized
from mlet_compress.ops.quant.fused import fused_available
from mlet_compress.ops.quant import quant_error, search_scale
from mlet_compress.ops.svd import low_rank_factors

N, D = 60, 12


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def bag_inputs(n=N, seed=1):
    """1-D indices with offsets (an empty bag, a repeated index, index 0 = padding) and a 2-D batch."""
    idx = torch.randint(0, n, (25,), generator=gen(seed))
    idx[3] = 0
    idx[4] = idx[5]
    offsets = torch.tensor([0, 4, 4, 11, 20])
    psw = torch.rand(25, generator=gen(seed + 1))
    idx2 = torch.randint(0, n, (4, 3), generator=gen(seed + 2))
    idx2[1, 1] = 0
    return idx, offsets, psw, idx2


BAG_CASES = [  # (mode, padding_idx, include_last_offset, per_sample_weights)
    ("sum", None, False, False), ("mean", None, False, False), ("sum", None, False, True),
    ("sum", 0, False, False), ("mean", 0, False, False), ("sum", 0, False, True),
    ("sum", None, True, False), ("mean", 0, True, False), ("sum", None, True, True),
]


def reference_bag(idx, offsets, table, mode, pad, ilo, psw):
    return F.embedding_bag(idx, table, offsets, mode=mode, padding_idx=pad, include_last_offset=ilo,
                           per_sample_weights=psw)


# ----------------------------------------------------------------------------------------- low rank
def test_lowrank_embedding_lookup_equals_dense():
    emb = LowRankEmbedding(N, D, 4, padding_idx=2)
    w = emb.dense_weight()
    assert not emb.A[2].any()
    for idx in (torch.tensor([1, 2, 59]), torch.randint(0, N, (3, 5), generator=gen())):
        out = emb(idx)
        assert out.shape == (*idx.shape, D)
        torch.testing.assert_close(out, F.embedding(idx, w), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode,pad,ilo,use_psw", BAG_CASES)
def test_lowrank_bag_lookup_equals_dense(mode, pad, ilo, use_psw):
    bag = LowRankEmbeddingBag(N, D, 5, mode=mode, padding_idx=pad, include_last_offset=ilo)
    w = bag.dense_weight()
    idx, offsets, psw, idx2 = bag_inputs()
    psw = psw if use_psw else None
    torch.testing.assert_close(bag(idx, offsets, psw), reference_bag(idx, offsets, w, mode, pad, ilo, psw),
                               rtol=1e-5, atol=1e-6)
    if not ilo:
        p2 = torch.rand(4, 3, generator=gen(9)) if use_psw else None
        torch.testing.assert_close(bag(idx2, per_sample_weights=p2),
                                   F.embedding_bag(idx2, w, mode=mode, padding_idx=pad, per_sample_weights=p2),
                                   rtol=1e-5, atol=1e-6)


def test_from_embedding_uses_truncated_svd_and_keeps_options():
    src = nn.Embedding(N, D, padding_idx=3, sparse=True)
    emb = LowRankEmbedding.from_embedding(src, rank=4)
    ref = low_rank_factors(src.weight.detach(), rank=4)
    torch.testing.assert_close(emb.A.detach(), ref.A)
    torch.testing.assert_close(emb.B.detach(), ref.B)
    assert (emb.padding_idx, emb.sparse, emb.rank, emb.num_buckets) == (3, True, 4, None)
    assert emb.rel_error == pytest.approx(ref.rel_error)
    e = LowRankEmbedding.from_embedding(src, energy=0.5)
    assert 1 <= e.rank <= D
    bag = to_low_rank(nn.EmbeddingBag(N, D, mode="sum", include_last_offset=True), rank=D)
    assert isinstance(bag, LowRankEmbeddingBag) and (bag.mode, bag.include_last_offset) == ("sum", True)


def test_lowrank_of_hashed_table_hashes_indices():
    h = HashedEmbedding(20, D, original_num_embeddings=100)
    emb = to_low_rank(h, rank=3)
    assert (emb.num_buckets, emb.num_embeddings, emb.original_num_embeddings) == (20, 20, 100)
    idx = torch.tensor([0, 19, 20, 57, 99])
    torch.testing.assert_close(emb(idx), F.embedding(idx % 20, emb.dense_weight()), rtol=1e-6, atol=1e-6)
    hb = to_low_rank(HashedEmbeddingBag(20, D, original_num_embeddings=100, mode="sum"), rank=D)
    off = torch.tensor([0, 2])
    torch.testing.assert_close(hb(idx, off), F.embedding_bag(idx % 20, hb.dense_weight(), off, mode="sum"),
                               rtol=1e-5, atol=1e-6)


def test_lowrank_refusals():
    with pytest.raises(ConfigError, match="mode='max'"):
        LowRankEmbeddingBag.from_embedding(nn.EmbeddingBag(N, D, mode="max"), rank=2)
    with pytest.raises(TargetingError, match="max_norm"):
        LowRankEmbedding.from_embedding(nn.Embedding(N, D, max_norm=1.0), rank=2)
    with pytest.raises(ConfigError, match="EmbeddingBag"):
        LowRankEmbeddingBag.from_embedding(nn.Embedding(N, D), rank=2)
    with pytest.raises(ConfigError, match="1..12"):
        LowRankEmbedding(N, D, 13)
    with pytest.raises(ConfigError, match="dim 12"):
        LowRankEmbedding.from_embedding(nn.Embedding(N, D), rank=0)


@pytest.mark.parametrize("bag", [False, True])
def test_lowrank_sparse_gradients(bag):
    if bag:
        m = LowRankEmbeddingBag(N, D, 3, mode="sum", sparse=True)
        out = m(torch.tensor([1, 2, 2, 7]), torch.tensor([0, 2]))
    else:
        m = LowRankEmbedding(N, D, 3, sparse=True)
        out = m(torch.tensor([[1, 2], [2, 7]]))
    out.pow(2).sum().backward()
    assert m.A.grad.is_sparse and not m.B.grad.is_sparse
    dense = m.A.grad.to_dense()
    assert set(dense.abs().sum(1).nonzero().squeeze(1).tolist()) == {1, 2, 7}
    # gradient of A matches autograd through the dense product
    a = m.A.detach().clone().requires_grad_()
    ref_out = (F.embedding_bag(torch.tensor([1, 2, 2, 7]), a @ m.B.detach(), torch.tensor([0, 2]), mode="sum")
               if bag else F.embedding(torch.tensor([[1, 2], [2, 7]]), a @ m.B.detach()))
    ref_out.pow(2).sum().backward()
    torch.testing.assert_close(dense, a.grad, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------- quantized
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("granularity", ["table", "row"])
def test_quantized_embedding_lookup_is_exact(bits, granularity):
    src = nn.Embedding(N, D, padding_idx=0)
    q = QuantizedEmbedding.from_float(src, bits=bits, granularity=granularity)
    w = q.dequantized_weight()
    for idx in (torch.tensor([0, 5, 5, 59]), torch.randint(0, N, (3, 4), generator=gen())):
        assert torch.equal(q(idx), F.embedding(idx, w))
    l2, sqnr = quant_error(src.weight, w)
    assert q.l2_error == pytest.approx(l2, rel=1e-9) and q.sqnr_db == pytest.approx(sqnr, rel=1e-9)
    assert torch.equal(q.scale, search_scale(src.weight, bits=bits, granularity=granularity))
    assert q.qweight.dtype == torch.uint8 and q.qweight.shape == (N, math.ceil(D * {2: 2, 4: 4, 8: 8}[bits] / 8))


@pytest.mark.parametrize("mode,pad,ilo,use_psw", BAG_CASES + [("max", None, False, False), ("max", 0, True, False)])
@pytest.mark.parametrize("bits,granularity", [(8, "table"), (4, "row"), (3, "table")])
def test_quantized_bag_lookup_is_exact(mode, pad, ilo, use_psw, bits, granularity):
    """The pure-torch path (packed layout) pools exactly like torch; the fused default: tests/test_quantized_lookup.py."""
    src = nn.EmbeddingBag(N, D, mode=mode, padding_idx=pad, include_last_offset=ilo)
    q = QuantizedEmbeddingBag.from_float(src, bits=bits, granularity=granularity).use_fused_kernel(False)
    w = q.dequantized_weight()
    idx, offsets, psw, idx2 = bag_inputs()
    psw = psw if use_psw else None
    assert torch.equal(q(idx, offsets, psw), reference_bag(idx, offsets, w, mode, pad, ilo, psw))
    if not ilo:
        assert torch.equal(q(idx2), F.embedding_bag(idx2, w, mode=mode, padding_idx=pad))


def test_quantized_hashed_tables():
    h = HashedEmbeddingBag(20, D, original_num_embeddings=100, mode="mean")
    q = to_quantized(h, bits=8, granularity="row")
    assert isinstance(q, QuantizedEmbeddingBag) and (q.num_buckets, q.original_num_embeddings) == (20, 100)
    idx, off = torch.tensor([0, 19, 20, 57, 99]), torch.tensor([0, 3])
    ref = F.embedding_bag(idx % 20, q.dequantized_weight(), off, mode="mean")
    torch.testing.assert_close(q(idx, off), ref, rtol=1e-6, atol=1e-6)  # fused accumulation (bound: test_quantized_lookup)
    assert torch.equal(q.use_fused_kernel(False)(idx, off), ref)
    qe = to_quantized(HashedEmbedding(20, D, original_num_embeddings=100), bits=4)
    assert torch.equal(qe(idx), F.embedding(idx % 20, qe.dequantized_weight()))


@pytest.mark.parametrize("bag", [False, True])
def test_quantized_low_rank_factor(bag):
    src = (nn.EmbeddingBag(N, D, mode="mean", padding_idx=1) if bag else nn.Embedding(N, D, padding_idx=1))
    lr = to_low_rank(src, rank=5)
    q = to_quantized(lr, bits=8, granularity="row")
    assert q.rank == 5 and q.qweight.shape == (N, 5) and torch.equal(q.B, lr.B.detach())
    w = q.dequantized_weight()
    idx, offsets, psw, idx2 = bag_inputs()
    if bag:
        torch.testing.assert_close(q(idx, offsets), F.embedding_bag(idx, w, offsets, mode="mean", padding_idx=1),
                                   rtol=1e-5, atol=1e-6)
    else:
        torch.testing.assert_close(q(idx2), F.embedding(idx2, w), rtol=1e-6, atol=1e-6)
    # the recorded error is that of the represented table A@B
    l2, sqnr = quant_error(lr.dense_weight(), w)
    assert q.l2_error == pytest.approx(l2, rel=1e-5) and q.sqnr_db == pytest.approx(sqnr, rel=1e-5)
    with pytest.raises(ConfigError, match="mode='max'"):
        QuantizedEmbeddingBag(N, D, rank=3, mode="max")


def test_quantized_state_dict_round_trip():
    q = QuantizedEmbeddingBag.from_float(nn.EmbeddingBag(N, D, mode="sum"), bits=4, granularity="row")
    sd = q.state_dict()
    assert set(sd) == {"qweight", "scale"}
    fresh = QuantizedEmbeddingBag(N, D, bits=4, granularity="row", mode="sum")
    fresh.load_state_dict(sd, strict=True)
    idx, offsets, _, _ = bag_inputs()
    assert torch.equal(fresh(idx, offsets), q(idx, offsets))
    lrq = to_quantized(to_low_rank(nn.Embedding(N, D), rank=3), bits=8)
    assert set(lrq.state_dict()) == {"qweight", "scale", "B"}


def test_quantized_refusals():
    with pytest.raises(TargetingError, match="max_norm"):
        QuantizedEmbedding.from_float(nn.Embedding(N, D, max_norm=2.0))
    with pytest.raises(ConfigError, match="Quantized"):
        QuantizedEmbedding.from_float(nn.EmbeddingBag(N, D))
    with pytest.raises(ConfigError, match="bits"):
        QuantizedEmbedding.from_float(nn.Embedding(N, D), bits=1)
    with pytest.raises(ConfigError, match="grid"):
        QuantizedEmbedding.from_float(nn.Embedding(N, D), grid=0)
    with pytest.raises(ConfigError, match="not an embedding"):
        to_quantized(nn.Linear(3, 3))


@pytest.mark.parametrize("mode,pad,ilo,use_psw", BAG_CASES + [("max", 0, False, False)])
def test_quantized_single_row_bags_are_exact(mode, pad, ilo, use_psw):
    """The bag-of-one shortcut (2-D B×1 input, or offsets == arange) equals torch's pooling bit for bit."""
    q = QuantizedEmbeddingBag.from_float(nn.EmbeddingBag(N, D, mode=mode, padding_idx=pad, include_last_offset=ilo),
                                         bits=8, granularity="row")
    w = q.dequantized_weight()
    idx = torch.randint(0, N, (9,), generator=gen(4))
    idx[2] = 0
    psw = torch.rand(9, generator=gen(5)) if use_psw else None
    offsets = torch.arange(10 if ilo else 9)
    # weighted rows: the kernel rounds fl(fl(w·s)·q), torch fl(fl(s·q)·w): each within 2u of w·s·q (u = 2^-24)
    same = torch.equal if psw is None else lambda a, b: torch.allclose(a, b, rtol=2**-21, atol=0)
    assert same(q(idx, offsets, psw), reference_bag(idx, offsets, w, mode, pad, ilo, psw))
    assert torch.equal(q.use_fused_kernel(False)(idx, offsets, psw), reference_bag(idx, offsets, w, mode, pad, ilo, psw))
    if not ilo:
        p2 = psw.view(9, 1) if use_psw else None
        assert torch.equal(q(idx.view(9, 1), per_sample_weights=p2),
                           F.embedding_bag(idx.view(9, 1), w, mode=mode, padding_idx=pad, per_sample_weights=p2))


@pytest.mark.skipif(not fused_available(8), reason="torch built without FBGEMM quantized ops")
def test_fused_layout_is_the_default():
    """The codes are held once, in FBGEMM's rows (no second copy); use_fused_kernel(False) keeps the packed form."""
    q = QuantizedEmbeddingBag.from_float(nn.EmbeddingBag(N, D, mode="sum"), bits=8, granularity="row")
    assert q.layout == "fused" and set(q.state_dict()) == {"qweight", "scale"}
    assert [tuple(b.shape) for b in q.buffers()] == [(N, D + 8)]
    assert q.use_fused_kernel(False).layout == "packed"
    assert sorted(tuple(b.shape) for b in q.buffers()) == [(N,), (N, D)]
