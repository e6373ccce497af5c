"""The collapse/inspect CLI: outputs, errors as one line, no traceback unless debugging."""

import json
import os
import subprocess
import sys

import torch
from typer.testing import CliRunner

from conftest import ToyModel
from mlet_compress import MLETConfig, load_checkpoint, save_checkpoint, wrap
from mlet_compress.cli.app import app

runner = CliRunner()


def _ckpt(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(wrap(ToyModel(), MLETConfig(inner_dim=16)), tmp_path / "w.safetensors")


def _cli(*args, env=None):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "mlet_compress.cli.app", *args], capture_output=True, text=True, env=e)


def test_collapse_cli_writes_default_output(tmp_path):
    src = _ckpt(tmp_path)
    res = runner.invoke(app, ["collapse", str(src), "--chunk-rows", "5"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "w.collapsed.safetensors"
    ToyModel().load_state_dict(load_checkpoint(out).state_dict(), strict=True)


def test_inspect_json_and_table(tmp_path):
    src = _ckpt(tmp_path)
    res = runner.invoke(app, ["inspect", str(src), "--json"])
    rep = json.loads(res.stdout)
    assert {r["name"]: r["layout"] for r in rep["tables"]}["user"] == "mlet"
    res = runner.invoke(app, ["inspect", str(src)])
    assert res.exit_code == 0 and "features.tables.tags" in res.stdout


def test_errors_are_one_line_with_nonzero_exit(tmp_path):
    src = _ckpt(tmp_path)
    r = _cli("collapse", str(tmp_path / "missing.safetensors"))
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "no such file" in r.stderr
    assert "Traceback" not in r.stderr
    assert _cli("collapse", str(src)).returncode == 0
    r = _cli("collapse", str(src))
    assert r.returncode != 0 and "--force" in r.stderr and "Traceback" not in r.stderr
    r = _cli("collapse", str(src), "-o", str(src))
    assert r.returncode != 0 and "input" in r.stderr
    r = _cli("collapse", str(tmp_path / "missing.safetensors"), env={"MLET_COMPRESS_DEBUG": "1"})
    assert "Traceback" in r.stderr


def test_help_has_examples():
    for cmd in ("collapse", "inspect"):
        res = runner.invoke(app, [cmd, "--help"])
        assert res.exit_code == 0 and "Example" in res.stdout and "mlet-compress" in res.stdout


def test_import_does_not_pull_cli_dependencies():
    code = "import sys, mlet_compress; import mlet_compress.stages, mlet_compress.schema; print('typer' in sys.modules or 'rich' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "False"


def test_cli_is_not_a_top_level_package():
    r = subprocess.run([sys.executable, "-c", "import cli"], capture_output=True, text=True, cwd="/")
    assert r.returncode != 0


def test_every_subpackage_is_packaged():
    """pyproject lists packages explicitly (the cli/ folder is mapped to mlet_compress.cli): keep it complete."""
    import pathlib

    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    root = pathlib.Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"mlet_compress.cli"} | {
        ".".join(p.parent.relative_to(root).parts) for p in (root / "mlet_compress").rglob("__init__.py")
    }
    assert found == listed
