"""`mlet-compress train --engine torchrec` and `save_sharded_checkpoint` (one table at a time on rank 0)."""

import gc
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

pytest.importorskip("torchrec", reason="TorchRec not installed: scripts/install-torchrec.sh (see docs/torchrec.md)")

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from torchrec.models.dlrm import DLRM  # noqa: E402

import mlet_compress as mc  # noqa: E402
from mlet_compress.integrations import torchrec as mtr  # noqa: E402

TINY = ["--rows", "3000", "--dim", "8", "--mlet-k", "16", "--batch-size", "64", "--threads", "1", "--device", "cpu"]


def _cli(*args, torchrun=0):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    head = [sys.executable, "-m", "mlet_compress.cli.app"]
    if torchrun:
        head = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(torchrun),
                "--master-port", str(_free_port()), "-m", "mlet_compress.cli.app"]
    return subprocess.run([*head, *args], capture_output=True, text=True, env=env, timeout=600)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _error_line(res):
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode != 0 and len(lines) == 1, res.stderr[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("engine") / "one"
    res = _cli("train", "--engine", "torchrec", *TINY, "--keep-factors", "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    return out, json.loads(res.stdout), res.stderr


def test_one_process_run_writes_the_run_directory_and_eval_reads_it(one_process):
    out, printed, stderr = one_process
    for name in ("model.safetensors", "factors.safetensors", "metrics.json", "config.json", "preprocessor.json"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    assert printed["test"] == saved["test"] and saved["engine"] == "torchrec" and cfg["train_config"]["engine"] == "torchrec"
    assert cfg["train_config"]["sharding"] == "table_wise" and cfg["model_info"]["name"] == "torchrec_dlrm"
    plan = saved["sharding_plan"]
    assert len(plan) == 10 and {p["sharding_type"] for p in plan.values()} == {"table_wise"}
    assert all(p["ranks"] == [0] for p in plan.values())
    assert "t_c0: table_wise (fused) on ranks [0]" in stderr  # the plan is printed, one line per table
    assert saved["collapse_max_abs_prob_diff"] < 1e-5 and saved["world_size"] == 1
    params = saved["params"]  # per table n·k + d·k while training (k = 2d), n·d at inference
    assert params["embedding_training"] == 2 * params["embedding_inference"] + 10 * 8 * 16
    res = _cli("eval", str(out / "model.safetensors"), "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    ev = json.loads(res.stdout)
    assert ev["model"] == "torchrec_dlrm" and ev["test"]["auc"] == pytest.approx(saved["test"]["auc"], abs=1e-9)
    assert ev["test"]["logloss"] == pytest.approx(saved["test"]["logloss"], abs=1e-7)


def test_checkpoint_is_the_package_schema_and_loads_into_the_original_dlrm(one_process):
    out, _, _ = one_process
    ckpt = mc.load_checkpoint(out / "model.safetensors")
    assert len(ckpt.tables) == 10 and {e.kind for e in ckpt.tables.values()} == {"plain"}
    assert all([s.stage for s in e.stages] == ["mlet", "collapse"] for e in ckpt.tables.values())
    factors = mc.load_checkpoint(out / "factors.safetensors")
    assert {e.kind for e in factors.tables.values()} == {"mlet"}
    # the collapsed tables are the products of the saved factors
    for name, e in ckpt.tables.items():
        f = factors.tables[name]
        prod = factors.tensors[f.factors["table"].key] @ factors.tensors[f.factors["proj"].key].T
        assert torch.allclose(ckpt.tensors[e.factors["weight"].key], prod, atol=1e-6)
    config = ckpt.model_info["config"]
    tables = [mtr.EmbeddingBagConfig(name=f"t_{f}", embedding_dim=8, num_embeddings=n, feature_names=[f])
              for f, n in zip(config["field_names"], config["vocab_sizes"])]
    original = DLRM(embedding_bag_collection=mtr.EmbeddingBagCollection(tables), dense_in_features=config["num_dense"],
                    dense_arch_layer_sizes=config["bottom_mlp"] + [8], over_arch_layer_sizes=config["top_mlp"] + [1])
    mc.load_model_state(original, ckpt)  # strict
    assert torch.equal(original.sparse_arch.embedding_bag_collection.embedding_bags.t_c3.weight,
                       ckpt.tensors["sparse_arch.embedding_bag_collection.embedding_bags.t_c3.weight"])
    res = _cli("inspect", str(out / "model.safetensors"), "--json")
    assert res.returncode == 0 and len(json.loads(res.stdout)["tables"]) == 10, res.stderr[-2000:]
    res = _cli("quantize", str(out / "model.safetensors"), "--bits", "8", "--granularity", "row")
    assert res.returncode == 0, res.stderr[-2000:]
    q = mc.load_checkpoint(out / "model.q8row.safetensors")
    assert {e.kind for e in q.tables.values()} == {"quantized"}


def test_auc_against_the_torch_engine_at_the_same_settings(one_process, tmp_path):
    """Not bitwise comparable (other DLRM implementation, other initial draws): both learn, and close."""
    _, torchrec_run, _ = one_process
    res = _cli("train", "--engine", "torch", *TINY, "--out", str(tmp_path / "torch"), "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    torch_run = json.loads(res.stdout)
    assert torch_run["test"] == json.loads((tmp_path / "torch" / "metrics.json").read_text())["test"]
    a, b = torchrec_run["test"]["auc"], torch_run["test"]["auc"]
    assert a > 0.56 and b > 0.56 and abs(a - b) < 0.05, (a, b)


@pytest.mark.parametrize("sharding", ["table_wise", "data_parallel"])
def test_two_ranks_with_torchrun_equal_one_process(one_process, tmp_path, sharding):
    """2 ranks (tables on rank 0 and 1 / replicated with dense SGD on them) = 1 process table-wise (fused SGD)."""
    out1, one, _ = one_process
    out2 = tmp_path / "two"
    res = _cli("train", "--engine", "torchrec", *TINY, "--sharding", sharding, "--out", str(out2), "--json", torchrun=2)
    assert res.returncode == 0, res.stderr[-3000:]
    two = json.loads((out2 / "metrics.json").read_text())
    ranks = sorted({tuple(p["ranks"]) for p in two["sharding_plan"].values()})
    assert two["world_size"] == 2 and ranks == ([(0,), (1,)] if sharding == "table_wise" else [(0, 1)])
    assert [h["train_loss"] for h in two["history"]] == pytest.approx([h["train_loss"] for h in one["history"]], rel=1e-5)
    assert two["test"]["auc"] == pytest.approx(one["test"]["auc"], abs=1e-5)
    a, b = load_file(str(out1 / "model.safetensors")), load_file(str(out2 / "model.safetensors"))
    assert sorted(a) == sorted(b) and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_cli_refusals_are_one_line(tmp_path):
    out = ["--out", str(tmp_path / "run")]
    line = _error_line(_cli("train", "--engine", "torchrec", "--model", "deepfm", *TINY, *out))
    assert "--engine 'torchrec' trains DLRM only" in line and "--model 'dlrm'" in line
    assert not list(tmp_path.iterdir())  # refused before any output (no staging directory)
    line = _error_line(_cli("train", "--engine", "torchrec", "--sharding", "row_wise", *TINY, *out))
    assert "--sharding 'row_wise' cannot be planned on cpu: No available sharding type" in line
    assert "--engine torchrec" in _error_line(_cli("train", "--sharding", "column_wise", *TINY, *out))
    assert "--compare" in _error_line(_cli("train", "--engine", "torchrec", "--compare", *TINY, *out))


def test_import_train_does_not_import_torchrec():
    code = "import sys, mlet_compress.train, mlet_compress.models; print('torchrec' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == ["False"]


# ------------------------------------------------------------------ save_sharded_checkpoint (2 gloo ranks)
def _dlrm():
    torch.manual_seed(0)
    tables = [mtr.EmbeddingBagConfig(name=f"t{i}", embedding_dim=8, num_embeddings=40 + 7 * i, feature_names=[f"f{i}"])
              for i in range(4)]
    model = DLRM(embedding_bag_collection=mtr.EmbeddingBagCollection(tables), dense_in_features=3,
                 dense_arch_layer_sizes=[16, 8], over_arch_layer_sizes=[16, 1])
    return model, tables


def _wrapped():
    model, tables = _dlrm()
    mc.wrap(model, mc.MLETConfig(inner_dim=16, init_std=0.25, seed=0, exclude_modules=["t3"]))  # t3 single-layer
    return model


def _save_worker(rank, world, port, out, sharding):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        model = _wrapped()
        skel = mtr.meta_copy(model)
        dmp = mtr.shard_model(model, sharding, "rowwise_adagrad", 0.1, min_partition=4)
        g = torch.Generator().manual_seed(rank)
        for _ in range(3):  # train a little so that every table moved away from its initial values
            ids = torch.randint(0, 40, (4 * 6,), generator=g)
            kjt = mtr.KeyedJaggedTensor.from_lengths_sync([f"f{i}" for i in range(4)], ids, torch.ones(24, dtype=torch.int64))
            dmp(torch.randn(6, 3, generator=g), kjt).sum().backward()
        got = mtr.save_sharded_checkpoint(dmp, f"{out}/streamed.safetensors", skel, extra={"note": 1},
                                          model_info={"name": "x", "config": {}})
        mtr.save_sharded_checkpoint(dmp, f"{out}/factors_streamed.safetensors", skel, collapse_mlet=False)
        full = mtr.gather_state_dict(dmp)  # the gather-everything path, for comparison
        if rank == 0:
            assert got is not None
            ref = _wrapped()
            ref.load_state_dict(full, strict=True)
            mc.save_checkpoint(ref, f"{out}/factors_ref.safetensors")
            mc.collapse(ref)
            mc.save_checkpoint(ref, f"{out}/ref.safetensors", extra={"note": 1}, model_info={"name": "x", "config": {}})
            json.dump({"types": sorted({s.sharding_type for p in dmp.plan.plan.values() for s in p.values()})},
                      open(f"{out}/plan.json", "w"))
        else:
            assert got is None
        del dmp, model
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()
        gc.collect()


@pytest.mark.parametrize("sharding", ["table_wise", "column_wise"])
def test_save_sharded_checkpoint_equals_gather_collapse_save(tmp_path, sharding):
    mp.spawn(_save_worker, args=(2, _free_port(), str(tmp_path), sharding), nprocs=2, join=True)
    assert json.loads((tmp_path / "plan.json").read_text())["types"] == [sharding]
    for streamed, ref in (("streamed", "ref"), ("factors_streamed", "factors_ref")):
        a, b = (tmp_path / f"{streamed}.safetensors").read_bytes(), (tmp_path / f"{ref}.safetensors").read_bytes()
        assert a == b, streamed  # same header, same tensors, same layout
    ckpt = mc.load_checkpoint(tmp_path / "streamed.safetensors")
    init, _ = _dlrm()
    assert not torch.equal(ckpt.tensors["sparse_arch.embedding_bag_collection.embedding_bags.t3.weight"],
                           init.sparse_arch.embedding_bag_collection.embedding_bags.t3.weight)  # trained, moved key
    original, _ = _dlrm()
    original.load_state_dict(ckpt.state_dict(), strict=True)  # the original, unwrapped TorchRec DLRM
    factors = mc.load_checkpoint(tmp_path / "factors_streamed.safetensors")
    t0 = factors.tensors["sparse_arch.embedding_bag_collection.inner.embedding_bags.t0.weight"]
    p0 = factors.tensors["sparse_arch.embedding_bag_collection.projs.t0"]
    assert torch.allclose(original.sparse_arch.embedding_bag_collection.embedding_bags.t0.weight, t0 @ p0.T, atol=1e-6)


def test_without_torchrec_the_engine_is_one_clear_error(tmp_path):
    """Block torchrec in a fresh interpreter: `train --engine torchrec` says how to install, writes nothing."""
    code = ("import sys; sys.modules['torchrec'] = None\n"
            "sys.argv = ['mlet-compress', 'train', '--engine', 'torchrec', '--rows', '3000', '--out', 'run']\n"
            "from mlet_compress.cli.app import main\nmain()\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr[-2000:]
    assert res.stderr.startswith("error:") and "mlet-compress[torchrec]" in res.stderr
    assert not list(tmp_path.iterdir())
