"""Checkpoint schema, round trips, streaming collapse, and bad input handling."""

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from conftest import ToyModel, toy_batch
from mlet_compress import (
    MLETConfig, collapse, collapse_checkpoint, inspect_checkpoint, load_checkpoint, save_checkpoint, wrap,
)
from mlet_compress.checkpoint import META_KEY, SCHEMA_VERSION
from mlet_compress.errors import CheckpointError, NumericalError, TargetingError
from mlet_compress.schema import Factor
from mlet_compress.safetensors_io import read_header


def _trained_wrapped(seed=0):
    torch.manual_seed(seed)
    m = wrap(ToyModel(), MLETConfig(inner_dim=16))
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    for s in range(2):
        opt.zero_grad()
        m(*toy_batch(s)).pow(2).mean().backward()
        opt.step()
    return m


def test_round_trip_is_bit_exact(tmp_path):
    m = _trained_wrapped()
    p = save_checkpoint(m, tmp_path / "w.safetensors", model_info={"name": "toy", "config": {}}, extra={"a": 1})
    ck = load_checkpoint(p)
    sd = m.state_dict()
    assert sorted(ck.state_dict()) == sorted(sd)
    for k, v in sd.items():
        assert torch.equal(ck.state_dict()[k], v), k
    assert ck.model_info == {"name": "toy", "config": {}} and ck.extra == {"a": 1}
    assert ck.tables["user"].kind == "mlet" and ck.tables["user"].aliases == ("user_alias",)
    assert ck.tables["features.tables.tags"].module == "embedding_bag"
    assert ck.tables["features.tables.tags"].options["mode"] == "sum"
    assert ck.tables["features.tables.linear"].kind == "plain"
    assert ck.tables["user"].factors["proj"] == Factor("user.proj", (8, 16), "float32")


@pytest.mark.parametrize("chunk_rows", [1, 7, 65536])
def test_cli_level_collapse_equals_module_collapse(tmp_path, chunk_rows):
    m = _trained_wrapped()
    src = save_checkpoint(m, tmp_path / "w.safetensors")
    src_bytes = src.read_bytes()
    out = collapse_checkpoint(src, chunk_rows=chunk_rows)
    assert out == tmp_path / "w.collapsed.safetensors"
    assert src.read_bytes() == src_bytes  # input untouched
    collapse(m)
    ck = load_checkpoint(out)
    sd = m.state_dict()
    assert sorted(ck.state_dict()) == sorted(sd)
    for k, v in sd.items():  # equal up to float32 round-off of the k-term dot products
        torch.testing.assert_close(ck.state_dict()[k], v, rtol=1e-6, atol=1e-6, msg=k)
    fresh = ToyModel()
    fresh.load_state_dict(ck.state_dict(), strict=True)
    assert ck.tables["user"].kind == "plain"
    assert [s.stage for s in ck.tables["user"].stages] == ["mlet", "collapse"]
    assert not list(tmp_path.glob(".*.tmp"))  # no temp files left behind


def test_save_state_dict_infers_mlet_pairs(tmp_path):
    sd = _trained_wrapped().state_dict()
    ck = load_checkpoint(save_checkpoint(sd, tmp_path / "sd.safetensors"))
    assert {n for n, e in ck.tables.items() if e.kind == "mlet"} >= {"user", "features.tables.item"}


def test_inspect_reports_dims_and_bytes(tmp_path):
    m = _trained_wrapped()
    rep = inspect_checkpoint(save_checkpoint(m, tmp_path / "w.safetensors"))
    row = next(r for r in rep.tables if r.name == "user")
    assert (row.layout, row.rows, row.n, row.k, row.d) == ("mlet", 60, 60, 16, 8)
    assert row.bytes == (60 * 16 + 8 * 16) * 4
    assert rep.totals["tables"] == 4


def _write_meta(path, meta, tensors=None):
    save_file(tensors or {"t.weight": torch.zeros(2, 2)}, str(path), metadata=meta)


def test_bad_inputs_give_clear_errors(tmp_path):
    m = _trained_wrapped()
    good = save_checkpoint(m, tmp_path / "good.safetensors")
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"hello world, not a checkpoint")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(tmp_path / "junk.safetensors")
    raw = good.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(raw[: len(raw) - 100])
    with pytest.raises(CheckpointError, match="truncated"):
        collapse_checkpoint(tmp_path / "trunc.safetensors")
    _write_meta(tmp_path / "nometa.safetensors", {"other": "x"})
    with pytest.raises(CheckpointError, match="no 'mlet_compress' metadata"):
        load_checkpoint(tmp_path / "nometa.safetensors")
    newer = json.dumps({"schema_version": SCHEMA_VERSION + 1, "tables": {}})
    _write_meta(tmp_path / "newer.safetensors", {META_KEY: newer})
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(tmp_path / "newer.safetensors")
    _write_meta(tmp_path / "nover.safetensors", {META_KEY: json.dumps({"tables": {}})})
    with pytest.raises(CheckpointError, match="schema_version"):
        load_checkpoint(tmp_path / "nover.safetensors")


def test_shape_mismatch_and_nan_refused(tmp_path):
    entry = {
        "module": "embedding", "kind": "mlet", "num_embeddings": 10, "embedding_dim": 4, "options": {}, "hash": None,
        "factors": {"table": {"key": "e.table", "shape": [10, 8], "dtype": "float32"},
                    "proj": {"key": "e.proj", "shape": [4, 6], "dtype": "float32"}},
        "stages": [],
    }
    meta = {META_KEY: json.dumps({"schema_version": 1, "tables": {"e": entry}})}
    _write_meta(tmp_path / "bad.safetensors", meta, {"e.table": torch.zeros(10, 8), "e.proj": torch.zeros(4, 6)})
    with pytest.raises(CheckpointError, match="inner dimension"):
        collapse_checkpoint(tmp_path / "bad.safetensors")
    m = _trained_wrapped()
    with torch.no_grad():
        m.features.tables["item"].table[5, 2] = float("inf")
    src = save_checkpoint(m, tmp_path / "nan.safetensors")
    with pytest.raises(NumericalError, match="features.tables.item"):
        collapse_checkpoint(src, chunk_rows=4)
    assert not (tmp_path / "nan.collapsed.safetensors").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_output_rules(tmp_path):
    src = save_checkpoint(_trained_wrapped(), tmp_path / "w.safetensors")
    before = src.read_bytes()
    with pytest.raises(CheckpointError, match="is the input"):
        collapse_checkpoint(src, src)
    out = collapse_checkpoint(src)
    with pytest.raises(CheckpointError, match="already exists"):
        collapse_checkpoint(src)
    collapse_checkpoint(src, out, force=True)
    assert src.read_bytes() == before
    with pytest.raises(TargetingError, match="no MLET"):
        collapse_checkpoint(out)


def test_streaming_writer_layout_is_valid_safetensors(tmp_path):
    src = save_checkpoint(_trained_wrapped(), tmp_path / "w.safetensors")
    out = collapse_checkpoint(src, chunk_rows=3)
    raw = out.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 8 == 0
    _, infos, start = read_header(out)
    assert start + max(i.end for i in infos.values()) == len(raw)
