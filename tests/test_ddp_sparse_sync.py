"""Sparse table gradients under DDP (issue 9's SIGSEGV / heap corruption in 2-rank training).

The crash: DDP's reducer all-reduced each ``nn.Embedding(sparse=True)`` gradient asynchronously from inside
``backward()``; ProcessGroupGloo ran those sparse all-reduces on its worker threads concurrently with
each other and with the rest of backward, on gradients that are views of storage shared with the batch
ids and the other tables' gradients, and corrupted the heap. ``wrap_ddp`` now keeps every sparse table
out of DDP and ``SparseGradSync`` all-reduces them one at a time after backward. These tests pin that
structure and the edge cases of the synchronous all-reduce (empty, uncoalesced, already coalesced,
dense gradients) with torch's sparse invariant checks on.
"""

from __future__ import annotations

import os
import socket
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from mlet_compress import MLETConfig, wrap
from mlet_compress.models import build_model
from mlet_compress.training.ddp import (
    DistInfo,
    SparseGradSync,
    _avoid_detail_debug_crash,
    check_sparse_grad,
    empty_sparse_grad,
    sparse_table_params,
    wrap_ddp,
)

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dlrm(k: int) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("dlrm", vocab_sizes=[7, 30, 200], num_dense=2, embed_dim=4, sparse=True,
                        bottom_mlp=[8], top_mlp=[8])
    if k:
        wrap(model, MLETConfig(inner_dim=k))
    return model


@pytest.fixture
def one_rank_group():
    """A 1-process gloo group (enough to construct DDP), torn down afterwards."""
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        yield DistInfo(0, 1, 0, "gloo")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("k", [0, 4], ids=["single-layer", "mlet"])
def test_sparse_tables_are_kept_out_of_ddps_reducer(one_rank_group, k):
    """No parameter that DDP reduces expects a sparse gradient: all sparse tables go to SparseGradSync."""
    model = _dlrm(k)
    tables = sparse_table_params(model)
    assert len(tables) == 3
    ddp, hook = wrap_ddp(model, torch.device("cpu"), one_rank_group)
    assert isinstance(ddp, nn.parallel.DistributedDataParallel) and isinstance(hook, SparseGradSync)
    assert [id(p) for p in hook.params] == [id(p) for _, p in tables]
    assert {n for n, _ in tables} <= set(ddp.parameters_to_ignore)
    params, expect_sparse = ddp._build_params_for_reducer()
    assert not any(expect_sparse)
    assert not {id(p) for p in params} & {id(p) for _, p in tables}


def test_sparse_table_params_finds_every_kind_of_table():
    m = nn.ModuleDict({
        "emb": nn.Embedding(5, 2, sparse=True), "bag": nn.EmbeddingBag(5, 2, sparse=True),
        "dense_emb": nn.Embedding(5, 2), "lin": nn.Linear(2, 2),
    })
    m["alias"] = m["emb"]  # a shared table is listed once, under its first name
    assert [n for n, _ in sparse_table_params(m)] == ["emb.weight", "bag.weight"]


def test_empty_sparse_grad_is_valid_under_invariant_checks():
    with torch.sparse.check_sparse_tensor_invariants():
        g = empty_sparse_grad(torch.zeros(6, 3, dtype=torch.float64))
        check_sparse_grad(g, torch.zeros(6, 3, dtype=torch.float64), "test")
        assert g.is_coalesced() and g._nnz() == 0 and g._indices().shape == (1, 0) and g._values().shape == (0, 3)
        assert torch.equal((torch.ones(6, 3, dtype=torch.float64) + g), torch.ones(6, 3, dtype=torch.float64))


def test_check_sparse_grad_rejects_out_of_range_and_misshaped_gradients():
    p = torch.zeros(4, 2)
    bad_index = torch.sparse_coo_tensor(torch.tensor([[1, 4]]), torch.ones(2, 2), (4, 2), check_invariants=False)
    with pytest.raises(RuntimeError, match="violates the COO invariants"):
        check_sparse_grad(bad_index, p, "test")
    with pytest.raises(RuntimeError, match="expected a sparse COO tensor"):
        check_sparse_grad(torch.zeros(4, 2), p, "test")
    with pytest.raises(RuntimeError, match="expected a sparse COO tensor"):
        check_sparse_grad(torch.zeros(5, 2).to_sparse(1), p, "test")


def test_detail_debug_level_is_lowered_for_gloo():
    """TORCH_DISTRIBUTED_DEBUG=DETAIL + gloo makes DDP's constructor SIGSEGV; setup() lowers it to INFO."""
    before = dist.get_debug_level()
    try:
        dist.set_debug_level(dist.DebugLevel.DETAIL)
        with pytest.warns(RuntimeWarning, match="TORCH_DISTRIBUTED_DEBUG=DETAIL"):
            _avoid_detail_debug_crash("gloo")
        assert dist.get_debug_level() == dist.DebugLevel.INFO
        dist.set_debug_level(dist.DebugLevel.DETAIL)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _avoid_detail_debug_crash("nccl")  # only gloo is affected
        assert dist.get_debug_level() == dist.DebugLevel.DETAIL
    finally:
        dist.set_debug_level(before)


# --- 2 gloo ranks: the synchronous sparse all-reduce on awkward gradients ----------------------------

N, D = 10, 3


def _grads(rank: int) -> dict[str, object]:
    """Per-case local gradient of rank ``rank`` (None = no gradient), plus the ids a batch looked up."""
    ids = torch.tensor([[3, 1], [3, 8], [0, 3]]) + rank  # duplicated rows, uncoalesced
    vals = torch.arange(6 * D, dtype=torch.float32).reshape(6, D) * (rank + 1)
    emb_grad = torch.sparse_coo_tensor(ids.reshape(1, -1), vals, (N, D))  # indices are a view of ids
    return {
        "uncoalesced": emb_grad,
        "empty_on_rank1": None if rank == 1 else emb_grad,
        "empty_everywhere": None,
        "already_coalesced": emb_grad.coalesce(),
        "dense": emb_grad.to_dense(),
        "zero_nnz": empty_sparse_grad(torch.zeros(N, D)),
    }


def _sync_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.sparse.check_sparse_tensor_invariants.enable()  # every sparse tensor built on the way is validated
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cases = _grads(rank)
        params = {name: nn.Parameter(torch.zeros(N, D)) for name in cases}
        originals = {}
        for name, g in cases.items():
            params[name].grad = g
            originals[name] = (g, g.coalesce().to_dense().clone() if g is not None and g.is_sparse else None)
        SparseGradSync(list(params.values()), DistInfo(rank, world, rank, "gloo"))()
        result = {}
        for name, p in params.items():
            g = p.grad
            check_sparse_grad(g, p, "test")
            orig, orig_dense = originals[name]
            untouched = orig is None or not orig.is_sparse or torch.equal(orig.coalesce().to_dense(), orig_dense)
            result[name] = {"grad": g.to_dense(), "coalesced": g.is_coalesced(), "same_object": g is orig,
                            "input_untouched": bool(untouched)}
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_sparse_grad_sync_two_ranks_awkward_gradients(tmp_path):
    mp.spawn(_sync_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    g0, g1 = _grads(0), _grads(1)
    for name in g0:
        dense = [torch.zeros(N, D) if g is None else (g.to_dense() if g.is_sparse else g) for g in (g0[name], g1[name])]
        expected = (dense[0] + dense[1]) / 2
        for r in (r0, r1):
            assert torch.allclose(r[name]["grad"], expected), name
            assert r[name]["coalesced"], name
            assert not r[name]["same_object"], name  # the all-reduce never writes into the caller's tensor
            assert r[name]["input_untouched"], name
        assert torch.equal(r0[name]["grad"], r1[name]["grad"]), name  # identical on both ranks
