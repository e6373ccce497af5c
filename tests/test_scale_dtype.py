"""float16 scales (``scale_dtype="fp16"``): codes of the rounded scale, the error bound, range refusals, the schema.

Bound: with s16 = s(1 + δ), |δ| ≤ 2^-11 (round to nearest, fp16 normal range), the codes q16 of s16 are
per element the nearest level of s16·[-qmax, qmax], so ‖w − s16·q16‖ ≤ ‖w − s16·q32‖ ≤ ‖w − s·q32‖ +
|δ|·‖s·q32‖: the fp16 error is at most the fp32 error plus 2^-11·‖Ŵ32‖ (per row, and by Minkowski per table).
"""

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import mlet_compress as mc
from mlet_compress.cli.app import app, error_line
from mlet_compress.errors import CheckpointError, NumericalError
from mlet_compress.ops.quant import cast_scale, dequantize, quantize, quantize_tensor, search_scale, unpack_rows
from mlet_compress.schema import Factor, QuantSpec

DELTA = 2.0**-11


def row_errors(w, qt):
    return ((w.double() - qt.dequantize().double()) ** 2).sum(1).sqrt()


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("granularity", ["row", "table"])
def test_fp16_codes_use_the_rounded_scale_and_cost_at_most_the_bound(bits, granularity):
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(1000, 16, generator=g) * (torch.rand(1000, 1, generator=g) * 4 + 0.05)  # scales within fp16
    q32 = quantize_tensor(w, bits=bits, granularity=granularity)
    q16 = quantize_tensor(w, bits=bits, granularity=granularity, scale_dtype="fp16")
    assert q16.scale.dtype == torch.float16 and torch.equal(q16.scale, q32.scale.half())
    assert torch.equal(q16.codes(), quantize(w, q16.scale.float(), bits))  # consistent dequantization
    norm32 = (q32.dequantize().double() ** 2).sum(1).sqrt()
    e32, e16 = row_errors(w, q32), row_errors(w, q16)
    slack = 1e-6 * norm32  # float32 round-off of the quantizer's own division
    if granularity == "row":
        assert bool((e16 <= e32 + DELTA * norm32 + slack).all())
    total32, total16 = float((e32**2).sum()) ** 0.5, float((e16**2).sum()) ** 0.5
    assert total16 <= total32 + DELTA * float((norm32**2).sum()) ** 0.5 * (1 + 1e-6)
    assert q16.l2_error == pytest.approx(total16, rel=1e-9)


def test_fp16_refuses_what_it_cannot_hold():
    """Only overflow is refused (tiny scales are stored as subnormals: the next test)."""
    w = torch.randn(20, 8)
    w[7] *= 1e7  # at 2 bits the scale is ≈ max|w| ≈ 1e7 > 65504
    with pytest.raises(NumericalError, match=r"row 7's scale .* overflows float16.*scale_dtype='fp32'"):
        search_scale(w, bits=2, granularity="row", scale_dtype="fp16")
    with pytest.raises(NumericalError) as exc:
        mc.compress_(nn.ModuleDict({"t": nn.Embedding.from_pretrained(w)}), mc.QuantConfig(bits=2, granularity="row", scale_dtype="fp16"))
    assert "--scale-dtype 'fp32'" in error_line(exc.value)
    assert cast_scale(torch.tensor([1.0, 3.0]), "fp32").dtype == torch.float32
    with pytest.raises(mc.ConfigError, match="scale_dtype"):
        mc.QuantConfig(scale_dtype="bf16")


def test_quant_spec_records_the_scale_dtype():
    q = QuantSpec(8, "row", "t.scale", "float16")
    f = Factor("t.qweight", (4, 3), "float32", q)
    assert Factor.from_json(f.to_json(), "t") == f
    old = {"key": "t.qweight", "shape": [4, 3], "quant": {"bits": 8, "granularity": "row", "scale_key": "t.scale"}}
    assert Factor.from_json(old, "t").quant.scale_dtype == "float32"  # files written before the field
    old["quant"]["scale_dtype"] = "bfloat16"
    with pytest.raises(CheckpointError, match="scale_dtype"):
        Factor.from_json(old, "t")


def test_file_and_model_paths_store_fp16_scales(tmp_path):
    torch.manual_seed(0)
    model = nn.ModuleDict({"emb": nn.Embedding(300, 8), "bag": nn.EmbeddingBag(200, 16, mode="sum")})
    src = mc.save_checkpoint(model, tmp_path / "m.safetensors")
    cfg = mc.QuantConfig(bits=4, granularity="row", scale_dtype="fp16")
    rep = mc.compress_checkpoint(src, cfg)
    assert rep.output.name == "m.q4row-fp16.safetensors" and rep["emb"]["scale_dtype"] == "fp16"
    ck = mc.load_checkpoint(rep.output)
    assert ck.tables["emb"].quant.scale_dtype == "float16" and ck.tensors["emb.scale"].dtype == torch.float16
    mods = mc.load_lookup_modules(rep.output)
    assert mods["emb"].scale_dtype == torch.float16 and mods["emb"].scale.dtype == torch.float16
    mc.compress_(model, cfg)
    assert torch.equal(model["emb"].scale, ck.tensors["emb.scale"])
    again = mc.save_checkpoint(model, tmp_path / "again.safetensors")
    assert mc.load_checkpoint(again).tables["emb"].to_json() == ck.tables["emb"].to_json()
    w = mc.reconstruct(rep.output)["bag"]
    assert torch.equal(w, dequantize(unpack_rows(ck.tensors["bag.qweight"], 4, 16), ck.tensors["bag.scale"]))


def test_header_must_match_the_scale_tensor(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    model = nn.ModuleDict({"emb": nn.Embedding(30, 8)})
    mc.compress_(model, mc.QuantConfig(bits=8, granularity="row", scale_dtype="fp16"))
    path = mc.save_checkpoint(model, tmp_path / "q.safetensors")
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    tensors = load_file(str(path))
    tensors["emb.scale"] = tensors["emb.scale"].float()
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="float16 but the file holds float32"):
        mc.load_checkpoint(tmp_path / "bad.safetensors")


def test_cli_scale_dtype(tmp_path):
    src = mc.save_checkpoint(nn.ModuleDict({"emb": nn.Embedding(100, 8)}), tmp_path / "m.safetensors")
    res = CliRunner().invoke(app, ["quantize", str(src), "--granularity", "row", "--scale-dtype", "fp16", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["output"].endswith("m.q8row-fp16.safetensors") and rep["tables"]["emb"]["scale_dtype"] == "fp16"
    res = CliRunner().invoke(app, ["quantize", str(src), "--scale-dtype", "fp8"])
    assert res.exit_code != 0 and "scale_dtype must be 'fp32' or 'fp16'" in error_line(res.exception)


def test_fp16_subnormal_scales_of_tiny_rows():
    """Rows far below fp16's normal range (never-trained rows of a collapsed table) get subnormal scales; the
    codes use the rounded scale, so each row's error grows by at most 2^-11·‖Ŵ32‖ + 2^-25·‖q16‖."""
    torch.manual_seed(3)
    w = torch.randn(64, 8) * 0.05
    w[:8] *= 1e-3      # scales ≈ 1e-6: subnormal in fp16
    w[8:10] *= 1e-6    # scales ≈ 1e-9: would round to 0 -> the smallest subnormal
    w[10] = 0.0        # an all-zero row
    q32 = quantize_tensor(w, bits=8, granularity="row")
    q16 = quantize_tensor(w, bits=8, granularity="row", scale_dtype="fp16")
    s16 = q16.scale.float()
    assert q16.scale.dtype == torch.float16 and bool((s16 > 0).all())
    assert bool((s16[:10] < 2.0**-14).all()) and float(s16[8]) == 2.0**-24
    assert torch.equal(q16.codes(), quantize(w, s16, 8))
    e32, e16 = row_errors(w, q32), row_errors(w, q16)
    bound = e32 + DELTA * (q32.dequantize().double() ** 2).sum(1).sqrt() + 2.0**-25 * q16.codes().double().norm(dim=1)
    assert bool((e16 <= bound * (1 + 1e-5) + 1e-12).all())
    assert bool((e16[:8] < 0.05 * w[:8].double().norm(dim=1)).all())  # ≈ 2 % relative: the tiny rows survive
