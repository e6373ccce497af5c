"""Export (mlet_compress.export): every table kind and bag mode, as ONNX run by onnxruntime and as a torch.export
program, equals the torch lookup modules; whole models too; the CLI writes both formats.

The ONNX tests skip cleanly without the ``[export]`` extra (onnx, onnxruntime, onnxscript); the pt2 tests
need only torch. Tolerance: 1e-5 relative to the output's magnitude (float32 re-association of the bag sums);
``test_the_comparison_catches_*`` show that a wrong nibble order, a missing scale or a bag off by one fail it.
"""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import mlet_compress as mc
from mlet_compress.cli.app import app
from mlet_compress.layers.hashed import HashedEmbedding, HashedEmbeddingBag
from mlet_compress.layers.lowrank import to_low_rank
from mlet_compress.layers.quantized import to_quantized
from mlet_compress.models import build_model

HAS_ORT = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime"))
HAS_SCRIPT = HAS_ORT and importlib.util.find_spec("onnxscript") is not None
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="onnx/onnxruntime not installed (pip install mlet-compress[export])")
needs_script = pytest.mark.skipif(not HAS_SCRIPT, reason="onnxscript not installed (pip install mlet-compress[export])")
ROWS, DIM = 40, 6


def close(got, want) -> float:
    """Max |got - want| divided by max(1, max |want|): the relative error the tolerance bounds."""
    got, want = torch.as_tensor(np.asarray(got)), want.detach().float()
    assert got.shape == want.shape, (got.shape, want.shape)
    return float((got - want).abs().max()) / max(1.0, float(want.abs().max())) if want.numel() else 0.0


def _bag(mode="sum", **kw):
    return nn.EmbeddingBag(ROWS, DIM, mode=mode, **kw)


def _table(kind: str) -> nn.Module:
    """One lookup module per kind name: '<base>[-<bag mode>][-pad][-ilo][-hash]', quantized 'q<bits><t|r>-...'."""
    torch.manual_seed(sum(map(ord, kind)))
    parts = kind.split("-")
    base, mode = parts[0], next((p for p in parts if p in ("sum", "mean", "max")), None)
    opts = {"padding_idx": 3} if "pad" in parts else {}
    if mode and "ilo" in parts:
        opts["include_last_offset"] = True
    if "hash" in parts:
        plain = HashedEmbeddingBag(ROWS // 3, DIM, mode=mode, original_num_embeddings=ROWS, **opts) if mode else \
            HashedEmbedding(ROWS // 3, DIM, original_num_embeddings=ROWS, **opts)
    else:
        plain = _bag(mode, **opts) if mode else nn.Embedding(ROWS, DIM, **opts)
    if base == "plain":
        return plain
    if base == "mlet":
        cls = mc.MLETEmbeddingBag if mode else mc.MLETEmbedding
        return cls(ROWS, DIM, 9, **({"mode": mode} if mode else {}), **opts)
    if base == "lowrank":
        return to_low_rank(plain, rank=3)
    bits, gran = int(base[1]), {"t": "table", "r": "row"}[base[2]]
    src = to_low_rank(plain, rank=3) if "lr" in parts else plain
    q = to_quantized(src, bits=bits, granularity=gran)
    if "fp16" in parts:  # the checkpoint format may carry float16 scales
        q.scale = q.scale.half()
    return q


KINDS = [
    "plain", "plain-sum", "plain-mean", "plain-max", "plain-sum-pad", "plain-mean-pad", "plain-max-pad",
    "plain-sum-ilo", "plain-hash", "plain-mean-hash-pad", "mlet", "mlet-sum", "mlet-mean-pad", "lowrank",
    "lowrank-sum", "lowrank-mean-pad-ilo", "lowrank-sum-hash",
    *[f"q{b}{g}{m}" for b in (2, 3, 4, 5, 8) for g in "tr" for m in ("", "-sum", "-mean")],
    "q4r-sum-pad", "q2t-mean-pad", "q8r-max", "q4t-max-pad", "q8r-mean-lr", "q4r-sum-lr-pad", "q2r-sum-hash",
    "q4r-mean-hash-lr", "q8r-fp16", "q4r-sum-fp16", "q3t-mean-ilo",
]

IDX = torch.tensor([1, 3, 3, 7, 39, 0, 3, 12, 8, 25, 3, 30, 17, 5])
OFFSETS = torch.tensor([0, 0, 3, 3, 4, 9, 14, 14])  # empty bags first, in the middle and last (offset == N)


def _inputs(mod: nn.Module, name: str, idx=IDX, offsets=OFFSETS, psw=True):
    """(feeds for the exported graph, the torch module's output) on variable-length and empty bags."""
    feeds = {f"{name}.indices": idx}
    if not hasattr(mod, "mode"):
        return feeds, mod(idx)
    if mod.include_last_offset:
        offsets = torch.cat([offsets, torch.tensor([idx.numel()])])
    feeds[f"{name}.offsets"] = offsets
    if psw and mod.mode == "sum":
        w = torch.rand(idx.numel(), generator=torch.Generator().manual_seed(1)) + 0.5
        feeds[f"{name}.per_sample_weights"] = w
        return feeds, mod(idx, offsets, per_sample_weights=w)
    return feeds, mod(idx, offsets)


def _ort_run(path, feeds):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {k: v.numpy() for k, v in feeds.items()})))


# ------------------------------------------------------------------ ONNX, every kind


@needs_ort
@pytest.mark.parametrize("kind", KINDS)
def test_onnx_equals_torch_for_every_kind(tmp_path, kind):
    mod = _table(kind)
    res = mc.export_onnx({"t": mod}, tmp_path / "t.onnx", per_sample_weights=True)
    feeds, want = _inputs(mod, "t")
    assert set(res.inputs) == set(feeds)
    assert close(_ort_run(res.output, feeds)["t"], want) <= 1e-5
    if hasattr(mod, "mode"):  # no ids at all: every bag empty
        feeds, want = _inputs(mod, "t", IDX[:0], torch.zeros(3, dtype=torch.int64))
        assert close(_ort_run(res.output, feeds)["t"], want) == 0.0


@needs_ort
@pytest.mark.parametrize("kind", ["q4r-sum", "q2t-mean", "q3r"])
def test_low_bit_int8_form_equals_packed_and_costs_what_it_says(tmp_path, kind):
    mod = _table(kind)
    packed = mc.export_onnx({"t": mod}, tmp_path / "p.onnx")
    int8 = mc.export_onnx({"t": mod}, tmp_path / "u.onnx", low_bit="int8")
    feeds, want = _inputs(mod, "t", psw=False)
    assert close(_ort_run(int8.output, feeds)["t"], want) <= 1e-5
    per = 8 // (2 if mod.bits == 2 else 4)
    codes = mod.state_dict()["qweight"].numel()
    assert packed.tables["t"]["bytes_export"] == packed.tables["t"]["bytes_source"]
    assert int8.tables["t"]["bytes_export"] - packed.tables["t"]["bytes_export"] == ROWS * mod.code_dim - codes
    assert ROWS * mod.code_dim <= per * codes
    assert any("unpacked to int8" in n for n in int8.notes) and any("stay packed" in n for n in packed.notes)
    import onnx

    def code_bytes(path):  # what the file stores for the codes
        return sum(len(i.raw_data) for i in onnx.load(str(path)).graph.initializer if i.name.startswith("t/codes"))

    assert (code_bytes(packed.output), code_bytes(int8.output)) == (codes, ROWS * mod.code_dim)


@needs_ort
def test_onnx_graph_keeps_codes_quantized(tmp_path):
    import onnx

    mods = {"q8": _table("q8r-sum"), "q4": _table("q4t"), "lr": _table("q8r-mean-lr"), "h": _table("plain-hash")}
    res = mc.export_onnx(mods, tmp_path / "m.onnx")
    m = onnx.load(str(res.output))
    inits = {i.name: i for i in m.graph.initializer}
    assert inits["q8/codes_int8"].data_type == onnx.TensorProto.INT8
    assert inits["q4/codes_packed"].data_type == onnx.TensorProto.UINT8
    assert tuple(inits["q4/codes_packed"].dims) == (ROWS, 3)  # 6 codes of 4 bits: 3 bytes per row
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("DequantizeLinear") == 3 and "Mod" in ops and "MatMul" in ops and "EmbeddingBag" not in ops
    assert not any(i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2 and i.dims[0] == ROWS
                   for n, i in inits.items() if n.startswith(("q8", "q4")))  # no dequantized copy of the table


def _broken(monkeypatch, what):
    """Break one step of the graph builder on purpose."""
    from mlet_compress.export import onnx_graph as og

    if what == "nibbles":  # high nibble first
        monkeypatch.setattr(og, "shift_amounts", lambda cb: list(range(0, 8, cb))[::-1])
    elif what == "scale":  # codes not scaled
        monkeypatch.setattr(og, "_scale", lambda g, p, spec, idx: g.const(p, np.array(1.0, np.float32)))
    elif what == "bags":  # every index one bag late
        segments = og._segments

        def late(g, p, spec, idx, offsets):
            seg, n_bags = segments(g, p, spec, idx, offsets)
            return g.op(p, "Add", [seg, g.const(p, np.array(1, np.int64))]), n_bags

        monkeypatch.setattr(og, "_segments", late)


@needs_ort
@pytest.mark.parametrize("what,kind", [("nibbles", "q4r-sum"), ("scale", "q8t"), ("bags", "plain-sum")])
def test_the_comparison_catches_a_broken_graph(tmp_path, monkeypatch, what, kind):
    mod = _table(kind)
    _broken(monkeypatch, what)
    res = mc.export_onnx({"t": mod}, tmp_path / "t.onnx")
    feeds, want = _inputs(mod, "t", psw=False)
    assert close(_ort_run(res.output, feeds)["t"], want) > 1e-2


# ------------------------------------------------------------------ pt2 (torch.export), every kind


PROGRAM_KINDS = ["plain", "plain-sum-ilo", "plain-mean-hash-pad", "mlet-mean-pad", "lowrank-mean-pad-ilo", "q2t-sum",
                 "q4r-mean", "q4r-sum-lr-pad", "q8r-max", "q8t-mean-hash", "q4r-sum-fp16"]


def test_program_equals_torch_for_every_kind(tmp_path):
    mods = {k.replace("-", "_"): _table(k) for k in PROGRAM_KINDS}  # one program, many tables: one trace
    res = mc.export_program(mods, tmp_path / "t.pt2", per_sample_weights=True)
    prog = torch.export.load(res.output).module()
    for idx, offs in ((IDX, OFFSETS), (IDX[:5], torch.tensor([0, 2, 2]))):  # sizes other than the example's
        feeds, want = {}, {}
        for name, mod in mods.items():
            f, want[name] = _inputs(mod, name, idx, offs)
            feeds.update(f)
        with torch.no_grad():
            got = prog(feeds)
        for name in mods:
            assert close(got[name], want[name]) <= 1e-5, name
    assert all(t["bytes_export"] == t["bytes_source"] for t in res.tables.values())  # codes stay packed


# ------------------------------------------------------------------ checkpoints, runs, whole models


def _ctr(name="dlrm", tmp_path=None):
    torch.manual_seed(0)
    model = build_model(name, vocab_sizes=[50, 7, 300, 20], num_dense=3, embed_dim=8)
    mc.compress_(model, mc.HashConfig(num_buckets=64, min_rows=1), filter_fn=lambda n, m: n.endswith("C2"))
    mc.compress_(model, mc.LowRankConfig(rank=3), filter_fn=lambda n, m: n.endswith("embedding.tables.C1"))
    mc.compress_(model, mc.QuantConfig(bits=4, granularity="row"), filter_fn=lambda n, m: n.endswith(("C0", "C2")))
    mc.compress_(model, mc.QuantConfig(bits=8), filter_fn=lambda n, m: n.endswith("embedding.tables.C3"))
    return model.eval()


def _batch(model, b=9):
    g = torch.Generator().manual_seed(b)
    sizes = model.config["vocab_sizes"]
    sparse = torch.stack([torch.randint(0, 2 * n, (b,), generator=g) % n for n in sizes], 1)
    return torch.randn(b, model.num_dense, generator=g), sparse


def _run_dir(tmp_path, model):
    run = tmp_path / "run"
    run.mkdir()
    mc.save_checkpoint(model, run / "model.safetensors", model_info={"name": model.name, "config": model.config})
    (run / "config.json").write_text(json.dumps({"model_info": {"name": model.name, "config": model.config}}))
    return run


@needs_script
@pytest.mark.parametrize("name", ["dlrm", "deepfm"])
def test_whole_model_onnx_from_run_dir(tmp_path, name):
    model = _ctr(name)
    run = _run_dir(tmp_path, model)
    if name == "dlrm":
        res = mc.export_onnx(run).to_dict()
    else:  # the command line: a run directory exports the model
        r = CliRunner().invoke(app, ["export", str(run), "--to", "onnx", "--json"])
        assert r.exit_code == 0, r.output
        res = json.loads(r.stdout)
    assert res["output"] == str(run / "model.onnx") and res["what"] == "model"
    assert res["inputs"] == {"dense": "float32[batch, 3]", "sparse": "int64[batch, 4]"}
    assert "quantized 4-bit row, hashed mod 64" in res["tables"]["embedding.tables.C2"]["layout"]
    import onnx

    m = onnx.load(res["output"])
    assert sum(n.op_type == "DequantizeLinear" for n in m.graph.node) >= 3
    for b in (1, 9, 33):  # any batch size
        dense, sparse = _batch(model, b)
        with torch.no_grad():
            want = model(dense, sparse)
        got = _ort_run(res["output"], {"dense": dense, "sparse": sparse})["logits"]
        assert close(got, want) <= 1e-5


@needs_script
def test_checkpoint_with_model_config_and_program(tmp_path):
    model = _ctr("dlrm")
    run = _run_dir(tmp_path, model)
    res = mc.export_onnx(run / "model.safetensors", tmp_path / "m.onnx", model_config=run / "config.json")
    prog_res = mc.export_program(run)
    assert prog_res.output == run / "model.pt2"
    prog = torch.export.load(prog_res.output)
    dense, sparse = _batch(model, 17)
    with torch.no_grad():
        want = model(dense, sparse)
        assert close(prog.module()(dense, sparse), want) <= 1e-5
    assert close(_ort_run(res.output, {"dense": dense, "sparse": sparse})["logits"], want) <= 1e-5
    tables = dict(model.embedding.tables.named_children())
    res = mc.export_program(model, tmp_path / "m.pt2", example_inputs=_batch(model, 2))  # an nn.Module as it is
    assert dict(model.embedding.tables.named_children()) == tables  # the model keeps its own tables
    with torch.no_grad():
        assert close(torch.export.load(res.output).module()(dense, sparse), want) <= 1e-5


@needs_ort
def test_checkpoint_tables_export_and_cli(tmp_path):
    model = _ctr("wdl")
    ck = mc.save_checkpoint(model, tmp_path / "m.safetensors")
    r = CliRunner().invoke(app, ["export", str(ck), "--to", "onnx", "--tables", r"embedding\..*", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["output"] == str(tmp_path / "m.onnx") and len(rep["tables"]) == 4
    mods = mc.load_lookup_modules(ck)
    dense, sparse = _batch(model, 5)
    feeds = {f"embedding.tables.C{i}.indices": sparse[:, i] for i in range(4)}
    got = _ort_run(rep["output"], feeds)
    for i in range(4):
        name = f"embedding.tables.C{i}"
        assert close(got[name], mods[name](sparse[:, i])) <= 1e-5
    r = CliRunner().invoke(app, ["export", str(ck), "--to", "pt2"])
    assert r.exit_code == 0 and (tmp_path / "m.pt2").is_file()
    r = subprocess.run([sys.executable, "-m", "mlet_compress.cli.app", "export", str(ck), "--to", "onnx"],
                       capture_output=True, text=True)  # the output exists: refused in one line
    assert r.returncode == 1 and r.stderr.strip().endswith("already exists; pass --force to overwrite it")


def test_bad_inputs_are_one_line_errors(tmp_path):
    ck = mc.save_checkpoint(nn.ModuleDict({"e": nn.Embedding(5, 2)}), tmp_path / "c.safetensors")
    with pytest.raises(mc.ConfigError, match="tables="):
        mc.export_program(ck, tables="nope")
    with pytest.raises(mc.CheckpointError, match="model config"):
        mc.export_program(ck, model_config={"x": 1})
    with pytest.raises(mc.CheckpointError, match="no such file"):
        mc.export_program(tmp_path / "missing.safetensors")
    with pytest.raises(mc.ConfigError, match="max_norm"):
        mc.export_program({"e": nn.Embedding(5, 2, max_norm=1.0)}, tmp_path / "x.pt2")
    with pytest.raises(mc.ConfigError, match="dst"):
        mc.export_program({"e": nn.Embedding(5, 2)})
    r = CliRunner().invoke(app, ["export", str(ck), "--to", "tflite"])
    assert r.exit_code == 2 and "onnx, pt2" in r.output


@needs_ort
def test_onnx_option_errors_and_external_data(tmp_path, monkeypatch):
    from mlet_compress.export import onnx_export

    mod = {"e": _table("q4r-sum")}
    with pytest.raises(mc.ConfigError, match="opset"):
        mc.export_onnx(mod, tmp_path / "a.onnx", opset=13)
    with pytest.raises(mc.ConfigError, match="low_bit"):
        mc.export_onnx(mod, tmp_path / "a.onnx", low_bit="int4")
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 100)  # as if the tables were > 2 GiB
    mod = {"e": to_quantized(nn.EmbeddingBag(1000, 8, mode="sum"), bits=4, granularity="row")}
    res = mc.export_onnx(mod, tmp_path / "big.onnx")
    data = (tmp_path / "big.onnx.data").stat().st_size
    assert data >= 4000 + 4000 and res.bytes == data + (tmp_path / "big.onnx").stat().st_size
    feeds, want = _inputs(mod["e"], "e", psw=False)
    assert close(_ort_run(res.output, feeds)["e"], want) <= 1e-5


def test_importing_the_package_does_not_import_onnx():
    code = "import sys, mlet_compress as mc; mc.export_program; print('onnx' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


@needs_ort
def test_onnxruntime_cannot_gather_int4_which_is_why_codes_stay_packed_uint8():
    """docs/export.md's reason for the packed uint8 form; if this starts failing, native int4 became possible."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if not hasattr(TensorProto, "INT4") or onnx.defs.onnx_opset_version() < 21:
        pytest.skip("this onnx has no int4 type")
    codes = helper.make_tensor("codes", TensorProto.INT4, [2, 4], [1, -1, 2, 3, 0, 1, -2, 1])
    graph = helper.make_graph(
        [helper.make_node("Gather", ["codes", "idx"], ["g"]), helper.make_node("DequantizeLinear", ["g", "s"], ["y"])],
        "g", [helper.make_tensor_value_info("idx", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=[codes, helper.make_tensor("s", TensorProto.FLOAT, [], [0.5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    with pytest.raises(Exception, match="int4"):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
