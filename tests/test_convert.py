"""convert: pickles are read with weights_only=True, never executing a payload."""

import os
import pickle

import pytest
import torch
from torch import nn

from conftest import ToyModel
from mlet_compress import MLETConfig, load_checkpoint, wrap
from mlet_compress.convert import convert_to_safetensors, convert_to_torch
from mlet_compress.errors import CheckpointError, ConfigError


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as fh:
        pickle.dump({"w": torch.zeros(2), "x": Payload(marker)}, fh)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        convert_to_safetensors(bad)
    assert not marker.exists()
    assert not (tmp_path / "evil.safetensors").exists()


def test_nested_state_dict_shared_tensors_and_tables(tmp_path):
    torch.manual_seed(0)
    m = ToyModel()
    src = tmp_path / "toy.pth"
    torch.save({"epoch": 3, "state_dict": m.state_dict()}, src)
    out, described = convert_to_safetensors(src, tables=r"user|features\.tables\.(item|linear)")
    assert out == tmp_path / "toy.safetensors"
    assert set(described) == {"user", "features.tables.item", "features.tables.linear"}
    ck = load_checkpoint(out)
    assert ck.tables["user"].aliases == ("user_alias",)
    fresh = ToyModel()
    fresh.load_state_dict(ck.state_dict(), strict=True)
    for k, v in m.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)
    assert ck.extra["skipped_non_tensor_keys"] == ["epoch"] and "epoch" not in ck.tensors  # recorded, not carried


def test_mlet_pairs_ddp_prefix_and_non_contiguous(tmp_path):
    m = wrap(nn.ModuleDict({"emb": nn.Embedding(10, 4)}), MLETConfig(inner_dim=8))
    sd = {"module." + k: v for k, v in m.state_dict().items()}
    sd["module.t"] = torch.arange(12.0).reshape(3, 4).T  # non-contiguous
    torch.save(sd, tmp_path / "m.bin")
    out, described = convert_to_safetensors(tmp_path / "m.bin")
    assert described["emb"].kind == "mlet"
    ck = load_checkpoint(out)
    assert torch.equal(ck.tensors["t"], torch.arange(12.0).reshape(3, 4).T)


def test_reverse_direction_and_errors(tmp_path):
    torch.save(ToyModel().state_dict(), tmp_path / "a.pt")
    out, _ = convert_to_safetensors(tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="already exists"):
        convert_to_safetensors(tmp_path / "a.pt")
    back = convert_to_torch(out, tmp_path / "b.pt")
    sd = torch.load(back, weights_only=True)
    ToyModel().load_state_dict(sd, strict=True)
    with pytest.raises(ConfigError, match="matched no"):
        convert_to_safetensors(tmp_path / "a.pt", tmp_path / "c.safetensors", tables="zzz")
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError):
        convert_to_safetensors(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        convert_to_safetensors(tmp_path / "missing.pt")
