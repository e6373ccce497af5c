"""The examples run as written: quickstart, the DeepCTR snippet (with the [deepctr] extra), and the sample
comparisons (defaults = the commands of docs/results.md; progress per run and per epoch)."""

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import criteo_rows, write_lines

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _run(*args, timeout=600, cache=None):
    env = dict(os.environ, **({"MLET_CACHE_DIR": str(cache)} if cache else {}))
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=env)


def _parser(name: str):
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(EXAMPLES))
    from _compare_sample import build_parser

    return build_parser(mod.__doc__, mod.DATA, mod.DEFAULT_MODEL)


def test_quickstart_runs():
    r = _run(EXAMPLES / "quickstart.py")
    assert r.returncode == 0, r.stderr
    assert "CLI collapse == module collapse: True; outputs == MLET outputs: True" in r.stdout


def test_deepctr_snippet_runs():
    pytest.importorskip("deepctr_torch", reason="deepctr-torch not installed (pip install mlet-compress[deepctr])")
    r = _run(EXAMPLES / "deepctr_wrap.py")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "loads into a fresh DeepFM (strict=True), same predictions: True" in r.stdout


@pytest.mark.parametrize("name", ["train_criteo", "train_avazu", "train_movielens"])
def test_sample_defaults_match_docs_results(name):
    commands = [line for line in (ROOT / "docs" / "results.md").read_text().splitlines()
                if line.startswith(f"python examples/{name}.py")]
    assert commands, f"docs/results.md has no {name} command"
    defaults = vars(_parser(name).parse_args([]))
    for command in commands:
        words = shlex.split(command)[2:]
        flags = [i for i, w in enumerate(words) if w.startswith("--")]
        for i, j in zip(flags, flags[1:] + [len(words)]):
            key, values = words[i][2:].replace("-", "_"), words[i + 1:j]
            if any(re.fullmatch(r"[A-Z]+", v) for v in values):
                continue  # a placeholder (--dim D)
            got = defaults[key]
            want = [type(got[0])(v) for v in values] if isinstance(got, list) else type(got)(values[0])
            assert got == want, (name, key, got, want)


def test_sample_without_data_says_so():
    r = _run(EXAMPLES / "train_criteo.py", "--data", "/nonexistent/criteo.txt")
    assert r.returncode == 0 and "data not found: /nonexistent/criteo.txt" in r.stdout


def test_sample_prints_progress_per_run_and_epoch(tmp_path):
    data = write_lines(tmp_path / "criteo.txt", ["\t".join(r) for r in criteo_rows(700)])  # Criteo's format, tiny
    r = _run(EXAMPLES / "train_criteo.py", "--data", data, "--epochs", "2", "--seeds", "0", "--emb-lr-mults", "1",
             "--dim", "4", cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "2 runs of up to 2 epochs" in out and "run 1/2: single d=4" in out and "run 2/2: MLET k=64 d=4" in out
    assert out.count("  epoch 1: train loss") == 2 and out.count("  done in ") == 2
