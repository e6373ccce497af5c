"""Atomic writes: outputs get the mode a plain open() would give them (the umask), never the temp file's 0600."""

import os
import stat

import pytest
from torch import nn

import mlet_compress as mc
from mlet_compress.atomic import atomic_path, atomic_write_bytes, current_umask


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002, 0o077])
def test_outputs_honour_the_umask(tmp_path, umask, mask):
    umask(mask)
    assert current_umask() == mask
    atomic_write_bytes(tmp_path / "a.json", b"{}")
    ck = mc.save_checkpoint(nn.Sequential(nn.Embedding(4, 2)), tmp_path / "m.safetensors")
    q = mc.compress_checkpoint(ck, mc.QuantConfig(bits=8)).output
    for p in (tmp_path / "a.json", ck, q):
        assert _mode(p) == 0o666 & ~mask, p
    with open(tmp_path / "plain", "w"):
        pass
    assert _mode(tmp_path / "plain") == _mode(ck)  # what every other tool does


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "x.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
