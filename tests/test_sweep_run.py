"""Running sweeps: stage rows measure the compressed files, resume after a crash, refusal of changed options,
outputs (results.json/csv, report.md, PNGs) and the CLI."""

import json
import struct
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

import mlet_compress as mc
from mlet_compress.cli.app import app, error_line
from mlet_compress.data import DataSpec
from mlet_compress.sweep import ROW_KEYS, SweepCallback, SweepConfig, run_sweep
from mlet_compress.sweep import evaluate as sweep_eval
from mlet_compress.sweep.plots import have_matplotlib
from mlet_compress.train import evaluate_checkpoint, load_data

TIMINGS = ("train_seconds", "eval_seconds")
SPEC = DataSpec(synthetic={"num_rows": 3000})


def _cfg(**kw):
    base = dict(dims=(4,), ks=(16,), seeds=(0, 1), stages=("q8", "svd:rank=1"), epochs=1, max_steps_per_epoch=6,
                batch_size=64, data=SPEC)
    base.update(kw)
    return SweepConfig(**base)


def _metrics(rows):
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]


@pytest.fixture(scope="module")
def splits():
    return load_data(SPEC)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, splits):
    out = tmp_path_factory.mktemp("sweep") / "s"
    return run_sweep(_cfg(), out, splits=splits)


def test_rows_cover_the_grid_once_with_every_key(finished):
    rows = finished.rows
    assert len(rows) == 2 * 2 * 3  # (single, MLET) x 2 seeds x (none, q8, svd:rank=1)
    assert all(tuple(r) == ROW_KEYS for r in rows)
    keys = [(r["variant"], r["seed"], r["stage"]) for r in rows]
    assert len(set(keys)) == len(keys)
    on_disk = json.loads((finished.out / "results.json").read_text())
    assert on_disk == rows
    csv_lines = (finished.out / "results.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == list(ROW_KEYS) and len(csv_lines) == len(rows) + 1
    none = [r for r in rows if r["stage"] == "none"]
    assert all(r["emb_bytes"] == none[0]["emb_bytes"] for r in none)  # same d: same inference bytes
    q8 = [r for r in rows if r["stage"] == "q8"]
    assert all(4 * q["emb_bytes"] < none[0]["emb_bytes"] * 1.05 for q in q8)


def test_stage_rows_evaluate_the_compressed_checkpoint(tmp_path, splits):
    """The svd:rank=1 row must equal an independent evaluation of an independently compressed file."""
    cfg = _cfg(seeds=(0,), ks=(16,), stages=("svd:rank=1",))
    cell = cfg.cells()[1]
    rows = sweep_eval.run_cell(cell, cfg, splits, tmp_path / "w")
    base = tmp_path / "w" / "run" / "model.safetensors"
    own = mc.compress_checkpoint(base, mc.LowRankConfig(rank=1), tmp_path / "own.safetensors").output
    ref = evaluate_checkpoint(own)
    none, svd = rows
    assert svd["auc"] == ref["test"]["auc"] and svd["logloss"] == ref["test"]["logloss"]
    assert abs(svd["auc"] - none["auc"]) > 1e-4  # rank 1 of d=4 changes the predictions


def test_a_broken_stage_changes_the_recorded_auc(tmp_path, splits, monkeypatch):
    """A stage that silently evaluates the uncompressed file (a path mix-up) is caught by the recorded AUC."""
    cfg = _cfg(seeds=(0,), stages=("svd:rank=1",))
    cell = cfg.cells()[1]
    honest = sweep_eval.run_cell(cell, cfg, splits, tmp_path / "a")
    monkeypatch.setattr(sweep_eval, "compress_file", lambda src, config, dst: src)
    broken = sweep_eval.run_cell(cell, cfg, splits, tmp_path / "b")
    assert broken[0]["auc"] == honest[0]["auc"]  # the trained model is the same
    assert broken[1]["auc"] == broken[0]["auc"] and abs(broken[1]["auc"] - honest[1]["auc"]) > 1e-4


def test_refused_stage_is_recorded_not_fatal(tmp_path, splits):
    cfg = _cfg(seeds=(0,), stages=("svd:rank=8",))  # d = 4 < rank 8
    rows = sweep_eval.run_cell(cfg.cells()[0], cfg, splits, tmp_path / "w")
    assert rows[0]["error"] is None and rows[0]["auc"] is not None
    assert "rank 8 exceeds" in rows[1]["error"] and rows[1]["auc"] is None


def test_a_diverging_cell_is_recorded_and_never_picked(tmp_path, splits, monkeypatch):
    def diverge(*a, **kw):
        raise mc.NumericalError("training loss became nan at epoch 1 (steps 1-10); lower {lr}", options={"lr": ...})

    monkeypatch.setattr(sweep_eval, "train", diverge)
    rows = sweep_eval.run_cell(_cfg().cells()[1], _cfg(), splits, tmp_path / "w")
    assert [r["stage"] for r in rows] == ["none", "q8", "svd:rank=1"]
    assert all(r["error"].startswith("training diverged: training loss became nan") and r["auc"] is None
               and r["val_score"] is None for r in rows)
    assert not any(r["best_on_val"] for r in sweep_eval.mark_tuned_picks(rows, "auc"))


class _Crash(SweepCallback):
    def __init__(self, after):
        self.after, self.done = after, 0

    def on_cell_done(self, cell, rows, seconds):
        self.done += 1
        if self.done == self.after:
            raise KeyboardInterrupt  # killed between cells


def test_resume_after_a_crash_between_cells_and_mid_cell(tmp_path, splits, finished, monkeypatch):
    out = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(_cfg(), out, splits=splits, callback=_Crash(after=1))
    assert len(list((out / "cells").iterdir())) == 1 and not (out / "results.json").exists()
    # killed mid-cell: the next cell's training finishes, then the process dies before its file is written
    real_train = sweep_eval.train

    def dying_train(*a, **kw):
        real_train(*a, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_eval, "train", dying_train)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(_cfg(), out, splits=splits)
    assert (out / "work").is_dir() and len(list((out / "cells").iterdir())) == 1
    monkeypatch.setattr(sweep_eval, "train", real_train)
    res = run_sweep(_cfg(), out, splits=splits)
    assert (res.trained, res.reused) == (3, 1) and not (out / "work").exists()
    assert _metrics(res.rows) == _metrics(finished.rows)  # same numbers as an uninterrupted sweep, no duplicates
    again = run_sweep(_cfg(), out, splits=splits)
    assert (again.trained, again.reused) == (0, 4)
    assert (out / "results.json").read_bytes() == json.dumps(again.rows, indent=2).encode() + b"\n"
    assert again.rows == res.rows


def test_changed_options_are_refused_and_a_grown_grid_trains_only_new_cells(tmp_path, splits):
    out = tmp_path / "s"
    first = run_sweep(_cfg(seeds=(0,)), out, splits=splits, report=False)
    with pytest.raises(mc.ConfigError, match="epochs: finished cells used 1, now 2"):
        run_sweep(_cfg(seeds=(0,), epochs=2), out, splits=splits)
    with pytest.raises(mc.ConfigError, match="stages"):
        run_sweep(_cfg(seeds=(0,), stages=("q4",)), out, splits=splits)
    grown = run_sweep(_cfg(seeds=(0, 1)), out, splits=splits, report=False)
    assert (grown.trained, grown.reused) == (2, 2) and grown.rows[:3] == first.rows[:3]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(mc.ConfigError, match="not a sweep directory"):
        run_sweep(_cfg(), tmp_path / "other", splits=splits)


def _png_ok(path: Path) -> bool:
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return False
    length, kind = struct.unpack(">I4s", data[8:16])
    crc = struct.unpack(">I", data[16 + length:20 + length])[0]
    w, h = struct.unpack(">II", data[16:24])
    return kind == b"IHDR" and crc == zlib.crc32(data[12:16 + length]) and w > 100 and h > 100 and data.endswith(
        b"IEND\xaeB`\x82")


def test_report_and_figures(finished):
    text = (finished.out / "report.md").read_text()
    for needle in ("Table 3 analogue", "Table 4 analogue", "Table 5 analogue", "sample standard deviation (ddof = 1)",
                   "paired", "never interpolated", "| svd:rank=1 |"):
        assert needle in text
    if not have_matplotlib():
        assert any("mlet-compress[plots]" in n for n in finished.notes)
        pytest.skip("matplotlib not installed: figures are skipped (the note above says how to get them)")
    figs = [f for f in finished.files if f.suffix == ".png"]
    assert [f.name for f in figs] == ["fig5_auc_vs_bytes.png", "fig7_auc_vs_k.png", "fig8_stages.png"]
    assert all(_png_ok(f) for f in figs) and all(f.name in text for f in figs)


def test_report_without_matplotlib_says_how_to_get_plots(tmp_path, finished, monkeypatch):
    import mlet_compress.sweep.plots as plots
    from mlet_compress.sweep.report import write_report

    monkeypatch.setattr(plots, "have_matplotlib", lambda: False)
    files, notes = write_report(finished.rows, _cfg(), tmp_path)
    assert [f.name for f in files] == ["report.md"] and not list(tmp_path.glob("*.png"))
    assert notes == [plots.PLOTS_HINT] and "pip install" in notes[0]


def test_cli_sweep_and_its_one_line_errors(tmp_path):
    runner = CliRunner()
    args = ["sweep", "--dims", "4", "--mlet-k", "8", "--seeds", "0", "--rows", "2000", "--max-steps", "3",
            "--stages", "q8", "--out", str(tmp_path / "s")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "4 rows from 2 cells (2 trained, 0 read back)" in res.output
    res = runner.invoke(app, args[:-4] + ["--stages", "q8,svd:rnk=2", "--out", str(tmp_path / "t")])
    assert res.exit_code != 0 and error_line(res.exception) == (
        "error: stage 'svd:rnk=2' is not a stage; use q2..q8, q8row, svd:rank=R, svd:energy=E, "
        "or a chain joined by '+' such as svd:rank=2+q8")
    res = runner.invoke(app, args[:-2] + ["--epochs", "2", "--out", str(tmp_path / "s")])
    line = error_line(res.exception)
    assert res.exit_code != 0 and "epochs: finished cells used 1, now 2" in line and "another --out" in line
