"""``mlet-compress cache``: shows where the data cache is and clears only its own files."""

from pathlib import Path

from typer.testing import CliRunner

from conftest import criteo_rows, write_lines
from mlet_compress.cli.app import app
from mlet_compress.data import DataSpec, load_dataset
from mlet_compress.data.cache import cache_entries

runner = CliRunner()


def test_cache_shows_and_clears_only_its_files(tmp_path, monkeypatch):
    cdir = tmp_path / "cache"
    monkeypatch.setenv("MLET_CACHE_DIR", str(cdir))
    path = write_lines(tmp_path / "train.txt", ["\t".join(r) for r in criteo_rows(140)])
    first = load_dataset(DataSpec(path=path, format="criteo"))  # default cache folder: $MLET_CACHE_DIR
    entry = Path(first.info["cache"]["path"])
    assert entry.parent == cdir and cache_entries() == [entry]
    (cdir / "notes.txt").write_text("not ours")
    res = runner.invoke(app, ["cache"])
    assert res.exit_code == 0 and f"data cache: {cdir} (1 files" in res.stdout and entry.exists()
    res = runner.invoke(app, ["cache", "--clear"])
    assert res.exit_code == 0 and "removed 1 files" in res.stderr
    assert not entry.exists() and (cdir / "notes.txt").read_text() == "not ours"
    again = load_dataset(DataSpec(path=path, format="criteo"))
    assert again.info["cache"]["hit"] is False and entry.exists()  # rebuilt on the next run
