"""TorchRec engine: MLET-EBC numerics, DLRM, collapse, 2-rank DMP on CPU, FBGEMM quantized export."""

import gc
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("torchrec", reason="TorchRec not installed: scripts/install-torchrec.sh (see docs/torchrec.md)")

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torchrec.models.dlrm import DLRM  # noqa: E402

from mlet_compress import QuantizedEmbeddingBag  # noqa: E402
from mlet_compress.ops.quant import unpack_rows  # noqa: E402
from mlet_compress.errors import ConfigError, NumericalError, TargetingError  # noqa: E402
from mlet_compress.integrations import torchrec as mtr  # noqa: E402
from mlet_compress.integrations.torchrec import (  # noqa: E402
    EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, MLETEmbeddingBagCollection, PoolingType, QuantTable)

D, N, B, LR, STEPS = 4, 30, 6, 0.3, 3


def _configs(pooling=PoolingType.SUM, d=D):
    return [EmbeddingBagConfig(name="t0", embedding_dim=d, num_embeddings=N, feature_names=["f0", "f0b"], pooling=pooling),
            EmbeddingBagConfig(name="t1", embedding_dim=d, num_embeddings=N + 7, feature_names=["f1"], pooling=pooling),
            EmbeddingBagConfig(name="t2", embedding_dim=d, num_embeddings=N - 5, feature_names=["f2"], pooling=pooling)]


def _bags(configs, batch, seed, max_len=4):
    """Per feature, one index tensor per sample (lengths 0..max_len, so empty bags occur)."""
    g = torch.Generator().manual_seed(seed)
    return {f: [torch.randint(0, c.num_embeddings, (int(torch.randint(0, max_len + 1, (1,), generator=g)),), generator=g)
                for _ in range(batch)] for c in configs for f in c.feature_names}


def _kjt(bags, lo=0, hi=None, weights=None):
    keys = list(bags)
    vals = [v for k in keys for v in bags[k][lo:hi]]
    lengths = torch.tensor([v.numel() for v in vals])
    w = None if weights is None else torch.cat([weights[k][lo:hi] for k in keys])
    return KeyedJaggedTensor.from_lengths_sync(keys, torch.cat(vals), lengths, weights=w)


def _reference(m, bags, weights=None, broken=False):
    """Explicit per-row computation: project every looked-up row, then pool it (the definition of MLET)."""
    out = {}
    for c in m.embedding_bag_configs():
        w = m.effective_weight(c.name).double()  # T @ P.T (or the plain table)
        t, p = m.inner.embedding_bags[c.name].weight.double(), m.projs[c.name].double() if c.name in m.projs else None
        for f in c.feature_names:
            rows = []
            for i, idx in enumerate(bags[f]):
                idx = idx[:-1] if broken else idx  # an off-by-one in the offsets
                r = t[idx] @ p.T if p is not None else w[idx]
                if weights is not None:
                    r = r * weights[f][sum(v.numel() for v in bags[f][:i]):][:idx.numel()].double().unsqueeze(1)
                pooled = r.sum(0) if c.pooling == PoolingType.SUM or idx.numel() == 0 else r.mean(0)
                rows.append(pooled)
            out[f] = torch.stack(rows)
    return out


@pytest.mark.parametrize("case", ["sum", "mean", "weighted"])
@pytest.mark.parametrize("layout", ["mixed", "uniform"])
def test_forward_equals_per_row_projection(case, layout):
    """Per-key matmuls (mixed k, a single-layer table) and the batched path (every table MLET, one k)."""
    pooling = PoolingType.MEAN if case == "mean" else PoolingType.SUM
    cfgs = _configs(pooling)
    opts = dict(inner_dims={"t1": 6}, select=lambda t: t != "t2") if layout == "mixed" else {}
    m = MLETEmbeddingBagCollection(cfgs, inner_dim=16, is_weighted=case == "weighted", table_std=1.0, seed=1, **opts)
    assert (m._uniform is None) == (layout == "mixed")
    bags = _bags(cfgs, 9, seed=2)
    assert any(v.numel() == 0 for vs in bags.values() for v in vs) and any(v.numel() > 2 for vs in bags.values() for v in vs)
    weights = None
    if case == "weighted":
        g = torch.Generator().manual_seed(3)
        weights = {f: torch.rand(sum(v.numel() for v in vs), generator=g) + 0.5 for f, vs in bags.items()}
    kt = m(_kjt(bags, weights=weights))
    assert kt.keys() == ["f0", "f0b", "f1", "f2"] and kt.length_per_key() == [D] * 4
    got, want, bad = kt.to_dict(), _reference(m, bags, weights), _reference(m, bags, weights, broken=True)
    for f in want:
        assert torch.allclose(got[f].double(), want[f], atol=1e-5, rtol=0), f
        assert (got[f].double() - bad[f]).abs().max() > 1e-2  # the tolerance catches an off-by-one
    if layout == "mixed":
        assert m.inner_dims == {"t0": 16, "t1": 6, "t2": None}
        assert tuple(m.tables["t1"].shape) == (N + 7, 6) and tuple(m.projections["t0"].shape) == (D, 16)


def _dlrm(ebc):
    torch.manual_seed(0)
    return DLRM(embedding_bag_collection=ebc, dense_in_features=3, dense_arch_layer_sizes=[8, D], over_arch_layer_sizes=[8, 1])


def _batch(step, lo, hi, cfgs):
    g = torch.Generator().manual_seed(100 + step)
    dense, y = torch.randn(2 * B, 3, generator=g), torch.randint(0, 2, (2 * B,), generator=g).float()
    return dense[lo:hi], _kjt(_bags(cfgs, 2 * B, seed=step), lo, hi), y[lo:hi]


def test_dlrm_accepts_mlet_ebc_and_trains():
    from torchrec.modules.embedding_modules import EmbeddingBagCollectionInterface

    cfgs = _configs()
    model = _dlrm(MLETEmbeddingBagCollection(cfgs, inner_dim=16, seed=0))
    assert isinstance(model.sparse_arch.embedding_bag_collection, EmbeddingBagCollectionInterface)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adagrad(model.parameters(), lr=0.1)
    dense, kjt, y = _batch(0, 0, 2 * B, cfgs)
    losses = []
    for _ in range(6):
        loss = F.binary_cross_entropy_with_logits(model(dense, kjt).squeeze(1), y)
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert {"sparse_arch.embedding_bag_collection.projs.t0", "sparse_arch.embedding_bag_collection.inner.embedding_bags.t0.weight"} <= moved


def test_collapse_equals_mlet_and_loads_into_original_model_strictly():
    cfgs = _configs()
    original = _dlrm(EmbeddingBagCollection(cfgs))
    original_keys = list(original.state_dict())
    model = _dlrm(EmbeddingBagCollection(cfgs))
    wrapped = mtr.wrap_ebcs_(model, inner_dim=16, inner_dims=lambda t: 8 if t == "t1" else None, seed=0,
                             select=lambda t: t != "t2")
    assert list(wrapped) == ["sparse_arch.embedding_bag_collection"]
    desc = mtr.describe_tables(model)
    sd = model.state_dict()
    assert desc["t1"]["inner_dim"] == 8 and desc["t1"]["table_key"] in sd and sd[desc["t1"]["proj_key"]].shape == (D, 8)
    assert desc["t2"]["inner_dim"] is None and sd[desc["t2"]["weight_key"]].shape == (N - 5, D)
    assert desc["t0"]["feature_names"] == ["f0", "f0b"] and desc["t0"]["pooling"] == "sum"
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for step in range(2):
        dense, kjt, y = _batch(step, 0, 2 * B, cfgs)
        loss = F.binary_cross_entropy_with_logits(model(dense, kjt).squeeze(1), y)
        opt.zero_grad(); loss.backward(); opt.step()
    dense, kjt, _ = _batch(5, 0, 2 * B, cfgs)
    with torch.no_grad():
        want = model(dense, kjt)
        mtr.collapse_ebcs_(model)
        assert torch.allclose(model(dense, kjt), want, atol=1e-5, rtol=0)
    collapsed = model.state_dict()
    assert list(collapsed) == original_keys
    assert all(collapsed[e["collapsed_key"]].shape == (e["num_embeddings"], D) for e in desc.values())
    original.load_state_dict(collapsed, strict=True)
    with torch.no_grad():
        assert torch.allclose(original(dense, kjt), want, atol=1e-5, rtol=0)


def test_collapse_check_catches_a_wrong_table(monkeypatch):
    m = MLETEmbeddingBagCollection(_configs(), inner_dim=8, is_weighted=True, seed=0)
    ok = MLETEmbeddingBagCollection.effective_weight
    monkeypatch.setattr(MLETEmbeddingBagCollection, "effective_weight", lambda self, t, *a: ok(self, t) * 1.01)
    with pytest.raises(NumericalError, match="collapsed lookups differ"):
        mtr.collapse_ebc(m)
    monkeypatch.undo()
    with torch.no_grad():
        m.projs["t1"][0, 0] = float("nan")
    with pytest.raises(NumericalError, match="NaN"):
        mtr.collapse_ebc(m)


def test_wrap_preserve_function_and_errors():
    cfgs = _configs()
    ebc = EmbeddingBagCollection(cfgs)
    m = mtr.wrap_ebc(ebc, inner_dim=8, preserve_function=True, seed=3)
    kjt = _kjt(_bags(cfgs, 5, seed=4))
    with torch.no_grad():
        assert torch.allclose(m(kjt).values(), ebc(kjt).values(), atol=1e-6, rtol=0)
    with pytest.raises(TargetingError, match="already"):
        mtr.wrap_ebc(m)
    with pytest.raises(ConfigError, match="inner_dim >= embedding_dim"):
        mtr.wrap_ebc(ebc, inner_dim=2, preserve_function=True)
    with pytest.raises(ConfigError, match="positive integer"):
        MLETEmbeddingBagCollection(cfgs, inner_dim=0)
    with pytest.raises(ConfigError, match="duplicate table names"):
        MLETEmbeddingBagCollection(cfgs + cfgs[:1])
    with pytest.raises(ConfigError, match="SUM/MEAN"):
        MLETEmbeddingBagCollection([EmbeddingBagConfig(name="x", embedding_dim=4, num_embeddings=5, pooling=PoolingType.NONE)])
    with pytest.raises(TargetingError, match="EBCs found"):
        mtr.wrap_ebcs_(nn.ModuleDict({"e": ebc}), select=lambda t: False)


def test_import_mlet_compress_does_not_import_torchrec():
    code = "import sys, mlet_compress; print('torchrec' in sys.modules, 'fbgemm_gpu' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == ["False", "False"]


# ------------------------------------------------------------------------------------- sharded training (2 gloo ranks)
DMP_RUNS = {"table_wise/sgd": ("table_wise", "sgd"), "column_wise/sgd": ("column_wise", "sgd"),
            "table_wise/rowwise_adagrad": ("table_wise", "rowwise_adagrad")}


def _dmp_model(device=None, inner_dims=(("t1", 12),)):
    cfgs = _configs()
    m = MLETEmbeddingBagCollection(cfgs, inner_dim=8, inner_dims=dict(inner_dims), seed=0, device=device)
    return _dlrm(m), cfgs


def _train(model, sparse_opt, dense_params, lo, hi, cfgs, step_hook=None):
    dense_opt = torch.optim.SGD(dense_params, lr=LR)
    losses = []
    for step in range(STEPS):
        dense, kjt, y = _batch(step, lo, hi, cfgs)
        loss = F.binary_cross_entropy_with_logits(model(dense, kjt).squeeze(1), y)
        dense_opt.zero_grad()
        if sparse_opt is not None:
            sparse_opt.zero_grad()
        loss.backward()
        dense_opt.step()
        if sparse_opt is not None:
            sparse_opt.step()
        losses.append(step_hook(loss) if step_hook else loss.item())
    return losses


def _dmp_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        results = {}
        for name, (sharding, optimizer) in DMP_RUNS.items():
            model, cfgs = _dmp_model()
            dmp = mtr.shard_model(model, sharding, optimizer, LR, min_partition=4)
            types = sorted({s.sharding_type for plan in dmp.plan.plan.values() for s in plan.values()})
            dense = [p for n, p in dmp.named_parameters() if "embedding_bags" not in n]

            def global_loss(loss):  # mean of the two half-batch losses = loss of the whole batch
                t = loss.detach().clone()
                dist.all_reduce(t)
                return t.item() / world

            losses = _train(dmp, None, dense, rank * B, (rank + 1) * B, cfgs, global_loss)
            results[name] = {"types": types, "losses": losses, "dense": sorted(n for n, _ in dmp.named_parameters())}
            if sharding == "column_wise":  # the trained, unsharded state, for collapse in the parent
                full = mtr.gather_state_dict(dmp)
                if full is not None:
                    torch.save(full, f"{out}.state")
        # built on the meta device (the large-model path): DMP materialises the projections through
        # Projections.reset_parameters and DDP makes them equal across ranks
        model, cfgs = _dmp_model(torch.device("meta"), inner_dims=())  # one k: the batched projection path
        dmp = mtr.shard_model(model, "table_wise", "rowwise_adagrad", LR)
        proj = dict(dmp.named_parameters())["sparse_arch.embedding_bag_collection.projs.t0"]
        results["meta"] = {"std": proj.std().item(), "sum": proj.sum().item(),
                           "losses": _train(dmp, None, [proj], rank * B, (rank + 1) * B, cfgs)}
        with open(f"{out}.{rank}", "w") as f:
            json.dump(results, f)
        del dmp, model, proj
        gc.collect()  # the DMP modules hold the process group: free them so destroy_process_group ends its threads
        dist.barrier()
    finally:
        dist.destroy_process_group()
        gc.collect()


def _single_process_losses(optimizer):
    from torchrec.optim import RowWiseAdagrad

    model, cfgs = _dmp_model()
    sparse = [p for n, p in model.named_parameters() if "embedding_bags" in n]
    dense = [p for n, p in model.named_parameters() if "embedding_bags" not in n]
    opt = torch.optim.SGD(sparse, lr=LR) if optimizer == "sgd" else RowWiseAdagrad(sparse, lr=LR, eps=1e-8)
    return _train(model, opt, dense, 0, 2 * B, cfgs), model


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dmp_two_ranks_match_single_process(tmp_path):
    """Table-wise and column-wise plans (fused SGD and fused row-wise Adagrad) = one process on the whole batch."""
    out = tmp_path / "dmp.json"
    mp.spawn(_dmp_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    results, other = (json.loads((tmp_path / f"dmp.json.{r}").read_text()) for r in range(2))
    meta = results.pop("meta"), other.pop("meta")
    assert meta[0]["sum"] == meta[1]["sum"] and 0.1 < meta[0]["std"] < 0.4  # N(0, 0.25²), 32 draws
    assert all(0 < x < 10 for m in meta for x in m["losses"])
    for name, (sharding, optimizer) in DMP_RUNS.items():
        got, (want, trained) = results[name]["losses"], _single_process_losses(optimizer)
        assert results[name]["types"] == [sharding], name
        assert "sparse_arch.embedding_bag_collection.projs.t1" in results[name]["dense"]
        assert want[-1] != pytest.approx(want[0], abs=1e-3)  # training moved the loss
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6), name
        if sharding == "column_wise":  # gathered state = single-process state; it collapses into the original model
            full, ref = torch.load(f"{out}.state"), trained.state_dict()
            assert sorted(full) == sorted(ref) and all(torch.allclose(full[k], ref[k], atol=1e-5) for k in ref)
            unsharded, cfgs = _dmp_model()
            unsharded.load_state_dict(full, strict=True)
            dense, kjt, _ = _batch(7, 0, 2 * B, cfgs)
            with torch.no_grad():
                want_out = unsharded(dense, kjt)
                mtr.collapse_ebcs_(unsharded)
                original = _dlrm(EmbeddingBagCollection(cfgs))
                original.load_state_dict(unsharded.state_dict(), strict=True)
                assert torch.allclose(original(dense, kjt), want_out, atol=1e-5)


def test_row_wise_sharding_is_refused_on_cpu():
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology

    model, _ = _dmp_model()
    planner = EmbeddingShardingPlanner(topology=Topology(world_size=2, compute_device="cpu"),
                                       constraints=mtr.sharding_constraints(model, "row_wise"))
    with pytest.raises(RuntimeError, match="No available sharding type"):
        planner.plan(model, [mtr.ebc_sharder("rowwise_adagrad")])


# ------------------------------------------------------------------------------------- FBGEMM quantized export
FP16_EPS = 2.0 ** -11  # unit round-off of fp16: |fp16(s) - s| <= 2^-11 s for normal s


def _our_tables(bits, granularity, mode, d=8):
    torch.manual_seed(bits)
    bags = {"q0": nn.EmbeddingBag(40, d, mode=mode), "q1": nn.EmbeddingBag(25, d, mode=mode)}
    with torch.no_grad():
        bags["q1"].weight.mul_(torch.linspace(0.01, 3.0, 25).unsqueeze(1))  # rows of very different size
    return {name: QuantizedEmbeddingBag.from_float(b, bits=bits, granularity=granularity) for name, b in bags.items()}


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
@pytest.mark.parametrize("granularity", ["table", "row"])
@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_quant_export_equals_our_quantized_bags(bits, granularity, mode):
    ours = _our_tables(bits, granularity, mode)
    qebc = mtr.to_torchrec_quant([QuantTable.from_module(n, m) for n, m in ours.items()])
    bags = {n: _bags([EmbeddingBagConfig(name=n, embedding_dim=8, num_embeddings=m.num_embeddings, feature_names=[n])],
                     7, seed=bits)[n] for n, m in ours.items()}
    got = qebc(_kjt(bags)).to_dict()
    for name, m in ours.items():
        offsets = torch.tensor([0] + [v.numel() for v in bags[name]]).cumsum(0)[:-1]
        want = m(torch.cat(bags[name]), offsets)
        # the same pools with the fp16-rounded scale: the mapping itself is exact (fp32 round-off only)
        s16 = m.scale.half().float().expand(m.num_embeddings).unsqueeze(1)
        exact = F.embedding_bag(torch.cat(bags[name]), unpack_rows(m.qweight, bits, 8).float() * s16, offsets, mode=mode)
        bound = FP16_EPS * F.embedding_bag(torch.cat(bags[name]), m.dequantized_weight().abs(), offsets, mode=mode) + 1e-6
        assert torch.allclose(got[name], exact, atol=1e-6, rtol=1e-6)
        assert ((got[name] - want).abs() <= bound).all()
        assert (got[name] - want).abs().max() > 0  # fp16 really changes something ...
        assert 0 < qebc.fp16_scale_error[name] <= FP16_EPS  # ... by at most fp16's unit round-off


def test_quant_export_weighted_and_measured_fp16_error():
    ours = _our_tables(8, "row", "sum")
    tables = [QuantTable.from_module(n, m) for n, m in ours.items()]
    qebc = mtr.to_torchrec_quant(tables, is_weighted=True)
    # every row once, weight 1: the exported tables themselves; compare with the fp32-scale tables
    bags = {n: [torch.tensor([i]) for i in range(m.num_embeddings)] for n, m in ours.items()}
    n_max = max(m.num_embeddings for m in ours.values())
    bags = {n: b + [torch.tensor([], dtype=torch.long)] * (n_max - len(b)) for n, b in bags.items()}
    ones = {n: torch.ones(sum(v.numel() for v in b)) for n, b in bags.items()}
    got = qebc(_kjt(bags, weights=ones)).to_dict()
    for name, m in ours.items():
        w = m.dequantized_weight()
        measured = float((got[name][: m.num_embeddings] - w).norm() / w.norm())
        assert measured == pytest.approx(mtr.fp16_scale_error(QuantTable.from_module(name, m)), rel=1e-3)
    tiny = QuantTable("t", tables[0].packed, torch.tensor(1e-6), 8, 8)  # fp16-subnormal scale
    assert mtr.fp16_scale_error(tiny) > 10 * FP16_EPS
    with pytest.raises(NumericalError, match="subnormal"):
        mtr.to_torchrec_quant([tiny], max_fp16_error=FP16_EPS)
    assert mtr.to_torchrec_quant(tables, max_fp16_error=FP16_EPS).fp16_scale_error["q0"] <= FP16_EPS


def test_quant_export_errors():
    q = QuantTable("t", torch.zeros(3, 3, dtype=torch.uint8), torch.tensor(0.1), 4, 5)
    with pytest.raises(ConfigError, match="divisible by 2"):
        mtr.to_torchrec_quant([q])
    with pytest.raises(ConfigError, match="overflows"):
        mtr.to_torchrec_quant([QuantTable("t", torch.zeros(3, 4, dtype=torch.uint8), torch.tensor(600.0), 8, 4)])
    with pytest.raises(NumericalError, match="rounds to 0"):
        mtr.to_torchrec_quant([QuantTable("t", torch.ones(3, 4, dtype=torch.uint8), torch.tensor(1e-9), 8, 4)])
    with pytest.raises(ConfigError, match="low-rank"):
        QuantTable.from_module("t", QuantizedEmbeddingBag(10, 4, rank=2, mode="sum"))
