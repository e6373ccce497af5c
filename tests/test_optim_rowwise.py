"""Row-wise Adagrad (FBGEMM's EXACT_ROWWISE_ADAGRAD in the torch engine) and the training-memory figures."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from mlet_compress import MLETConfig, wrap
from mlet_compress.errors import ConfigError
from mlet_compress.models import build_model
from mlet_compress.train import DataSpec, TrainConfig, train
from mlet_compress.training.optim import RowWiseAdagrad, build_optimizer, memory_bytes, param_groups

LR, EPS = 0.5, 1e-10
IDX = [torch.tensor([1, 3, 1]), torch.tensor([3, 0])]  # row 1 twice in step 1: its gradient is the sum
GRADS = [torch.tensor([[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]]), torch.tensor([[2.0, 2.0], [-1.0, 1.0]])]


def _run(sparse: bool, opt_cls=RowWiseAdagrad, **kw) -> tuple[nn.Embedding, torch.optim.Optimizer]:
    """Two steps with the lookups IDX and the upstream gradients GRADS, from weight 1 everywhere."""
    emb = nn.Embedding(5, 2, sparse=sparse, _weight=torch.ones(5, 2))
    opt = opt_cls(emb.parameters(), lr=LR, eps=EPS, **kw)
    for idx, g in zip(IDX, GRADS):
        opt.zero_grad()
        emb(idx).backward(g)
        opt.step()
    return emb, opt


def _by_hand() -> tuple[torch.Tensor, torch.Tensor]:
    """The EXACT_ROWWISE_ADAGRAD recurrence written out for IDX / GRADS (float64)."""
    w, acc = torch.ones(5, 2, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    step1 = {1: torch.tensor([4.0, 2.0]), 3: torch.tensor([0.5, -1.0])}  # row 1: [1,2] + [3,0]
    step2 = {3: torch.tensor([2.0, 2.0]), 0: torch.tensor([-1.0, 1.0])}
    for grads in (step1, step2):
        for row, g in grads.items():
            acc[row] += (g.double() ** 2).mean()
            w[row] -= LR * g.double() / (acc[row].sqrt() + EPS)
    return w, acc


@pytest.mark.parametrize("sparse", [True, False])
def test_rowwise_update_equals_the_hand_computation(sparse):
    emb, opt = _run(sparse)
    want_w, want_acc = _by_hand()
    acc = opt.state[emb.weight]["sum"]
    assert acc.shape == (5,)  # n accumulators, not n×k
    assert torch.allclose(acc.double(), want_acc, rtol=1e-6, atol=0)
    assert torch.allclose(emb.weight.detach().double(), want_w, rtol=1e-6, atol=1e-7)
    assert torch.equal(emb.weight[[2, 4]].detach(), torch.ones(2, 2))  # untouched rows stay
    # row 1 got one accumulated update: mean([4,2]²) = 10 → w = 1 − 0.5·[4,2]/√10
    assert emb.weight[1].tolist() == pytest.approx([1 - 2 / 10 ** 0.5, 1 - 1 / 10 ** 0.5], rel=1e-6)
    # per-element Adagrad (the bug a row-wise optimizer must not have) gives a different row 3
    per_elem = 1 - LR * torch.tensor([0.5, -1.0]) / torch.tensor([0.5, 1.0])
    assert (emb.weight[3].detach() - per_elem).abs().max() > 0.1


@pytest.mark.parametrize("sparse", [True, False])
def test_non_rowwise_groups_equal_torch_adagrad(sparse):
    ours, opt = _run(sparse, rowwise=False)
    ref, ref_opt = _run(sparse, torch.optim.Adagrad)
    assert torch.allclose(ours.weight, ref.weight, rtol=1e-6, atol=1e-7)
    assert opt.state[ours.weight]["sum"].shape == (5, 2)
    assert torch.allclose(opt.state[ours.weight]["sum"], ref_opt.state[ref.weight]["sum"])


def test_build_optimizer_rowwise_groups_and_state_sizes():
    torch.manual_seed(0)
    m = build_model("dlrm", vocab_sizes=[50, 30], num_dense=2, embed_dim=4, sparse=True, bottom_mlp=[8], top_mlp=[8])
    wrap(m, MLETConfig(inner_dim=16))
    opt = build_optimizer(m, "rowwise_adagrad", 0.1, emb_lr_mult=2.0)
    assert [(g["name"], g["rowwise"], g["lr"]) for g in opt.param_groups] == [
        ("embedding_sparse", True, 0.2), ("embedding_dense", False, 0.2), ("dense", False, 0.1)]
    tables = [p for n, p in m.named_parameters() if n.endswith(".table")]
    projs = [p for n, p in m.named_parameters() if n.endswith(".proj")]
    assert [opt.state[t]["sum"].shape for t in tables] == [(50,), (30,)]
    assert all(opt.state[p]["sum"].shape == p.shape for p in projs)
    mem = memory_bytes(m, opt)
    assert mem["embedding_optimizer_state"] == 4 * (50 + 30 + 2 * 4 * 16)  # rows + the projections' elements
    assert mem["embedding_params"] == 4 * ((50 + 30) * 16 + 2 * 4 * 16)
    full = memory_bytes(m, build_optimizer(m, "adagrad", 0.1))
    assert full["embedding_optimizer_state"] == 4 * ((50 + 30) * 16 + 2 * 4 * 16) + 4 * 4  # + one step scalar each
    # dense-gradient tables are row-wise too, in their own group
    dense_tables = build_model("dlrm", vocab_sizes=[50], num_dense=2, embed_dim=4, sparse=False, bottom_mlp=[8])
    names = [(g["name"], g["rowwise"]) for g in build_optimizer(dense_tables, "rowwise_adagrad", 0.1).param_groups]
    assert names == [("embedding_table", True), ("dense", False)]
    assert [g["name"] for g in param_groups(dense_tables, 0.1)] == ["embedding_dense", "dense"]  # unchanged default
    with pytest.raises(ConfigError, match="lr >= 0"):
        RowWiseAdagrad(m.parameters(), lr=-1.0)


def test_train_reports_embedding_and_optimizer_bytes():
    tiny = {"num_rows": 2000, "num_fields": 3, "min_vocab": 10, "max_vocab": 100, "num_dense": 2}
    base = dict(model="deepfm", dim=4, inner_dim=8, batch_size=64, save_state=False, device="cpu",
                max_steps_per_epoch=3, data=DataSpec(format="synthetic", synthetic=tiny))
    mem = {o: train(TrainConfig(optimizer=o, **base)).metrics["memory_bytes"] for o in ("adagrad", "rowwise_adagrad", "sgd")}
    assert mem["sgd"]["embedding_optimizer_state"] == 0
    full, row = mem["adagrad"], mem["rowwise_adagrad"]
    assert full["embedding_params_training"] == row["embedding_params_training"] == mem["sgd"]["embedding_params_training"]
    assert full["embedding_training"] == full["embedding_params_training"] + full["embedding_optimizer_state"]
    # deepfm: d=4 tables (n×8 factors, 4×8 projections) and 1-dim linear tables (n×1, left single-layer)
    assert full["embedding_optimizer_state"] > full["embedding_params_training"] > 3 * row["embedding_optimizer_state"]
    assert full["embedding_inference"] == row["embedding_inference"] < row["embedding_params_training"]


@pytest.mark.skipif(importlib.util.find_spec("fbgemm_gpu") is None, reason="fbgemm_gpu not installed (torchrec extra)")
def test_rowwise_adagrad_equals_fbgemm_exact_rowwise_adagrad_on_cpu():
    """FBGEMM's CPU training kernel (the one TorchRec's fused EXACT_ROWWISE_ADAGRAD runs) on the same bags."""
    from fbgemm_gpu.split_embedding_configs import EmbOptimType, SparseType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation, PoolingMode
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (ComputeDevice,
                                                                        SplitTableBatchedEmbeddingBagsCodegen)

    n, d, batch, lr, eps = 20, 8, 6, 0.3, 1e-8
    tbe = SplitTableBatchedEmbeddingBagsCodegen(
        [(n, d, EmbeddingLocation.HOST, ComputeDevice.CPU)], optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD,
        learning_rate=lr, eps=eps, pooling_mode=PoolingMode.SUM, weights_precision=SparseType.FP32)
    w0 = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tbe.split_embedding_weights()[0].copy_(w0)
    bag = nn.EmbeddingBag(n, d, mode="sum", sparse=True, _weight=w0.clone())
    opt = RowWiseAdagrad(bag.parameters(), lr=lr, eps=eps)
    for step in range(5):
        g = torch.Generator().manual_seed(step + 1)
        lengths = torch.randint(0, 5, (batch,), generator=g)
        idx = torch.randint(0, n, (int(lengths.sum()),), generator=g)  # duplicates within and across bags
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        target = torch.randn(batch, d, generator=g)
        (tbe(idx, offsets) * target).sum().backward()  # FBGEMM updates in backward
        opt.zero_grad()
        (bag(idx, offsets[:-1]) * target).sum().backward()
        opt.step()
    moved = (bag.weight - w0).abs().max()
    assert moved > 0.1
    assert torch.allclose(bag.weight, tbe.split_embedding_weights()[0], rtol=0, atol=1e-5)
    assert torch.allclose(opt.state[bag.weight]["sum"], tbe.split_optimizer_states()[0][0], rtol=1e-5, atol=1e-6)
