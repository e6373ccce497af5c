"""TorchRec models through the package verbs: mc.wrap / mc.collapse / save_checkpoint / compress_checkpoint /
load_model_state, the CLI on TorchRec checkpoints, and the quantized export (export-torchrec)."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

pytest.importorskip("torchrec", reason="TorchRec not installed: scripts/install-torchrec.sh (see docs/torchrec.md)")

from torchrec.models.dlrm import DLRM  # noqa: E402

import mlet_compress as mc  # noqa: E402
from mlet_compress.cli.app import app, error_line  # noqa: E402
from mlet_compress.errors import CheckpointError, ConfigError, TargetingError  # noqa: E402
from mlet_compress.integrations import torchrec as mtr  # noqa: E402
from mlet_compress.integrations.torchrec import (EmbeddingBagCollection, EmbeddingBagConfig,  # noqa: E402
                                                 KeyedJaggedTensor, MLETEmbeddingBagCollection, PoolingType)

D, B = 8, 12
P = "sparse_arch.embedding_bag_collection."
runner = CliRunner()


def _configs():
    return [EmbeddingBagConfig(name="t0", embedding_dim=D, num_embeddings=40, feature_names=["f0", "f0b"]),
            EmbeddingBagConfig(name="t1", embedding_dim=D, num_embeddings=25, feature_names=["f1"],
                               pooling=PoolingType.MEAN),
            EmbeddingBagConfig(name="t2", embedding_dim=D, num_embeddings=30, feature_names=["f2"])]


def _dlrm():
    torch.manual_seed(0)
    return DLRM(embedding_bag_collection=EmbeddingBagCollection(_configs()), dense_in_features=3,
                dense_arch_layer_sizes=[8, D], over_arch_layer_sizes=[8, 1])


def _batch(seed):
    g = torch.Generator().manual_seed(seed)
    keys, vals, lengths = [], [], []
    for c in _configs():
        for f in c.feature_names:
            ln = torch.randint(0, 4, (B,), generator=g)
            keys.append(f)
            vals.append(torch.randint(0, c.num_embeddings, (int(ln.sum()),), generator=g))
            lengths.append(ln)
    kjt = KeyedJaggedTensor.from_lengths_sync(keys, torch.cat(vals), torch.cat(lengths))
    return torch.randn(B, 3, generator=g), kjt, torch.randint(0, 2, (B,), generator=g).float()


def _train(model, steps=3):
    opt = torch.optim.Adagrad(model.parameters(), lr=0.1)
    for step in range(steps):
        dense, kjt, y = _batch(step)
        loss = F.binary_cross_entropy_with_logits(model(dense, kjt).squeeze(1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _out(model, seed=99):
    dense, kjt, _ = _batch(seed)
    with torch.no_grad():
        return model(dense, kjt)


@pytest.fixture()
def wrapped(tmp_path):
    """A trained DLRM, t0/t1 MLET (k=16 and 32), t2 left single-layer; its checkpoint; its outputs."""
    model = _dlrm()
    mc.wrap(model, mc.MLETConfig(inner_dim=16, inner_dims={"t1": 32}, exclude_modules=["t2"], seed=0))
    _train(model)
    path = mc.save_checkpoint(model, tmp_path / "factors.safetensors")
    return model, path, _out(model)


def test_wrap_names_tables_and_checkpoint_records_the_factor_keys(wrapped):
    model, path, _ = wrapped
    ebc = model.sparse_arch.embedding_bag_collection
    assert isinstance(ebc, MLETEmbeddingBagCollection) and ebc.inner_dims == {"t0": 16, "t1": 32, "t2": None}
    assert sorted(model.mlet_wrapped) == [P + "embedding_bags.t0", P + "embedding_bags.t1"]
    header = mc.load_checkpoint(path).tables
    assert sorted(header) == [P + f"embedding_bags.t{i}" for i in range(3)]
    t1, t2 = header[P + "embedding_bags.t1"], header[P + "embedding_bags.t2"]
    assert (t1.kind, t1.inner_dim, t1.module) == ("mlet", 32, "embedding_bag")
    assert {k: f.key for k, f in t1.factors.items()} == {"table": P + "inner.embedding_bags.t1.weight", "proj": P + "projs.t1"}
    assert t1.options["mode"] == "mean" and t1.options["torchrec"] == {"table": "t1", "feature_names": ["f1"],
                                                                      "is_weighted": False}
    assert [s.label() for s in t1.stages] == ["mlet(inner_dim=32)"]
    assert (t2.kind, t2.factors["weight"].key) == ("plain", P + "inner.embedding_bags.t2.weight")
    with pytest.raises(TargetingError, match="already MLET-wrapped"):
        mc.wrap(model, mc.MLETConfig())


def test_collapse_model_gives_the_original_ebc_and_keys(wrapped):
    model, _, want = wrapped
    mc.collapse(model)
    assert type(model.sparse_arch.embedding_bag_collection) is EmbeddingBagCollection
    assert torch.allclose(_out(model), want, atol=1e-5, rtol=0)
    original = _dlrm()
    assert list(model.state_dict()) == list(original.state_dict())
    original.load_state_dict(model.state_dict(), strict=True)
    stages = {n: [s.stage for s in e.stages] for n, e in mc.describe_model(model).items()}
    assert stages == {P + "embedding_bags.t0": ["mlet", "collapse"], P + "embedding_bags.t1": ["mlet", "collapse"],
                      P + "embedding_bags.t2": []}


def test_checkpoint_collapse_loads_strictly_into_the_original_dlrm(wrapped, tmp_path):
    model, path, want = wrapped
    rep = mc.compress_checkpoint(path, mc.CollapseConfig(), tmp_path / "collapsed.safetensors")
    assert rep[P + "embedding_bags.t2"]["moved_from"] == P + "inner.embedding_bags.t2.weight"
    assert rep[P + "embedding_bags.t0"]["stage"] == "collapse" and not rep.skipped
    ck = mc.load_checkpoint(rep.output)
    original = _dlrm()
    assert sorted(ck.tensors) == sorted(original.state_dict())
    original.load_state_dict(ck.state_dict(), strict=True)
    assert torch.allclose(_out(original), want, atol=1e-5, rtol=0)
    # the same through load_model_state, and the file collapse equals the model collapse
    again = mc.load_model_state(_dlrm(), rep.output)
    mc.collapse(model)
    assert all(torch.equal(again.state_dict()[k], v) or torch.allclose(again.state_dict()[k], v, atol=1e-6)
               for k, v in model.state_dict().items())


def test_mlet_checkpoint_loads_into_the_unwrapped_model_by_wrapping_it(wrapped):
    model, path, want = wrapped
    fresh = mc.load_model_state(_dlrm(), path)
    ebc = fresh.sparse_arch.embedding_bag_collection
    assert isinstance(ebc, MLETEmbeddingBagCollection) and ebc.inner_dims == {"t0": 16, "t1": 32, "t2": None}
    assert torch.allclose(_out(fresh), want, atol=1e-6, rtol=0)
    assert [s.stage for s in mc.describe_model(fresh)[P + "embedding_bags.t0"].stages] == ["mlet"]


def test_cli_collapse_svd_quantize_inspect_on_a_torchrec_checkpoint(wrapped, tmp_path):
    _, path, want = wrapped
    collapsed = tmp_path / "model.safetensors"
    assert runner.invoke(app, ["collapse", str(path), "-o", str(collapsed)]).exit_code == 0
    res = runner.invoke(app, ["inspect", str(collapsed), "--json"])
    assert res.exit_code == 0, res.output
    assert P + "embedding_bags.t1" in res.output
    res = runner.invoke(app, ["svd", str(collapsed), "--rank", "4", "--json"])
    assert res.exit_code == 0, res.output
    svd = mc.load_checkpoint(tmp_path / "model.svd.safetensors").tables[P + "embedding_bags.t0"]
    assert (svd.kind, svd.factors["A"].key, svd.rank) == ("lowrank", P + "embedding_bags.t0.A", 4)
    res = runner.invoke(app, ["quantize", str(path), "--bits", "8", "--granularity", "row", "--json"])  # MLET file
    assert res.exit_code == 0, res.output
    q = mc.load_checkpoint(tmp_path / "factors.q8row.safetensors").tables[P + "embedding_bags.t0"]
    assert [s.stage for s in q.stages] == ["mlet", "collapse", "quantize"] and q.factors["weight"].key == P + "embedding_bags.t0.qweight"
    # compressed kinds do not fit a float EBC: one clear error, and the quantized export serves them
    with pytest.raises(CheckpointError, match="float tables only.*to_torchrec_quant"):
        mc.load_model_state(_dlrm(), tmp_path / "factors.q8row.safetensors")


def test_load_model_state_refusals(wrapped, tmp_path):
    model, path, _ = wrapped
    collapsed = mc.compress_checkpoint(path, mc.CollapseConfig(), tmp_path / "c.safetensors").output
    with pytest.raises(CheckpointError, match="trains it as MLET"):
        mc.load_model_state(model, collapsed)  # a collapsed file into the still-wrapped model
    other = _dlrm()
    mc.wrap(other, mc.MLETConfig(inner_dim=8, exclude_modules=["t2"]))
    with pytest.raises(CheckpointError, match="k=16, the model's MLET table k=8"):
        mc.load_model_state(other, path)


def test_stage_selection_on_torchrec_models():
    model = _dlrm()
    rep = mc.compress_(model, mc.MLETConfig(inner_dim=16, target_modules=r".*embedding_bags\.t[01]"))
    assert sorted(rep) == [P + "embedding_bags.t0", P + "embedding_bags.t1"]
    # quantize / svd / hash do not apply to a float EBC in memory: skipped by default, refused when named
    plain = _dlrm()
    with pytest.raises(TargetingError, match="TorchRec EmbeddingBagCollection.*compress_checkpoint"):
        mc.compress_(plain, mc.QuantConfig(bits=8))
    with pytest.raises(TargetingError, match="cannot apply svd"):
        mc.compress_(plain, mc.LowRankConfig(rank=2, target_modules=["t0"]))
    # collapse replaces an MLET-EBC whole: selecting part of its MLET tables is refused
    with pytest.raises(TargetingError, match=r"MLET tables \['t1'\] are not selected"):
        mc.compress_(model, mc.CollapseConfig(target_modules=["t0"]))
    with pytest.raises(TargetingError, match="the model itself is a TorchRec EmbeddingBagCollection"):
        mc.wrap(EmbeddingBagCollection(_configs()), mc.MLETConfig())
    with pytest.raises(ConfigError, match="table_init='xavier_uniform'"):
        mc.wrap(_dlrm(), mc.MLETConfig(table_init="xavier_uniform"))


def test_preserve_function_and_mixed_models():
    model = torch.nn.ModuleDict({"dlrm": _dlrm(), "extra": torch.nn.EmbeddingBag(20, 4, mode="sum")})
    want = _out(model["dlrm"])
    mc.wrap(model, mc.MLETConfig(inner_dim=16, preserve_function=True, seed=1))
    assert type(model["extra"]).__name__ == "MLETEmbeddingBag"
    assert torch.allclose(_out(model["dlrm"]), want, atol=1e-5, rtol=0)
    names = sorted(mc.describe_model(model))
    assert names == ["dlrm." + P + f"embedding_bags.t{i}" for i in range(3)] + ["extra"]
    mc.collapse(model)
    assert type(model["extra"]) is torch.nn.EmbeddingBag
    assert type(model["dlrm"].sparse_arch.embedding_bag_collection) is EmbeddingBagCollection


# ------------------------------------------------------------------------------------- quantized export
@pytest.mark.parametrize("bits", [8, 4])
def test_export_torchrec_rebuilds_the_quant_ebc_with_our_lookups(wrapped, tmp_path, bits):
    _, path, _ = wrapped
    qpath = mc.compress_checkpoint(path, mc.QuantConfig(bits=bits, granularity="row"), tmp_path / "q.safetensors").output
    res = runner.invoke(app, ["export-torchrec", str(qpath), "-o", str(tmp_path / "q.torchrec.safetensors"), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output[res.output.index("{"):])
    assert [t["name"] for t in info["tables"]] == ["t0", "t1", "t2"] and not info["skipped"]
    assert {t["data_type"] for t in info["tables"]} == {f"INT{bits}"}
    qebc = mtr.load_torchrec_quant(tmp_path / "q.torchrec.safetensors")
    ours = mc.load_lookup_modules(qpath)
    _, kjt, _ = _batch(5)
    got = qebc(kjt).to_dict()
    for t in info["tables"]:
        bag = ours[t["source_table"]]
        assert (bag.mode, bag.include_last_offset) == (t["pooling"].lower(), True)
        for f in t["feature_names"]:
            jt = kjt[f]
            offsets = jt.offsets()
            want = bag(jt.values(), offsets)
            # fp16 scale: |fp16(s) − s| ≤ 2^-11 s, so each pooled value moves by ≤ 2^-11 · pool(|Ŵ|)
            bound = 2.0 ** -11 * F.embedding_bag(jt.values(), bag.dequantized_weight().abs(), offsets,
                                                 mode=bag.mode, include_last_offset=True) + 1e-6
            assert got[f].shape == want.shape == (B, D)
            assert ((got[f] - want).abs() <= bound).all(), (f, float((got[f] - want).abs().max()))
            assert (got[f] - want).abs().max() > 0 or bits == 8
    # the file holds TorchRec's own split-scale-bias state dict
    from safetensors.torch import load_file
    from torchrec.quant.embedding_modules import EmbeddingBagCollection as QuantEBC

    stored = load_file(str(tmp_path / "q.torchrec.safetensors"))
    split = QuantEBC(qebc.embedding_bag_configs(), False, torch.device("cpu"), quant_state_dict_split_scale_bias=True,
                     table_name_to_quantized_weights={c.name: qebc._table_name_to_quantized_weights[c.name]
                                                      for c in qebc.embedding_bag_configs()})
    sd = split.state_dict()
    assert sorted(sd) == sorted(stored)
    for t in ("t0", "t1", "t2"):
        for part in ("weight_qscale", "weight_qbias"):
            assert torch.equal(sd[f"embedding_bags.{t}.{part}"], stored[f"embedding_bags.{t}.{part}"])


def _cli_error(*args) -> str:
    """The one line ``mlet-compress`` prints for a failing command (cli.app.main maps the exception)."""
    res = runner.invoke(app, list(args))
    assert res.exit_code == 1 and isinstance(res.exception, mc.MLETError), res.output
    return error_line(res.exception)


def test_export_torchrec_errors(wrapped, tmp_path):
    _, path, _ = wrapped
    assert "no quantized table to export" in _cli_error("export-torchrec", str(path))  # MLET factors, not quantized
    q = mc.compress_checkpoint(path, mc.QuantConfig(bits=4, target_modules=["t0"]), tmp_path / "q.safetensors").output
    line = _cli_error("export-torchrec", str(q), "--tables", ".*t1")
    assert "embedding_bags.t1' is mlet, not quantized" in line and "leave it out of --tables '.*t1'" in line
    res = runner.invoke(app, ["export-torchrec", str(q)])  # t0 only; t1 and t2 are left out, and said so
    assert res.exit_code == 0 and "left out sparse_arch.embedding_bag_collection.embedding_bags.t2" in res.output
    assert "already exists; pass --force" in _cli_error("export-torchrec", str(q))
    qebc = mc.to_torchrec_quant(q)
    assert [c.name for c in qebc.embedding_bag_configs()] == ["t0"] and set(qebc.fp16_scale_error) == {"t0"}


def test_without_torchrec_the_export_is_one_clear_error(tmp_path):
    """Block torchrec in a fresh interpreter: import mlet_compress works, the export says how to install."""
    code = ("import sys; sys.modules['torchrec'] = None\n"
            "import mlet_compress as mc\n"
            "from torch import nn\n"
            "m = nn.ModuleDict({'e': nn.EmbeddingBag(10, 4)}); mc.wrap(m, mc.MLETConfig(inner_dim=8)); mc.collapse(m)\n"
            "try:\n    mc.to_torchrec_quant('x.safetensors')\n"
            "except mc.ConfigError as e:\n    print(isinstance(e, ImportError), e)\n"
            "sys.argv = ['mlet-compress', 'export-torchrec', 'x.safetensors']\n"
            "from mlet_compress.cli.app import main\nmain()\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 1
    assert res.stdout.startswith("True ") and "pip install mlet-compress[torchrec]" in res.stdout
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error:") and "mlet-compress[torchrec]" in res.stderr


def test_example_torchrec_dlrm_runs_end_to_end(tmp_path):
    """examples/torchrec_dlrm.py in one process (DMP world size 1; the docs run it on 2 ranks with torchrun)."""
    import os
    import re
    import socket
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = Path(__file__).resolve().parents[1] / "examples" / "torchrec_dlrm.py"
    env = {**os.environ, "MASTER_PORT": str(port)}
    res = subprocess.run([sys.executable, str(script), "--rows", "3000", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    aucs = [float(x) for x in re.findall(r"test AUC, [^:]+:\s+([0-9.]+)", res.stdout)]
    assert len(aucs) == 3 and aucs[0] == aucs[1] and abs(aucs[2] - aucs[0]) < 0.005 and aucs[0] > 0.55
    assert "table_wise" in res.stdout  # the sharding plan
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["factors.safetensors", "model.q8row.safetensors", "model.q8row.torchrec.safetensors",
                     "model.safetensors"]
