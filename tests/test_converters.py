"""Converters: plain safetensors (single, sharded, HF folder) and pickles ⇄ mlet-compress, with detection."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file, save_model
from torch import nn
from typer.testing import CliRunner

import mlet_compress as mc
from mlet_compress.cli.app import app
from mlet_compress.converters import convert_checkpoint, detect_tables, open_source
from mlet_compress.errors import CheckpointError, ConfigError
from mlet_compress.inspection import StateDictSummary, inspect_path
from mlet_compress.lookup import reconstruct
from mlet_compress.ops.quant import qmax

runner = CliRunner()
EMB = ["bert.embeddings.word_embeddings", "bert.embeddings.position_embeddings", "bert.embeddings.token_type_embeddings"]


class Embeddings(nn.Module):
    def __init__(self, vocab=120, d=16, positions=24):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, d, padding_idx=0)
        self.position_embeddings = nn.Embedding(positions, d)
        self.token_type_embeddings = nn.Embedding(2, d)
        self.LayerNorm = nn.LayerNorm(d)
        self.register_buffer("position_ids", torch.arange(positions).unsqueeze(0))

    def forward(self, ids, types):
        pos = self.position_ids[:, : ids.shape[1]]
        return self.word_embeddings(ids) + self.position_embeddings(pos) + self.token_type_embeddings(types)


class TinyBert(nn.Module):
    """A Hugging Face-shaped module tree: bert.embeddings.*, an encoder Linear, a pooler, a classifier."""

    def __init__(self):
        super().__init__()
        self.bert = nn.Module()
        self.bert.embeddings = Embeddings()
        self.bert.encoder = nn.ModuleDict({"dense": nn.Linear(16, 16), "out_norm": nn.LayerNorm(16)})
        self.bert.pooler = nn.Module()
        self.bert.pooler.dense = nn.Linear(16, 16)
        self.classifier = nn.Linear(16, 3)

    def forward(self, ids, types):
        h = self.bert.embeddings.LayerNorm(self.bert.embeddings(ids, types))
        h = self.bert.encoder["out_norm"](torch.tanh(self.bert.encoder["dense"](h)))
        return self.classifier(torch.tanh(self.bert.pooler.dense(h[:, 0])))


def _bert(seed=0):
    torch.manual_seed(seed)
    m = TinyBert()
    with torch.no_grad():  # non-trivial LayerNorm parameters, so a swapped tensor shows
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m.eval()


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 120, (5, 10), generator=g), torch.randint(0, 2, (5, 10), generator=g)


def test_tiny_bert_convert_quantize_convert_back_loads_strict(tmp_path):
    model = _bert()
    src = tmp_path / "model.safetensors"
    save_model(model, str(src))
    rep = convert_checkpoint(src)
    assert rep.output == tmp_path / "model.mlet.safetensors" and sorted(rep.tables) == sorted(EMB)
    assert rep.rejected["bert.pooler.dense.weight"].startswith("no part of its name")
    assert rep.carried == len(model.state_dict()) - 3
    q = mc.compress_checkpoint(rep.output, mc.QuantConfig(bits=8), tables=r".*word_embeddings|.*position_embeddings")
    back = convert_checkpoint(q.output, to="safetensors-plain")
    assert back.output == tmp_path / "model.mlet.q8.plain.safetensors"
    assert any("dequantized" in n for n in back.notes)
    plain = load_file(str(back.output))
    fresh = TinyBert().eval()
    fresh.load_state_dict(plain, strict=True)
    orig = model.state_dict()
    changed = {f"{n}.weight" for n in EMB[:2]}
    for k, v in orig.items():  # every tensor no stage touched is bit-exact (dtype included)
        if k not in changed:
            assert plain[k].dtype == v.dtype and torch.equal(plain[k], v), k
    deq = reconstruct(q.output)
    qck = mc.load_checkpoint(q.output)
    for name in EMB[:2]:
        w, w_hat = orig[f"{name}.weight"], plain[f"{name}.weight"]
        assert torch.equal(w_hat, deq[name])  # exactly the quantized values
        s = float(qck.tensors[f"{name}.scale"])
        bound = max(s / 2, float(w.abs().max()) - qmax(8) * s) * (1 + 1e-6)
        assert float((w - w_hat).abs().max()) <= bound
    ids, types = _inputs()
    with torch.no_grad():
        e_ref, e_new = model.bert.embeddings(ids, types), fresh.bert.embeddings(ids, types)
        scales = [float(qck.tensors[f"{n}.scale"]) for n in EMB[:2]]
        maxabs = [float(orig[f"{n}.weight"].abs().max()) for n in EMB[:2]]
        bound = sum(max(s / 2, m - qmax(8) * s) for s, m in zip(scales, maxabs)) * (1 + 1e-6)
        assert 0 < float((e_ref - e_new).abs().max()) <= bound
        assert torch.isfinite(fresh(ids, types)).all()


def _shards(tmp_path, model):
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    keys = sorted(sd)
    parts = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    d = tmp_path / "hf"
    d.mkdir()
    for fname, ks in parts.items():
        save_file({k: sd[k] for k in ks}, str(d / fname), metadata={"format": "pt"})
    index = {"metadata": {"total_size": 0}, "weight_map": {k: f for f, ks in parts.items() for k in ks}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    return d, sd


def test_sharded_index_and_folder_round_trip_bit_exact(tmp_path):
    model = _bert()
    folder, sd = _shards(tmp_path, model)
    rep = convert_checkpoint(folder, tmp_path / "ours.safetensors")
    assert rep.source_format == "safetensors-sharded" and sorted(rep.tables) == sorted(EMB)
    back = convert_checkpoint(rep.output, tmp_path / "plain.safetensors")
    assert back.target == "safetensors-plain"
    plain = load_file(str(back.output))
    assert plain.keys() == sd.keys() and all(torch.equal(plain[k], sd[k]) for k in sd)
    with open_source(back.output) as s:
        assert s.format == "safetensors" and s.metadata == {"format": "pt"}  # HF's loader checks this entry
    rep2 = convert_checkpoint(folder / "model.safetensors.index.json", tmp_path / "ours2.safetensors")
    assert rep2.output.read_bytes() == rep.output.read_bytes()


def test_pickle_with_tied_weights_to_plain_safetensors(tmp_path):
    model = _bert()
    model.decoder = nn.Linear(16, 120, bias=False)
    model.decoder.weight = model.bert.embeddings.word_embeddings.weight  # tied, as in masked-LM heads
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "pytorch_model.bin")
    rep = convert_checkpoint(tmp_path / "pytorch_model.bin", bag_mode=None)
    ck = mc.load_checkpoint(rep.output)
    assert ck.aliases == {"decoder.weight": "bert.embeddings.word_embeddings.weight"}
    assert ck.extra["skipped_non_tensor_keys"] == ["epoch"]
    back = convert_checkpoint(rep.output, to="safetensors-plain")
    plain = load_file(str(back.output))
    assert torch.equal(plain["decoder.weight"], plain["bert.embeddings.word_embeddings.weight"])
    fresh = _bert(seed=5)
    fresh.decoder = nn.Linear(16, 120, bias=False)
    fresh.load_state_dict(plain, strict=True)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())


def test_detection_rules_and_reasons():
    from mlet_compress.converters.sources import TensorMeta

    shapes = {"emb_l.0.weight": (50, 8), "emb_l.1.weight": (40, 8), "transformer.wte.weight": (30, 8),
              "embedding_bags.t_user.weight": (20, 8), "embeddings.dense.weight": (8, 8), "embeddings.dense.bias": (8,),
              "member.weight": (10, 8), "bot_l.0.weight": (8, 4), "emb.norm.weight": (8,), "emb_ids.weight": (10, 8)}
    metas = {k: TensorMeta(k, torch.int64 if k == "emb_ids.weight" else torch.float32, s) for k, s in shapes.items()}
    det = detect_tables(metas)
    assert sorted(det.tables) == ["emb_l.0", "emb_l.1", "embedding_bags.t_user", "transformer.wte"]
    assert det.rejected == {"embeddings.dense.weight": "has a bias 'embeddings.dense.bias' (a Linear layer)",
                            "member.weight": "no part of its name looks like an embedding (emb*, wte, wpe)",
                            "bot_l.0.weight": "no part of its name looks like an embedding (emb*, wte, wpe)"}
    det = detect_tables(metas, r"member|emb_l\.\d+", bag_mode="sum")
    assert sorted(det.tables) == ["emb_l.0", "emb_l.1", "member"]
    e = det.tables["emb_l.0"]
    assert e.is_bag and e.options["mode"] == "sum"
    with pytest.raises(ConfigError, match="bag_mode"):
        detect_tables(metas, bag_mode="max")
    with pytest.raises(ConfigError, match="matched no"):
        detect_tables(metas, "zzz")
    with pytest.raises(ConfigError, match="not a valid regex"):
        detect_tables(metas, "(")


def test_bag_mode_tables_look_up_as_bags(tmp_path):
    torch.manual_seed(0)
    sd = {"emb_l.0.weight": torch.randn(30, 4), "top.weight": torch.randn(2, 4), "top.bias": torch.randn(2)}
    save_file(sd, str(tmp_path / "dlrm.safetensors"))
    rep = convert_checkpoint(tmp_path / "dlrm.safetensors", bag_mode="sum")
    mods = mc.load_lookup_modules(rep.output)
    assert isinstance(mods["emb_l.0"], nn.EmbeddingBag) and mods["emb_l.0"].mode == "sum"
    idx, off = torch.tensor([1, 2, 3]), torch.tensor([0, 2])
    assert torch.equal(mods["emb_l.0"](idx, off), nn.functional.embedding_bag(idx, sd["emb_l.0.weight"], off, mode="sum"))


def test_mlet_lowrank_and_hashed_tables_written_plain(tmp_path):
    torch.manual_seed(0)
    m = nn.ModuleDict({"a": nn.Embedding(40, 6), "b": nn.Embedding(30, 6), "h": nn.Embedding(2000, 4)})
    mc.compress_(m, mc.HashConfig(ratio=0.25, min_rows=1000))
    mc.wrap(m, mc.MLETConfig(inner_dim=12, target_modules=["a", "b"]))
    src = mc.save_checkpoint(m, tmp_path / "f.safetensors")
    ref_a = (m["a"].table @ m["a"].proj.T).detach()
    rep = convert_checkpoint(src, to="safetensors-plain")
    plain = load_file(str(rep.output))
    assert set(plain) == {"a.weight", "b.weight", "h.weight"} and plain["h.weight"].shape == (500, 4)
    assert torch.allclose(plain["a.weight"], ref_a, rtol=1e-6, atol=1e-6)
    assert any("hashed" in n for n in rep.notes)
    mc.collapse(m)
    lr = mc.compress_checkpoint(mc.save_checkpoint(m, tmp_path / "c.safetensors"), mc.LowRankConfig(rank=2), tables="a")
    pt = convert_checkpoint(lr.output, to="pt")
    sd = torch.load(pt.output, weights_only=True)
    ck = mc.load_checkpoint(lr.output)
    assert torch.allclose(sd["a.weight"], ck.tensors["a.A"] @ ck.tensors["a.B"], rtol=0, atol=0)
    assert pt.tables["a"]["action"] == "multiplied out (A @ B)" and pt.tables["b"]["action"] == "copied"
    m.load_state_dict(sd, strict=True)  # the HashedEmbedding keeps its 500 rows


def test_refusals_never_touch_the_input(tmp_path):
    model = _bert()
    src = tmp_path / "model.safetensors"
    save_model(model, str(src))
    before = src.read_bytes()
    rep = convert_checkpoint(src)
    with pytest.raises(ConfigError, match="already a mlet-compress"):
        convert_checkpoint(rep.output, to="mlet")
    with pytest.raises(ConfigError, match="already a safetensors"):
        convert_checkpoint(src, to="safetensors-plain")
    with pytest.raises(ConfigError, match="do not apply"):
        convert_checkpoint(rep.output, tables="x")
    with pytest.raises(CheckpointError, match="already exists"):
        convert_checkpoint(src)
    with pytest.raises(CheckpointError, match="is the input"):
        convert_checkpoint(src, src, to="mlet")
    with pytest.raises(ConfigError, match="must be one of"):
        convert_checkpoint(src, tmp_path / "x.safetensors", to="onnx")
    (tmp_path / "bad.index.json").write_text("{}")
    with pytest.raises(CheckpointError, match="weight_map"):
        convert_checkpoint(tmp_path / "bad.index.json")
    assert src.read_bytes() == before


def test_inspect_plain_and_cli_convert_report(tmp_path):
    model = _bert()
    src = tmp_path / "model.safetensors"
    save_model(model, str(src))
    rep = inspect_path(src)
    assert isinstance(rep, StateDictSummary) and sorted(rep.tables) == sorted(EMB)
    assert len(rep.tensors) == len(model.state_dict()) and rep.totals["file_bytes"] == src.stat().st_size
    res = runner.invoke(app, ["inspect", str(src)])
    assert res.exit_code == 0 and "word_embeddings.weight" in res.stdout and "not a table: bert.pooler" in res.stderr
    res = runner.invoke(app, ["convert", str(src), "--bag-mode", "mean"])
    assert res.exit_code == 0, res.output
    assert "name part 'embeddings'" in res.stdout
    assert "not a table: classifier.weight: no part of its name looks like an embedding" in res.stderr
    assert "wrote" in res.stderr and "file:" in res.stderr
    res = runner.invoke(app, ["convert", str(tmp_path / "model.mlet.safetensors"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["target"] == "pt" and doc["totals"]["file_bytes_after"] == (tmp_path / "model.mlet.pt").stat().st_size
