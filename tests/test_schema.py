"""The typed checkpoint schema: JSON round trips, one-line errors naming table and field, 0.1.0 files."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import mlet_compress as mc
from mlet_compress.checkpoint import load_header
from mlet_compress.errors import CheckpointError
from mlet_compress.schema import (
    META_KEY, SCHEMA_VERSION, CheckpointHeader, Factor, HashSpec, QuantSpec, StageRecord, TableEntry,
)

FIXTURES = Path(__file__).parent / "fixtures"
V010 = FIXTURES / "v0.1.0-all-kinds.safetensors"


def _entries():
    q = QuantSpec(4, "row", "q.scale")
    return [
        TableEntry.plain("a", "a.weight", (10, 4), options={"padding_idx": 0, "sparse": True}),
        TableEntry.mlet("m", Factor("m.table", (9, 8)), Factor("m.proj", (4, 8)), module="embedding_bag",
                        options={"padding_idx": None, "mode": "sum", "include_last_offset": False}),
        TableEntry("q", "quantized", 7, 6, {"A": Factor("q.qweight", (7, 3), "float32", q), "B": Factor("q.B", (3, 6))},
                   stages=(StageRecord.make("svd", rank=3, rel_error=0.5), StageRecord.make("quantize", bits=4)),
                   hash=HashSpec(7, 70), base="lowrank", aliases=("q2",)),
    ]


@pytest.mark.parametrize("entry", _entries(), ids=lambda e: e.name)
def test_entry_json_round_trip(entry):
    assert TableEntry.from_json(entry.name, json.loads(json.dumps(entry.to_json()))) == entry


def test_entry_facts():
    plain, mlet, q = _entries()
    assert mlet.inner_dim == 8 and mlet.rank is None and mlet.is_bag
    assert q.rank == 3 and q.logical_rows == 70 and q.quant.bits == 4
    assert q.tensor_keys() == ["q.qweight", "q.B", "q.scale"]
    assert q.display_kind() == "quantized(lowrank, 4b/row)+hashed"
    grown = plain.with_stage(StageRecord.make("collapse"), embedding_dim=4)
    assert [s.stage for s in grown.stages] == ["collapse"] and plain.stages == ()


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.pop("kind"), r"table 't': field 'kind' is missing"),
    (lambda d: d.update(kind="sparse"), r"table 't': field 'kind' is 'sparse'"),
    (lambda d: d.update(num_embeddings="10"), r"table 't': field 'num_embeddings' has the wrong type"),
    (lambda d: d.update(factors={}), r"table 't': field 'factors' are \[\]"),
    (lambda d: d["factors"]["weight"].update(shape=[10, -1]), r"factor 'weight': field 'shape'"),
    (lambda d: d["factors"]["weight"].pop("key"), r"factor 'weight': field 'key' is missing"),
    (lambda d: d.update(hash={"num_buckets": 3}), r"table 't' hash: field 'original_num_embeddings' is missing"),
    (lambda d: d.update(hash={"num_buckets": 3, "original_num_embeddings": 30}), r"field 'hash' num_buckets=3 differs"),
    (lambda d: d.update(stages=[{"rank": 2}]), r"stage 0: field 'stage' is missing"),
])
def test_malformed_entries_name_table_and_field(tmp_path, mutate, match):
    d = TableEntry.plain("t", "t.weight", (10, 4)).to_json()
    mutate(d)
    path = tmp_path / "bad.safetensors"
    save_file({"t.weight": torch.zeros(10, 4)}, str(path),
              metadata={META_KEY: json.dumps({"schema_version": SCHEMA_VERSION, "tables": {"t": d}})})
    with pytest.raises(CheckpointError, match=match):
        mc.load_checkpoint(path)


def test_tensors_checked_against_the_file(tmp_path):
    entry = TableEntry.plain("t", "t.weight", (10, 4))
    header = CheckpointHeader({"t": entry})
    path = tmp_path / "x.safetensors"
    save_file({"t.weight": torch.zeros(10, 5)}, str(path), metadata=header.to_metadata("test"))
    with pytest.raises(CheckpointError, match=r"field 'factors' say weight 't.weight' is \[10, 4\] but the file holds \[10, 5\]"):
        load_header(path)
    save_file({"other": torch.zeros(1)}, str(path), metadata=header.to_metadata("test"))
    with pytest.raises(CheckpointError, match=r"tensor 't.weight' \(weight\), which the file does not hold"):
        load_header(path)


def test_v010_fixture_loads_unchanged():
    """A checkpoint written by 0.1.0 (schema 1) reads, rebuilds and reconstructs exactly as 0.1.0 did."""
    expected = load_file(str(FIXTURES / "v0.1.0-all-kinds.expected.safetensors"))
    ck = mc.load_checkpoint(V010)
    assert ck.schema_version == 1
    assert {n: e.kind for n, e in ck.tables.items()} == {
        "plain": "plain", "bag": "plain", "mlet": "mlet", "lowrank": "lowrank", "q8": "quantized",
        "q4row": "quantized", "lrq": "quantized", "hashed": "plain"}
    # schema 1 stored the B factor of a quantized low-rank table at <name>.proj; it is now <name>.B
    assert ck.tables["lrq"].factors["B"].key == "lrq.B" and "lrq.B" in ck.tensors and "lrq.proj" not in ck.tensors
    assert ck.tables["plain"].aliases == ("alias",) and ck.tables["hashed"].hash == HashSpec(8, 40)
    assert [s.stage for s in ck.tables["lrq"].stages] == ["svd", "quantize"]
    rec = mc.reconstruct(V010)
    assert sorted(rec) == sorted(expected)
    for name, w in expected.items():
        assert torch.equal(rec[name], w), name


def test_v010_fixture_streams_through_every_stage(tmp_path):
    """Checkpoint-level stages read schema-1 files and write schema-2 files with the current keys."""
    src = tmp_path / "old.safetensors"
    src.write_bytes(V010.read_bytes())
    out = mc.collapse_checkpoint(src)
    ck = mc.load_checkpoint(out)
    assert ck.schema_version == SCHEMA_VERSION and "lrq.B" in ck.tensors and "lrq.proj" not in ck.tensors
    rec_old, rec_new = mc.reconstruct(src), mc.reconstruct(out)
    for name in rec_old:
        torch.testing.assert_close(rec_new[name], rec_old[name], rtol=1e-6, atol=1e-6, msg=name)
    info = mc.inspect_checkpoint(src)
    assert {t.name: t.layout for t in info.tables}["lrq"] == "quantized(lowrank, 8b/table)"


def test_v010_fixture_loads_into_a_model():
    m = nn.Module()
    m.plain = nn.Embedding(12, 4, padding_idx=0)
    m.bag = nn.EmbeddingBag(10, 4, mode="sum")
    m.mlet = nn.Embedding(9, 4)
    m.lowrank = nn.Embedding(11, 6)
    m.q8 = nn.Embedding(13, 4)
    m.q4row = nn.EmbeddingBag(14, 5, mode="mean")
    m.lrq = nn.Embedding(15, 6)
    m.hashed = nn.Embedding(40, 4)
    m.alias = m.plain
    m.register_buffer("step", torch.tensor(0))
    mc.load_model_state(m, V010)
    expected = load_file(str(FIXTURES / "v0.1.0-all-kinds.expected.safetensors"))
    idx = torch.tensor([0, 3, 5])
    torch.testing.assert_close(m.lrq(idx), expected["lrq"][idx], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(m.hashed(torch.tensor([9, 17])), expected["hashed"][torch.tensor([1, 1])])
    assert int(m.step) == 7
