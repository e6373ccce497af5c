"""Runs that can be trusted: a failed run leaves no half-written directory; reruns and --resume understand it."""

import json
import os
import stat

import pytest
import torch
from typer.testing import CliRunner

from mlet_compress import HashConfig
from mlet_compress.cli.app import app, error_line
from mlet_compress.errors import ConfigError, TargetingError
from mlet_compress.train import (DataSpec, TrainCallback, TrainConfig, compare, load_data, resume_compare, resume_run,
                                 train)
from mlet_compress.training.staging import INCOMPLETE_FILE, describe_resume, read_marker, staging_dir

TINY = {"num_rows": 3000, "num_fields": 4, "min_vocab": 10, "max_vocab": 300, "num_dense": 2}
SPEC = DataSpec(format="synthetic", synthetic=TINY)
runner = CliRunner()


@pytest.fixture(scope="module")
def splits():
    return load_data(SPEC)


def cfg(**kw) -> TrainConfig:
    base = dict(model="deepfm", dim=4, inner_dim=8, batch_size=64, device="cpu", data=SPEC, max_steps_per_epoch=6,
                epochs=3, patience=None)
    base.update(kw)
    return TrainConfig(**base)


class Boom(TrainCallback):
    """Fails at the end of epoch ``epoch`` (before its state is saved), or at a step of run ``run``."""

    def __init__(self, epoch=None, step=None, run=None):
        self.epoch, self.step, self.run, self.name = epoch, step, run, None

    def on_run_start(self, name, total_steps):
        self.name = name

    def on_step(self, step, loss, samples_per_s):
        if self.step is not None and step >= self.step and (self.run is None or self.run in self.name):
            raise KeyboardInterrupt  # what Ctrl-C raises

    def on_epoch_end(self, epoch, record):
        if epoch == self.epoch:
            raise RuntimeError("injected failure")


def _same_weights(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_failed_run_leaves_no_run_directory_and_resumes_to_the_same_result(tmp_path, splits):
    full = train(cfg(), splits, out=tmp_path / "full")
    out = tmp_path / "runs" / "r"
    with pytest.raises(RuntimeError, match="injected"):
        train(cfg(), splits, out=out, callback=Boom(epoch=2))
    assert not out.exists()
    st = staging_dir(out)
    assert st == tmp_path / "runs" / ".r.incomplete" and (st / "state.pt").is_file()
    mark = read_marker(st)
    assert mark["error"] == "RuntimeError: injected failure" and mark["epochs_done"] == 1 and mark["kind"] == "run"
    with pytest.raises(ConfigError, match=r"did not finish.*1 of 3 epochs.*resume=True.*force=True") as exc:
        train(cfg(), splits, out=out)
    assert "--resume" in error_line(exc.value) and "--force" in error_line(exc.value)
    assert "after epoch 1 of 3" in describe_resume(out)
    resumed = resume_run(out)
    assert not st.exists() and not (out / INCOMPLETE_FILE).exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "full").iterdir())
    assert resumed.out_dir == out and resumed.metrics["test"] == full.metrics["test"] and _same_weights(resumed, full)


def test_interrupted_before_the_first_epoch_resumes_from_the_start(tmp_path, splits):
    full = train(cfg(epochs=1), splits, out=tmp_path / "full")
    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        train(cfg(epochs=1), splits, out=out, callback=Boom(step=3))
    st = staging_dir(out)
    assert not out.exists() and not (st / "state.pt").exists() and read_marker(st)["error"] == "KeyboardInterrupt"
    assert "stopped before its first epoch was saved" in describe_resume(out)
    resumed = resume_run(out)
    assert resumed.metrics["test"] == full.metrics["test"] and _same_weights(resumed, full)


def test_force_starts_over_and_keeps_other_files(tmp_path, splits):
    out = tmp_path / "r"
    with pytest.raises(RuntimeError):
        train(cfg(keep_factors=True), splits, out=out, callback=Boom(epoch=1))
    train(cfg(epochs=1), splits, out=out, force=True)
    assert not staging_dir(out).exists() and (out / "metrics.json").is_file()
    train(cfg(epochs=1, keep_factors=True), splits, out=out, force=True)
    (out / "notes.txt").write_text("mine")
    train(cfg(epochs=1, save_state=False), splits, out=out, force=True)
    names = sorted(p.name for p in out.iterdir())
    assert "notes.txt" in names and "factors.safetensors" not in names and "state.pt" not in names
    with pytest.raises(Exception, match="save_state=False"):
        resume_run(out)


def test_compare_root_is_staged_and_resumes(tmp_path, splits):
    base = cfg(epochs=2)
    full = compare(base, splits, out=tmp_path / "full")
    out = tmp_path / "cmp"
    with pytest.raises(KeyboardInterrupt):
        compare(base, splits, out=out, callback=Boom(step=8, run="MLET"))
    st = staging_dir(out)
    assert not out.exists() and read_marker(st)["variants_done"] == ["single d=4"]
    with pytest.raises(ConfigError, match="did not finish"):
        compare(base, splits, out=out)
    res = resume_compare(out)
    assert not st.exists() and res.out_dir == out and (out / "compare.json").is_file()
    assert res.rows == full.rows
    assert [r.out_dir for r in res.results] == [out / "single_d4", out / "mlet_k8_d4"]
    assert json.loads((out / "compare.json").read_text())["config"]["train_config"]["epochs"] == 2
    again = resume_compare(out, epochs=3)  # a finished comparison continues too
    assert [r["selected_epoch"] for r in again.rows] != [] and again.results[0].metrics["epochs_run"] == 3


def test_run_files_honour_the_umask(tmp_path, splits):
    old = os.umask(0o027)
    try:
        out = train(cfg(epochs=1), splits, out=tmp_path / "r").out_dir
    finally:
        os.umask(old)
    for p in out.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o640, p.name


def test_hash_reporting_and_min_rows(tmp_path, splits):
    res = train(cfg(epochs=1, hash_ratio=0.5, hash_min_rows=100), splits)
    h = res.metrics["hashing"]
    vocab = dict(zip(splits.preprocessor.field_names, splits.preprocessor.vocab_sizes))
    want = HashConfig(ratio=0.5).buckets_for
    assert h["hashed"] and all(v["rows"] >= 100 and v["buckets"] == want(v["rows"]) for v in h["hashed"].values())
    assert all("fewer than min_rows=100" in why or "1-dim" in why or "narrower" in why for why in h["skipped"].values())
    assert len(h["hashed"]) == sum(1 for n in vocab.values() if n >= 100)
    with pytest.raises(TargetingError, match="min_rows=100000"):
        train(cfg(epochs=1, hash_ratio=0.5, hash_min_rows=100_000), splits)


def test_cli_default_out_links_latest_and_says_what_it_hashed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", "--rows", "2000", "--dim", "4", "--mlet-k", "8", "--max-steps", "4", "--keep-factors",
            "--hash-ratio", "0.5", "--hash-min-rows", "50"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    latest = tmp_path / "runs" / "latest"
    assert latest.is_symlink() and (latest / "factors.safetensors").is_file()
    assert "hashed (ratio 0.5, tables of >= 50 rows)" in res.stderr
    res = runner.invoke(app, ["inspect", "runs/latest/factors.safetensors"])  # the help example, as written
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["collapse", "runs/latest/factors.safetensors", "-o", "model.safetensors"])
    assert res.exit_code == 0, res.output
    first = os.readlink(latest)
    assert runner.invoke(app, args).exit_code == 0
    assert os.readlink(latest) != first and (tmp_path / "runs" / first).is_dir()
