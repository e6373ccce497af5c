"""The default quantized lookup (FBGEMM's fused rows, the only in-memory copy) against the pure-torch path.

Single-row lookups are bit-identical in both layouts; larger sum/mean bags differ by the kernel's fused
accumulation, bounded below by (2L + 5)·2^-24·Σ|w_i|·s_i·2^(c−1) per bag of L rows (each pooled row costs
≤ 2 roundings of terms no larger than |w|·s·2^(c−1), plus the final scale/mean multiply).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlet_compress.layers.quantized import QuantizedEmbedding, QuantizedEmbeddingBag
from mlet_compress.ops.quant import container_bits, pack_rows, packed_cols, quantize, unpack_rows
from mlet_compress.ops.quant.fused import fused_available, fused_cols, header_bytes

N, D = 300, 13  # an odd d: 4- and 2-bit rows end in a padded byte
needs_kernel = pytest.mark.skipif(not fused_available(8), reason="torch built without FBGEMM row-wise kernels")
pytestmark = needs_kernel


def gen(seed):
    return torch.Generator().manual_seed(seed)


def quantized_bag(bits, granularity, scale_dtype="fp32", mode="sum", ilo=False, seed=0):
    src = nn.EmbeddingBag(N, D, mode=mode, include_last_offset=ilo)
    with torch.no_grad():
        src.weight.copy_(torch.randn(N, D, generator=gen(seed)) * torch.rand(N, 1, generator=gen(seed + 1)) * 3)
    return QuantizedEmbeddingBag.from_float(src, bits=bits, granularity=granularity, scale_dtype=scale_dtype)


def packed_twin(q):
    twin = type(q)(q.num_embeddings, q.embedding_dim, bits=q.bits, granularity=q.granularity,
                   scale_dtype=q.scale_dtype, **({"mode": q.mode, "include_last_offset": q.include_last_offset}
                                                 if isinstance(q, QuantizedEmbeddingBag) else {}))
    twin.use_fused_kernel(False)
    twin.load_state_dict(q.state_dict())
    return twin


def bags(seed=3, n_bags=40, max_len=9, ilo=False):
    g = gen(seed)
    lengths = torch.randint(0, max_len + 1, (n_bags,), generator=g)
    lengths[0] = 0  # an empty bag
    idx = torch.randint(0, N, (int(lengths.sum()),), generator=g)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    return idx, (offsets if ilo else offsets[:-1]), lengths


def fused_bound(q, idx, lengths, psw):
    """Per-bag bound (2L + 5)·2^-24·Σ|w_i|·s_i·2^(c−1) on |fused − exact| (divided by L for mean bags)."""
    s = q.scale.to(torch.float64).expand(N)[idx]
    w = torch.ones_like(s) if psw is None else psw.to(torch.float64).abs()
    per_row = w * s * float(1 << (container_bits(q.bits) - 1))
    seg = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    total = torch.zeros(len(lengths), dtype=torch.float64).index_add_(0, seg, per_row)
    bound = (2 * lengths.to(torch.float64) + 5) * 2.0**-24 * total
    if q.mode == "mean":
        bound = bound / lengths.clamp_min(1)
    return bound.unsqueeze(1)


CONFIGS = [(b, g, sd) for b in (2, 3, 4, 5, 8) for g in ("table", "row") for sd in ("fp32", "fp16")]


@pytest.mark.parametrize("bits,granularity,scale_dtype", CONFIGS)
@pytest.mark.parametrize("mode,ilo,use_psw", [("sum", False, False), ("sum", True, True), ("mean", False, False)])
def test_fused_bags_within_the_accumulation_bound_of_the_exact_path(bits, granularity, scale_dtype, mode, ilo, use_psw):
    q = quantized_bag(bits, granularity, scale_dtype, mode, ilo)
    assert q.layout == "fused"
    exact = packed_twin(q)
    idx, offsets, lengths = bags(ilo=ilo)
    psw = torch.rand(idx.numel(), generator=gen(7)) * 2 - 0.5 if use_psw else None
    out, ref = q(idx, offsets, psw), exact(idx, offsets, psw)
    w64 = exact.dequantized_weight().double()
    ref64 = F.embedding_bag(idx, w64, offsets, mode=mode, include_last_offset=ilo,
                            per_sample_weights=None if psw is None else psw.double())
    assert torch.equal(ref, F.embedding_bag(idx, exact.dequantized_weight(), offsets, mode=mode,
                                            include_last_offset=ilo, per_sample_weights=psw))
    bound = fused_bound(q, idx, lengths, psw)
    assert bool(((out.double() - ref64).abs() <= bound).all())
    assert bool(((ref.double() - ref64).abs() <= bound).all())  # the bound is no tighter than torch's own sum
    assert not out[0].any()  # the empty bag


@pytest.mark.parametrize("bits,granularity,scale_dtype", CONFIGS)
def test_single_rows_are_bit_identical_in_both_layouts(bits, granularity, scale_dtype):
    q = quantized_bag(bits, granularity, scale_dtype)
    exact = packed_twin(q)
    w = q.dequantized_weight()
    assert torch.equal(w, exact.dequantized_weight())
    idx = torch.randint(0, N, (50,), generator=gen(5))
    assert torch.equal(q(idx, torch.arange(50)), w[idx])
    assert torch.equal(q(idx.view(25, 2)[:, :1]), w[idx[::2]])  # 2-D input (non-contiguous)
    emb = QuantizedEmbedding(N, D, bits=bits, granularity=granularity, scale_dtype=scale_dtype)
    emb.load_state_dict(q.state_dict())
    assert emb.layout == "fused" and torch.equal(emb(idx.view(5, 10)), F.embedding(idx.view(5, 10), w))
    assert torch.equal(emb(torch.tensor([], dtype=torch.long)), torch.zeros(0, D))
    for n in (0, 1):  # header reads of 0 / 1 gathered rows (unaligned slices), on the pure-torch path
        assert torch.equal(q.dequantize_rows(idx[:n]), w[idx[:n]])


@pytest.mark.parametrize("bits,granularity,scale_dtype", CONFIGS)
def test_state_dict_is_the_checkpoint_format(bits, granularity, scale_dtype):
    src = nn.EmbeddingBag(N, D, mode="sum")
    q = QuantizedEmbeddingBag.from_float(src, bits=bits, granularity=granularity, scale_dtype=scale_dtype)
    sd = q.state_dict()
    assert list(sd) == ["qweight", "scale"]
    want_dtype = torch.float16 if scale_dtype == "fp16" else torch.float32
    assert sd["scale"].dtype == want_dtype and sd["scale"].shape == (() if granularity == "table" else (N,))
    codes = quantize(src.weight.detach(), sd["scale"].float(), bits)  # codes of the rounded scale
    assert torch.equal(sd["qweight"], pack_rows(codes, bits)) and sd["qweight"].shape == (N, packed_cols(D, bits))
    assert torch.equal(unpack_rows(q.qweight, bits, D), codes)
    # the only in-memory copy of the codes: FBGEMM rows; a per-row scale is kept beside them only when the
    # 4/2-bit fp16 header cannot hold it (fp32 scales), a per-table one always (4 bytes)
    held = sum(b.numel() * b.element_size() for b in q.buffers())
    outside = 4 * N if (container_bits(bits) < 8 and granularity == "row" and scale_dtype == "fp32") else 0
    table = 2 if scale_dtype == "fp16" else 4
    assert held == N * fused_cols(D, bits) + outside + (table if granularity == "table" else 0)
    assert fused_cols(D, bits) == packed_cols(D, bits) + header_bytes(bits)


def test_layout_switch_and_loading_keep_the_codes():
    q = quantized_bag(4, "row")
    sd = {k: v.clone() for k, v in q.state_dict().items()}
    idx, offsets, _ = bags()
    out = q(idx, offsets)
    assert q.use_fused_kernel(False).layout == "packed"
    assert all(torch.equal(a, b) for a, b in zip(q.state_dict().values(), sd.values()))
    assert q.use_fused_kernel(True).layout == "fused" and torch.equal(q(idx, offsets), out)
    other = quantized_bag(4, "row", seed=11)
    q.load_state_dict(other.state_dict())
    assert torch.equal(q(idx, offsets), other(idx, offsets))
    with pytest.raises(AttributeError):
        q.qweight = torch.zeros(1)  # read-only: load_state_dict / load_codes replace the codes


def test_load_refuses_a_scale_of_another_dtype():
    q16 = quantized_bag(8, "row", "fp16")
    q32 = QuantizedEmbeddingBag(N, D, bits=8, granularity="row", mode="sum")
    with pytest.raises(RuntimeError, match="scale_dtype='fp16'"):
        q32.load_state_dict(q16.state_dict())
    with pytest.raises(RuntimeError, match="Missing key"):
        q32.load_state_dict({"qweight": q16.qweight})


def test_kernel_path_keeps_torch_input_checks():
    q = quantized_bag(8, "table")
    with pytest.raises(IndexError):
        q(torch.tensor([0, N]), torch.tensor([0]))
    exact = packed_twin(q)
    for bad in (torch.tensor([1, 2]), torch.tensor([0, 5])):  # the same exception type on both paths
        with pytest.raises(RuntimeError, match="offsets"):
            q(torch.tensor([0, 1, 2]), bad)
        with pytest.raises(RuntimeError, match="offsets"):
            exact(torch.tensor([0, 1, 2]), bad)
    with pytest.raises(IndexError):
        exact(torch.tensor([0, N]), torch.tensor([0]))
    out = q(torch.tensor([1, 2], dtype=torch.int32), torch.tensor([0, 1], dtype=torch.int32))
    assert torch.equal(out, q.dequantized_weight()[[1, 2]])


def test_padding_and_max_take_the_exact_path():
    src = nn.EmbeddingBag(N, D, mode="sum", padding_idx=4)
    q = QuantizedEmbeddingBag.from_float(src, bits=4, granularity="row")
    idx, offsets, _ = bags()
    idx[:5] = 4
    assert torch.equal(q(idx, offsets), F.embedding_bag(idx, q.dequantized_weight(), offsets, mode="sum", padding_idx=4))
    qm = QuantizedEmbeddingBag.from_float(nn.EmbeddingBag(N, D, mode="max"), bits=8)
    assert torch.equal(qm(idx, offsets), F.embedding_bag(idx, qm.dequantized_weight(), offsets, mode="max"))
