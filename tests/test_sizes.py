"""Sizes that tell the truth: SVD never grows a table, reports say bytes before → after (tables and file),
benchmark refuses a reference of another model and times tiny tables over many calls."""

import json

import pytest
import torch
from safetensors import safe_open
from torch import nn
from typer.testing import CliRunner

import mlet_compress as mc
from mlet_compress.benchmark import benchmark_checkpoint, time_call
from mlet_compress.cli.app import app, error_line
from mlet_compress.errors import ConfigError, TargetingError
from mlet_compress.stages.lowrank import saves_nothing

runner = CliRunner()


def _model(seed=0):
    torch.manual_seed(seed)
    m = nn.ModuleDict({"big": nn.Embedding(400, 8), "small": nn.Embedding(12, 8), "lin": nn.Embedding(30, 1)})
    with torch.no_grad():  # big: rank 2 plus small noise, so energy 0.99 keeps rank 2; small: full rank
        m["big"].weight.copy_(torch.randn(400, 2) @ torch.randn(2, 8) + 1e-3 * torch.randn(400, 8))
    return m


@pytest.mark.parametrize("n,d,r,skip", [(1000, 8, 8, True), (1000, 8, 7, False), (12, 8, 5, True), (12, 8, 4, False),
                                        (10, 10, 5, True), (10, 10, 4, False)])
def test_saves_nothing_is_the_value_count(n, d, r, skip):
    assert (saves_nothing(n, d, r) is not None) == skip == (r * (n + d) >= n * d)


def test_svd_skips_tables_it_cannot_shrink_models_and_files(tmp_path):
    m = _model()
    src = mc.save_checkpoint(m, tmp_path / "m.safetensors")
    rep = mc.compress_checkpoint(src, mc.LowRankConfig(energy=0.99))
    assert set(rep) == {"big"} and rep["big"]["rank"] == 2
    assert rep["big"]["bytes_before"] == 400 * 8 * 4 and rep["big"]["bytes_after"] == (400 * 2 + 2 * 8) * 4
    assert rep.skipped["small"].startswith("rank 8 of d=8 saves nothing: A and B hold 8·(12+8) = 160 values")
    assert "1-dim" in rep.skipped["lin"]
    ck = mc.load_checkpoint(rep.output)
    assert ck.tables["small"].kind == "plain" and torch.equal(ck.tensors["small.weight"], m["small"].weight)
    mrep = mc.compress_(m, mc.LowRankConfig(energy=0.99))  # the same policy in memory
    assert set(mrep) == {"big"} and mrep.skipped["small"] == rep.skipped["small"]
    assert type(m["small"]) is nn.Embedding
    with pytest.raises(TargetingError, match="every selected table was skipped.*saves nothing"):
        mc.compress_checkpoint(src, mc.LowRankConfig(rank=8), tmp_path / "never.safetensors")
    assert not (tmp_path / "never.safetensors").exists()


def test_cli_reports_bytes_skips_and_file_sizes(tmp_path):
    m = _model()
    mc.wrap(m, mc.MLETConfig(inner_dim=16, target_modules=["big", "small"]))
    src = mc.save_checkpoint(m, tmp_path / "f.safetensors")
    res = runner.invoke(app, ["collapse", str(src), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["tables"]["big"]["bytes_before"] == (400 * 16 + 8 * 16) * 4 and doc["tables"]["big"]["bytes_after"] == 400 * 8 * 4
    collapsed = tmp_path / "f.collapsed.safetensors"
    assert doc["totals"]["file_bytes_after"] == collapsed.stat().st_size
    res = runner.invoke(app, ["svd", str(collapsed), "--rank", "5"])
    assert res.exit_code == 0, res.output
    assert "skipped small: rank 5 of d=8 saves nothing" in res.stderr and "file:" in res.stderr
    assert "total (1 tables)" in res.stdout and "skipped lin: a 1-dim table has nothing to factorise" in res.stderr
    res = runner.invoke(app, ["quantize", str(collapsed), "--bits", "8"])
    res = runner.invoke(app, ["svd", str(tmp_path / "f.collapsed.q8.safetensors"), "--rank", "2", "--tables", "big"])
    assert res.exit_code == 1 and "svd before quantize" in error_line(res.exception)


def test_skips_for_the_same_reason_share_a_line(capsys):
    from mlet_compress.cli.stages_cmds import print_skipped

    print_skipped({f"t{i}": "a 1-dim table" for i in range(8)} | {"u": "other"})
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["skipped 8 tables (t0, t1, t2, t3, t4, t5 and 2 more): a 1-dim table", "skipped u: other"]


def _file_tensor_bytes(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k).numel() * f.get_tensor(k).element_size() for k in f.keys()}


def test_benchmark_reports_file_bytes_and_embedding_share(tmp_path):
    m = _model()
    m["dense"] = nn.Linear(64, 64)  # dense weights the stages never touch
    src = mc.save_checkpoint(m, tmp_path / "m.safetensors", extra={"vocab": ["x" * 50] * 200})
    q = mc.compress_checkpoint(src, mc.QuantConfig(bits=4)).output
    rep = benchmark_checkpoint(q, src, batch=16, repeats=2, threads=1, min_seconds=1e-4)
    f = rep["file"]
    assert f["bytes_before"] == src.stat().st_size and f["bytes_after"] == q.stat().st_size
    assert f["ratio"] == pytest.approx(src.stat().st_size / q.stat().st_size)
    sizes = _file_tensor_bytes(q)
    tables = sum(v for k, v in sizes.items() if not k.startswith("dense."))
    assert rep["totals"]["bytes_after"] == tables
    assert f["embedding_share_after"] == pytest.approx(tables / q.stat().st_size)
    assert f["other_tensor_bytes_after"] == (64 * 64 + 64) * 4
    assert rep["totals"]["ratio"] > 2 * f["ratio"]  # the tables shrank far more than the file
    assert rep["threads"] == 1 and torch.get_num_threads() != 0
    row = rep["tables"][0]
    assert row["ours_ms_min"] <= row["ours_ms"] <= row["ours_ms_max"] and row["ours_calls"] >= 1


def test_benchmark_refuses_a_reference_of_another_model(tmp_path):
    src = mc.save_checkpoint(_model(), tmp_path / "m.safetensors")
    q = mc.compress_checkpoint(src, mc.QuantConfig(bits=8)).output
    other = nn.ModuleDict({"big": nn.Embedding(401, 8), "small": nn.Embedding(12, 8), "extra": nn.Embedding(5, 4)})
    ref = mc.save_checkpoint(other, tmp_path / "other.safetensors")
    with pytest.raises(ConfigError, match=r"only in .*\['lin'\].*only in the reference: \['extra'\].*big 400×8 vs 401×8"):
        benchmark_checkpoint(q, ref, repeats=1)
    res = runner.invoke(app, ["benchmark", str(q), "--reference", str(ref)])
    assert res.exit_code == 1 and error_line(res.exception).startswith("error: --reference ")


def test_time_call_repeats_tiny_calls_within_one_timing(tmp_path):
    t = time_call(lambda: None, repeats=3, min_seconds=1e-3)
    assert t["calls"] >= 2 and t["min"] <= t["median"] <= t["max"]
    src = mc.save_checkpoint(_model(), tmp_path / "m.safetensors")
    before = torch.get_num_threads()
    with pytest.raises(ConfigError, match="threads"):
        benchmark_checkpoint(src, threads=0)
    assert torch.get_num_threads() == before
