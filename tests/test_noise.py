"""Third-party warnings the user cannot act on are silenced where the library allows it (never our own)."""

import subprocess
import sys

import pytest
import torch

import mlet_compress as mc
from mlet_compress.converters import load_pickle_state_dict
from mlet_compress.errors import CheckpointError

SPARSE_STEP = """
import torch, mlet_compress as mc
from torch import nn
m = nn.ModuleDict({"a": nn.Embedding(100, 8, sparse=True)})
if WRAP:
    mc.wrap(m, mc.MLETConfig(inner_dim=16))
opt = torch.optim.Adagrad(m.parameters(), lr=0.1)
m["a"](torch.tensor([1, 2])).sum().backward()
opt.step()
print("checks", torch.sparse.check_sparse_tensor_invariants.is_enabled())
"""


def _run(wrap: bool):
    code = SPARSE_STEP.replace("WRAP", str(wrap))
    return subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=120)


def test_sparse_mlet_training_prints_no_torch_sparse_warning():
    control = _run(False)  # torch's own warning, without mlet-compress in the loop
    assert control.returncode == 0 and "Sparse invariant checks are implicitly disabled" in control.stderr
    quiet = _run(True)
    assert quiet.returncode == 0 and "Sparse invariant" not in quiet.stderr and "checks False" in quiet.stdout


def test_user_enabled_sparse_checks_stay_enabled():
    checks = torch.sparse.check_sparse_tensor_invariants
    before = checks.is_enabled()
    checks.enable()
    try:
        mc.wrap(torch.nn.ModuleDict({"a": torch.nn.Embedding(10, 4, sparse=True)}), mc.MLETConfig(inner_dim=8))
        assert checks.is_enabled()
    finally:
        checks.enable() if before else checks.disable()


def test_pickle_protocol_warning_is_not_shown(tmp_path, recwarn):
    """torch's "Detected pickle protocol 4" note precedes its own refusal; our one-line error is enough."""
    torch.save({"emb.weight": torch.zeros(3, 2)}, tmp_path / "p4.pt", pickle_protocol=4)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_pickle_state_dict(tmp_path / "p4.pt")
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]
