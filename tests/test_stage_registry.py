"""One registry for models and files: the same config gives the same tables either way; shared refusals."""

import pytest
import torch
from torch import nn

import mlet_compress as mc
from mlet_compress.errors import ConfigError, TargetingError
from mlet_compress.stages import registered, stage_for


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(700, 12)
        self.bag = nn.EmbeddingBag(500, 8, mode="sum", padding_idx=3)
        self.lin = nn.Embedding(700, 1)


def _trained(seed=0):
    torch.manual_seed(seed)
    m = Net()
    with torch.no_grad():  # low-rank-ish tables with a heavy tail, like trained embeddings
        for t in (m.emb, m.bag):
            n, d = t.weight.shape
            t.weight.copy_(torch.randn(n, 3) @ torch.randn(3, d) + 0.1 * torch.randn(n, d) ** 3)
    return m


CONFIGS = [mc.LowRankConfig(rank=3), mc.LowRankConfig(energy=0.9)] + [
    mc.QuantConfig(bits=b, granularity=g) for b in (2, 4, 8) for g in ("table", "row")
] + [mc.QuantConfig(bits=b, granularity=g, scale_dtype="fp16") for b, g in ((2, "row"), (4, "table"), (8, "row"))]


@pytest.mark.parametrize("config", CONFIGS, ids=repr)
def test_file_and_model_paths_give_the_same_tables(tmp_path, config):
    src = mc.save_checkpoint(_trained(), tmp_path / "m.safetensors")
    rep = mc.compress_checkpoint(src, config)
    model = _trained()
    mrep = mc.compress_(model, config)
    assert set(rep) == set(mrep) == {"emb", "bag"}
    for name in rep:  # the same stage record (rank, errors) either way
        for key in ("rank", "bits", "granularity", "scale_dtype", "rel_error", "l2_error", "sqnr_db", "stage"):
            a, b = rep[name].get(key), mrep[name].get(key)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)):
                assert a == pytest.approx(b, rel=1e-6, abs=1e-9), (name, key)
            else:
                assert a == b, (name, key)
    via_model = mc.save_checkpoint(model, tmp_path / "model.safetensors")
    rec_file, rec_model = mc.reconstruct(rep.output), mc.reconstruct(via_model)
    for name in ("emb", "bag"):
        torch.testing.assert_close(rec_file[name], rec_model[name], rtol=0, atol=1e-6, msg=name)
    ck_file, ck_model = mc.load_checkpoint(rep.output), mc.load_checkpoint(via_model)
    assert ck_file.tables["emb"].to_json() == ck_model.tables["emb"].to_json()


def test_breaking_one_path_is_detected(tmp_path, monkeypatch):
    """The equality above can fail: a file plan that searched a coarser grid differs from the model path."""
    src = mc.save_checkpoint(_trained(), tmp_path / "m.safetensors")
    coarse = mc.compress_checkpoint(src, mc.QuantConfig(bits=4, grid=3), tmp_path / "coarse.safetensors")
    model = _trained()
    mc.compress_(model, mc.QuantConfig(bits=4))
    diff = (mc.reconstruct(coarse.output)["emb"] - mc.reconstruct(mc.save_checkpoint(model, tmp_path / "x.safetensors"))["emb"])
    assert float(diff.abs().max()) > 1e-3


def test_every_stage_declares_its_four_parts():
    names = {s.name for s in registered().values()}
    assert names == {"hash", "mlet", "collapse", "svd", "quantize"}
    for stage in registered().values():
        assert callable(stage.op) and callable(stage.to_module)
        assert stage.plan_file is not None or stage.file_refusal  # files: a plan, or the reason there is none


@pytest.mark.parametrize("config,match", [
    (mc.HashConfig(ratio=0.5), "hashing is a training-time stage"),
    (mc.MLETConfig(inner_dim=8), "MLET is a training-time stage"),
])
def test_training_time_stages_refused_on_files(tmp_path, config, match):
    src = mc.save_checkpoint(_trained(), tmp_path / "m.safetensors")
    with pytest.raises(ConfigError, match=match):
        mc.compress_checkpoint(src, config)


def test_same_refusal_for_model_and_file(tmp_path):
    model = _trained()
    mc.compress_(model, mc.QuantConfig(bits=8))
    src = mc.save_checkpoint(model, tmp_path / "q.safetensors")
    with pytest.raises(TargetingError) as from_model:
        mc.compress_(model, mc.LowRankConfig(rank=2), lambda name, mod: name == "emb")
    with pytest.raises(TargetingError) as from_file:
        mc.compress_checkpoint(src, mc.LowRankConfig(rank=2), tables=["emb"])
    assert str(from_model.value) == str(from_file.value)
    assert "svd before quantize" in str(from_file.value)


def test_default_selection_skips_and_reports(tmp_path):
    model = _trained()
    mc.compress_(model, mc.QuantConfig(bits=8, target_modules=["emb"]))
    rep = mc.compress_(model, mc.LowRankConfig(rank=2))
    assert set(rep) == {"bag"} and "already quantized" in rep.skipped["emb"] and "lin" in rep.skipped
    assert rep["bag"]["bytes_after"] < rep["bag"]["bytes_before"]


def test_unknown_config_and_per_table_checks(tmp_path):
    with pytest.raises(ConfigError, match="no compression stage takes a dict"):
        stage_for({})
    src = mc.save_checkpoint(_trained(), tmp_path / "m.safetensors")
    with pytest.raises(ConfigError, match="table 'bag': rank 10 exceeds its embedding dim 8"):
        mc.compress_checkpoint(src, mc.LowRankConfig(rank=10))
    with pytest.raises(ConfigError, match="table 'bag': rank 10 exceeds its embedding dim 8"):
        mc.compress_(_trained(), mc.LowRankConfig(rank=10))


def test_cli_spells_the_fix_as_a_flag(tmp_path):
    from mlet_compress.cli.app import error_line

    src = mc.save_checkpoint(_trained(), tmp_path / "m.safetensors")
    mc.compress_checkpoint(src, mc.QuantConfig())
    with pytest.raises(mc.CheckpointError) as exc:
        mc.compress_checkpoint(src, mc.QuantConfig())
    assert "pass force=True to overwrite" in str(exc.value)
    assert "pass --force to overwrite" in error_line(exc.value)
    with pytest.raises(TargetingError) as exc:
        mc.compress_checkpoint(src, mc.QuantConfig(), tables="nope")
    assert "tables='nope'" in str(exc.value) and "--tables 'nope'" in error_line(exc.value)
    assert "this is a bug in mlet-compress" in error_line(KeyError("x"))
