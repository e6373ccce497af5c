"""MLET on TorchRec end to end: wrap a TorchRec DLRM, train it sharded on CPU ranks, collapse, quantize, export.

    torchrun --nproc-per-node 2 examples/torchrec_dlrm.py --out runs/torchrec   # 2 gloo ranks on CPU
    python examples/torchrec_dlrm.py --out runs/torchrec                        # one process (DMP, world size 1)

1. builds ``torchrec.models.dlrm.DLRM`` over one ``EmbeddingBagCollection`` table per field of the data
   (the synthetic default: 200k rows, 10 fields; or ``--data PATH --format criteo|avazu|...``), as the
   library's ``TorchRecDLRM`` (the DLRM of ``mlet-compress train --engine torchrec``: it also takes the
   package's ``(dense, ids)`` batches);
2. ``mc.wrap(model, MLETConfig(inner_dim=k))`` swaps the EBC for an ``MLETEmbeddingBagCollection``;
3. shards it with ``DistributedModelParallel`` (``shard_model``: stock ``EmbeddingBagCollectionSharder``,
   table-wise, fused FBGEMM ``EXACT_ROWWISE_ADAGRAD`` for the n×k tables; the k→d projections and the MLPs
   train data-parallel with torch Adagrad) and prints the sharding plan;
4. writes ``factors.safetensors`` and the collapsed ``model.safetensors`` with ``save_sharded_checkpoint``
   (every rank sends its shards of one table at a time to rank 0, which collapses and streams it to the
   file: rank 0 never holds the whole model) — loadable into the unwrapped DLRM with ``strict=True`` —;
   rank 0 quantizes it (``compress_checkpoint(QuantConfig(bits=8, granularity="row"))``) and exports the
   result as TorchRec's quantized EBC (``export_torchrec_quant``), printing the test AUC at every stage.

Needs the torchrec extra (``scripts/install-torchrec.sh``); see docs/torchrec.md.
"""

from __future__ import annotations

import argparse
import gc
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

import mlet_compress as mc
from mlet_compress.data import DataSpec, load_dataset
from mlet_compress.metrics import roc_auc
from mlet_compress.integrations import torchrec as mtr
from mlet_compress.integrations.torchrec_dlrm import TorchRecDLRM, plan_lines, plan_summary


def build_dlrm(splits, dim: int, inner_dim: int, seed: int) -> TorchRecDLRM:
    """The TorchRec DLRM of the data's fields (one table ``t_<field>`` per field), MLET-wrapped when ``inner_dim``."""
    pre = splits.preprocessor
    torch.manual_seed(seed)
    model = TorchRecDLRM([int(n) for n in pre.vocab_sizes], int(splits.train.dense.shape[1]), dim,
                         field_names=list(pre.field_names), bottom_mlp=[64], top_mlp=[64, 32])
    if inner_dim:
        mc.wrap(model, mc.MLETConfig(inner_dim=inner_dim, init_std=0.25, seed=seed))
    return model


def batch(data, idx: torch.Tensor):
    """``(dense, ids [B, fields], labels)`` of rows ``idx`` (the model turns the ids into a KeyedJaggedTensor)."""
    i = idx.numpy()
    return torch.from_numpy(data.dense[i]), torch.from_numpy(data.sparse[i]), torch.from_numpy(data.labels[i]).float()


@torch.no_grad()
def test_auc(model, splits, batch_size: int = 4096) -> float:
    """Test-split ROC AUC of an unsharded model."""
    model.eval()
    data = splits.test
    scores = [model(*batch(data, idx)[:2]) for idx in torch.arange(len(data.labels)).split(batch_size)]
    return roc_auc(data.labels, torch.cat(scores).numpy())


def train_sharded(model, splits, args, rank: int, world: int):
    """DMP-shard ``model`` and train it; returns the DMP module."""
    dmp = mtr.shard_model(model, args.sharding, "rowwise_adagrad", args.lr, min_partition=4)
    if rank == 0:
        print("\n".join(plan_lines(plan_summary(dmp))), flush=True)  # table: sharding type (kernel) on ranks
    dense = [p for n, p in dmp.named_parameters() if "embedding_bags" not in n]  # projections + MLPs (DDP)
    opt = torch.optim.Adagrad(dense, lr=args.lr)
    data = splits.train
    n = len(data.labels)
    for epoch in range(args.epochs):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed + epoch))
        for step, gidx in enumerate(perm[: n - n % args.batch_size].split(args.batch_size)):
            dense_x, ids, y = batch(data, gidx.chunk(world)[rank])  # each rank: its part of the batch
            loss = F.binary_cross_entropy_with_logits(dmp(dense_x, ids), y)
            opt.zero_grad()
            loss.backward()  # FBGEMM updates the sharded n×k tables here (fused row-wise Adagrad)
            opt.step()
            if rank == 0 and step % 100 == 0:
                print(f"epoch {epoch + 1} step {step}: loss {loss.item():.4f} (rank 0's part)", flush=True)
    return dmp


def finish(splits, args) -> None:
    """Rank 0, after the checkpoints are written: quantize, export; print the test AUC of each stage."""
    out = Path(args.out)
    mlet = mc.load_model_state(build_dlrm(splits, args.dim, args.mlet_k, args.seed), out / "factors.safetensors")
    print(f"test AUC, MLET (trained sharded):         {test_auc(mlet, splits):.4f}")
    original = mc.load_model_state(build_dlrm(splits, args.dim, 0, args.seed), out / "model.safetensors")  # strict
    print(f"test AUC, collapsed, in the original DLRM: {test_auc(original, splits):.4f}")
    rep = mc.compress_checkpoint(out / "model.safetensors", mc.QuantConfig(bits=8, granularity="row"), force=True)
    res = mtr.export_torchrec_quant(rep.output, force=True)
    original.sparse_arch.embedding_bag_collection = mtr.load_torchrec_quant(res.path)  # int8 FBGEMM tables
    print(f"test AUC, int8 TorchRec quantized EBC:     {test_auc(original, splits):.4f}")
    worst = max(t["fp16_scale_error"] for t in res.tables)
    print(f"wrote {out}/factors.safetensors, model.safetensors, {rep.output.name}, {res.path.name} "
          f"(largest fp16 scale error {worst:.1e})")


def main() -> None:
    """Parse flags, start (or join) the process group, train, and let rank 0 finish."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="data file/folder (default: the synthetic data)")
    ap.add_argument("--format", default="synthetic")
    ap.add_argument("--rows", type=int, default=None, help="synthetic rows (default 200,000)")
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--mlet-k", type=int, default=64)
    ap.add_argument("--sharding", default="table_wise", help="table_wise, column_wise or data_parallel on CPU")
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--batch-size", type=int, default=512, help="global batch (split across ranks)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/torchrec")
    args = ap.parse_args()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29512")
    dist.init_process_group("gloo", rank=int(os.environ.get("RANK", 0)), world_size=int(os.environ.get("WORLD_SIZE", 1)))
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        spec = DataSpec(path=args.data, format=args.format,
                        synthetic={"num_rows": args.rows} if args.rows else None)
        splits = load_dataset(spec)  # every rank reads the same split
        model = build_dlrm(splits, args.dim, args.mlet_k, args.seed)
        skel = mtr.meta_copy(model)  # the model's structure (no data), taken before DMP shards it in place
        dmp = train_sharded(model, splits, args, rank, world)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        # collectives: every rank sends its shards of one table at a time; rank 0 collapses and writes
        mtr.save_sharded_checkpoint(dmp, out / "factors.safetensors", skel, collapse_mlet=False)
        mtr.save_sharded_checkpoint(dmp, out / "model.safetensors", skel)
        del dmp, model  # DMP holds the process group: free it so that destroy_process_group ends gloo's threads
        gc.collect()  # (a gloo thread still alive at interpreter exit can abort the process: docs/torchrec.md)
        if rank == 0:
            finish(splits, args)
        dist.barrier()
    finally:
        dist.destroy_process_group()
        gc.collect()


if __name__ == "__main__":
    main()
