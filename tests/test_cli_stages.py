"""svd / quantize / convert / benchmark commands end to end."""

import json

import torch
from torch import nn
from typer.testing import CliRunner

from mlet_compress import MLETConfig, collapse, load_checkpoint, save_checkpoint, wrap
from mlet_compress.cli.app import app
from mlet_compress.lookup import reconstruct

runner = CliRunner()


def _model_ckpt(tmp_path):
    torch.manual_seed(0)
    m = nn.ModuleDict({"emb": nn.Embedding(500, 16), "bag": nn.EmbeddingBag(300, 8, mode="sum"), "lin": nn.Embedding(50, 1)})
    wrap(m, MLETConfig(inner_dim=32))
    return save_checkpoint(m, tmp_path / "m.safetensors"), m


def test_full_chain_via_cli(tmp_path):
    src, m = _model_ckpt(tmp_path)
    assert runner.invoke(app, ["collapse", str(src)]).exit_code == 0
    collapsed = tmp_path / "m.collapsed.safetensors"
    res = runner.invoke(app, ["svd", str(collapsed), "--energy", "0.9", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    svd = tmp_path / "m.collapsed.svd.safetensors"
    assert rep["output"] == str(svd) and 1 <= rep["tables"]["emb"]["rank"] <= 16
    res = runner.invoke(app, ["quantize", str(svd), "--bits", "8", "--granularity", "row"])
    assert res.exit_code == 0, res.output
    q8 = tmp_path / "m.collapsed.svd.q8row.safetensors"  # per-row scales: q8row
    res = runner.invoke(app, ["inspect", str(q8), "--json"])
    row = next(r for r in json.loads(res.stdout)["tables"] if r["name"] == "emb")
    assert row["layout"].startswith("quantized(lowrank, 8b/row)")
    assert [s.split("(")[0] for s in row["stages"]] == ["mlet", "collapse", "svd", "quantize"]
    res = runner.invoke(app, ["benchmark", str(q8), "--reference", str(collapsed), "--json", "--batch", "64", "--repeats", "2"])
    assert res.exit_code == 0, res.output
    bench = json.loads(res.stdout)
    emb = next(t for t in bench["tables"] if t["name"] == "emb")
    assert emb["bytes_before"] == 500 * 16 * 4 and emb["ratio"] > 1
    collapse(m)
    w = m["emb"].weight.detach().double()
    rec = reconstruct(q8)["emb"].double()
    err = float(((w - rec) ** 2).sum())
    assert abs(emb["l2_error"] - err ** 0.5) <= 1e-6 * max(1.0, err ** 0.5)
    res = runner.invoke(app, ["benchmark", str(q8)])
    assert res.exit_code == 0 and "ours/fp32" in res.stdout


def test_quantize_bad_bits_leaves_nothing(tmp_path):
    src, _ = _model_ckpt(tmp_path)
    res = runner.invoke(app, ["quantize", str(src), "--bits", "9"])
    assert res.exit_code != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_convert_cli_round_trip(tmp_path):
    src, m = _model_ckpt(tmp_path)
    torch.save({"model": m.state_dict()}, tmp_path / "m.pt")
    res = runner.invoke(app, ["convert", str(tmp_path / "m.pt"), "-o", str(tmp_path / "c.safetensors")])
    assert res.exit_code == 0, res.output
    ck = load_checkpoint(tmp_path / "c.safetensors")
    assert ck.tables["emb"].kind == "mlet"
    res = runner.invoke(app, ["convert", str(tmp_path / "c.safetensors"), "-o", str(tmp_path / "back.pt")])
    assert res.exit_code == 0, res.output
    back = torch.load(tmp_path / "back.pt", weights_only=True)  # a plain state dict: MLET factors collapsed
    ref = {k: v.detach().clone() for k, v in m.state_dict().items()}
    collapse(m)
    assert back.keys() == m.state_dict().keys()
    assert torch.equal(back["lin.weight"], ref["lin.weight"])
    assert torch.allclose(back["emb.weight"], ref["emb.table"] @ ref["emb.proj"].T, rtol=1e-6, atol=1e-6)


def test_every_command_has_help_with_example():
    for cmd in ("collapse", "inspect", "convert", "svd", "quantize", "benchmark", "cache"):
        res = runner.invoke(app, [cmd, "--help"])
        assert res.exit_code == 0 and "Example" in res.stdout, cmd
