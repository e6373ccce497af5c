"""DistributedDataParallel on CPU: 2 gloo ranks train a few steps and end with identical parameters.

Each rank is a spawned process that sets the variables ``torchrun`` would set and calls the library's
``train``, so the same code path as ``torchrun --nproc-per-node 2 -m mlet_compress.cli.app train`` runs.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mlet_compress.train import DataSpec, TrainConfig, train
from mlet_compress.training.ddp import distributed_session, is_main_process

TINY = {"num_rows": 3000, "num_fields": 4, "min_vocab": 10, "max_vocab": 300, "num_dense": 2}


def _cfg(k: int) -> TrainConfig:
    # global batch 64 = 2 ranks x 32; SGD with sparse table gradients (SparseGradSync all-reduces them sparse)
    return TrainConfig(model="dlrm", dim=4, inner_dim=k, batch_size=64, max_steps_per_epoch=6, epochs=1,
                       device="cpu", data=DataSpec(format="synthetic", synthetic=TINY),
                       model_kwargs={"bottom_mlp": [8], "top_mlp": [16]})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, tmp: str, k: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    with distributed_session():  # as the CLI does: the group train() joins is left on the way out
        res = train(_cfg(k), out=os.path.join(tmp, "run"))
        torch.save({"state": res.model.state_dict(), "metrics": res.metrics["test"],
                    "sparse": bool(next(m for m in res.model.modules() if isinstance(m, torch.nn.Embedding)).sparse)},
                   os.path.join(tmp, f"rank{rank}.pt"))
        assert dist.is_initialized()
    assert not dist.is_initialized()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
@pytest.mark.parametrize("k", [0, 8], ids=["single-layer", "mlet"])
def test_two_gloo_ranks_end_with_identical_parameters(tmp_path, k):
    """Sparse tables (k=0: nn.Embedding, k=8: MLET) are all-reduced by SparseGradSync, the rest by DDP."""
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), k), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["sparse"] and r1["sparse"]  # tables kept sparse gradients under gloo
    assert r0["state"].keys() == r1["state"].keys()
    for key in r0["state"]:
        assert torch.equal(r0["state"][key], r1["state"][key]), key
    assert r0["metrics"] == r1["metrics"]
    assert (tmp_path / "run" / "model.safetensors").is_file()  # rank 0 wrote the outputs

    # The global batch is split across ranks, so 2 ranks take the same steps as 1 process (up to
    # float summation order in the all-reduce).
    single = train(_cfg(k)).model.state_dict()
    for key, value in single.items():
        assert torch.allclose(value, r0["state"][key], atol=1e-5, rtol=1e-4), key


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_distributed_session_leaves_the_group_after_an_error():
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            with distributed_session():
                assert is_main_process()
                raise RuntimeError("boom")
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
