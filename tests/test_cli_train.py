"""`mlet-compress train` / `eval`: smoke runs on a tiny synthetic config, outputs, JSON, errors, help."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mlet_compress.cli.app import app

runner = CliRunner()
TINY = ["--rows", "3000", "--max-steps", "6", "--dim", "4", "--batch-size", "64", "--device", "cpu"]


def _cli(*args, env=None):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "mlet_compress.cli.app", *args], capture_output=True, text=True, env=e)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    res = runner.invoke(app, ["train", *TINY, "--mlet-k", "8", "--keep-factors", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout)


def test_train_writes_outputs_and_prints_metrics_json(run_dir):
    out, printed = run_dir
    for name in ("model.safetensors", "factors.safetensors", "metrics.json", "config.json", "preprocessor.json"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert printed["test"] == saved["test"] and saved["inner_dim"] == 8
    assert set(saved["test"]) == {"auc", "logloss", "pr_auc"} and "pr_auc" in saved["set_b"]


def test_train_table_output_and_compare(tmp_path):
    res = runner.invoke(app, ["train", *TINY, "--mlet-k", "0", "--out", str(tmp_path / "one")])
    assert res.exit_code == 0, res.output
    assert "test AUC" in res.stdout and "single d=4" in res.stdout
    res = runner.invoke(app, ["train", *TINY, "--mlet-k", "8", "--compare", "--tune-baseline", "--emb-lr-mults", "1,4",
                              "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    for text in ("single d=4", "single d=4 emb-lr×4", "MLET k=8 d=4", "Set B PR-AUC", "emb params (infer)", "Δ MLET vs best baseline"):
        assert text in res.stdout, text
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"]
    assert [r["role"] for r in rows] == ["baseline", "tuned", "mlet"]


def test_eval_json_matches_training_metrics(run_dir):
    out, printed = run_dir
    res = runner.invoke(app, ["eval", str(out / "model.safetensors"), "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    ev = json.loads(res.stdout)
    for key in ("auc", "logloss", "pr_auc"):
        assert ev["test"][key] == pytest.approx(printed["test"][key], abs=1e-6)
    res = runner.invoke(app, ["eval", str(out / "factors.safetensors"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "Set B PR-AUC" in res.stdout


def test_resume_from_cli(tmp_path):
    out = tmp_path / "r"
    assert runner.invoke(app, ["train", *TINY, "--mlet-k", "8", "--out", str(out)]).exit_code == 0
    res = runner.invoke(app, ["train", "--resume", str(out), "--epochs", "2", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["epochs_run"] == 2


def test_errors_are_one_line(tmp_path, run_dir):
    out, _ = run_dir
    r = _cli("train", *TINY, "--out", str(out))
    assert r.returncode == 1 and "not empty" in r.stderr and "--force" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0
    r = _cli("train", "--data", str(tmp_path / "x.csv"))
    assert r.returncode == 1 and "--format" in r.stderr
    r = _cli("train", "--model", "resnet", *TINY, "--out", str(tmp_path / "bad"))
    assert r.returncode == 1 and "dlrm" in r.stderr and "Traceback" not in r.stderr
    r = _cli("eval", str(tmp_path / "missing.safetensors"))
    assert r.returncode == 1 and "Traceback" not in r.stderr


def test_help_has_examples():
    for cmd in ("train", "eval"):
        res = runner.invoke(app, [cmd, "--help"])
        assert res.exit_code == 0 and "mlet-compress " + cmd in res.stdout
