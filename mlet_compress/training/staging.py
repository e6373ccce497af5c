"""Run directories that are never half-written: a run writes into ``<parent>/.<name>.incomplete/`` (with an
``INCOMPLETE.json`` marker) and rank 0 renames it to ``<name>`` once everything is written.

A run that fails or is killed leaves only the hidden staging directory: its marker says when it started,
what it trains and, for a Python exception, the error. A new run into the same ``out`` refuses to start
(the message says how to continue it, ``resume``, or to start over, ``force``); ``resume`` continues in
the staging directory (from ``state.pt`` when an epoch finished, else from the start with the saved
config) and renames it into place at the end. Resuming a finished run moves it back to staging while it
trains, so ``<name>`` always holds a finished run or nothing.

``force`` into an existing directory stages the new run too, then moves its files into ``<name>``:
the run files of the old run (:data:`RUN_FILES`) are replaced or removed, other files are left alone.

Example:
    >>> staging_dir(Path("runs/ddp"))
    PosixPath('runs/.ddp.incomplete')
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import CheckpointError, ConfigError
from . import outputs as out_files
from .ddp import DistInfo, barrier

INCOMPLETE_FILE = "INCOMPLETE.json"
#: Files a run writes; ``force`` replaces them (and removes those the new run does not write).
RUN_FILES = (out_files.MODEL_FILE, out_files.FACTORS_FILE, out_files.METRICS_FILE, out_files.CONFIG_FILE,
             out_files.PREPROCESSOR_FILE, out_files.STATE_FILE, out_files.COMPARE_FILE, INCOMPLETE_FILE)


def staging_dir(out: Path) -> Path:
    """Where a run into ``out`` writes until it finishes: ``<parent>/.<name>.incomplete``."""
    out = Path(out)
    return out.parent / f".{out.name}.incomplete"


def read_marker(staging: Path) -> dict[str, Any]:
    """The ``INCOMPLETE.json`` of a staging directory (``{}`` when missing or unreadable)."""
    try:
        doc = out_files.read_json(staging / INCOMPLETE_FILE)
    except CheckpointError:
        return {}
    return doc if isinstance(doc, dict) else {}


def describe_unfinished(out: Path) -> str:
    """One line on the unfinished run into ``out``: when it started, how far it got, the error if known."""
    st = staging_dir(out)
    mark = read_marker(st)
    parts = [f"{st}: started {mark.get('started', '?')}"]
    if "epochs_done" in mark:
        parts.append(f"{mark['epochs_done']} of {mark.get('epochs', '?')} epochs saved in state.pt")
    if mark.get("variants_done") is not None:
        parts.append(f"variants finished: {mark['variants_done'] or 'none'}")
    if mark.get("error"):
        parts.append(f"failed with {mark['error']}")
    return ", ".join(parts)


@dataclass
class RunStage:
    """A run being written: the final directory and the staging directory the files go to.

    Attributes:
        final: the run directory the user named. work: where files are written until :func:`commit`.
    """

    final: Path
    work: Path


def check_new_run(out: Path, force: bool) -> None:
    """Refuse ``out`` (on every rank, before anything is created): a file, an unfinished run, a non-empty directory.

    Raises:
        ConfigError: naming the fix (``out``, ``resume``, ``force``).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output path {str(out)!r} is a file; pass a directory as {{out}}", options={"out": ...})
    if staging_dir(out).exists() and not force:
        raise ConfigError(f"a previous run into {str(out)!r} did not finish ({describe_unfinished(out)}); pass {{resume}} "
                          "to continue it, {force} to start over, or choose another {out}",
                          options={"resume": True, "force": True, "out": ...})
    out_files.check_run_dir(out, force=force)


def open_new_run(out: Path, force: bool, info: DistInfo, marker: dict[str, Any]) -> RunStage:
    """Check ``out`` on every rank, then rank 0 creates a fresh staging directory with its marker.

    Args:
        out: the run directory. force: allow an existing one (and discard an unfinished run's staging).
        info: DDP placement. marker: what the run is (``kind``, ``train_config``, ...), saved in the marker.

    Returns:
        The :class:`RunStage` (the same on every rank).

    Raises:
        ConfigError: as :func:`check_new_run`.
    """
    out = Path(out)
    check_new_run(out, force)
    stage = RunStage(out, staging_dir(out))
    barrier(info)
    if info.is_main:
        if stage.work.exists():
            shutil.rmtree(stage.work)
        stage.work.mkdir(parents=True)
        write_marker(stage.work, marker)
    barrier(info)
    return stage


def write_marker(work: Path, marker: dict[str, Any], **more: Any) -> None:
    """(Re)write ``INCOMPLETE.json``: ``started``, ``host``, ``pid`` and the run's description."""
    doc = {"started": _dt.datetime.now().isoformat(timespec="seconds"), "host": socket.gethostname(),
           "pid": os.getpid(), **read_marker(work), **marker, **more}
    out_files.write_json(work / INCOMPLETE_FILE, doc)


def open_resume(out: Path, info: DistInfo, marker: dict[str, Any]) -> RunStage:
    """The staging directory a resumed run continues in: an unfinished run's, or a finished run moved there.

    Raises:
        CheckpointError: neither ``out`` nor its staging directory exists.
    """
    out = Path(out)
    st = staging_dir(out)
    unfinished = st.is_dir()
    if not unfinished and not out.is_dir():
        raise CheckpointError(f"{str(out)!r} does not exist (nor an unfinished run at {st}); nothing to resume")
    barrier(info)  # every rank has looked before rank 0 moves anything
    if info.is_main:
        if not unfinished:
            os.replace(out, st)
        write_marker(st, marker, resumed=_dt.datetime.now().isoformat(timespec="seconds"), error=None)
    barrier(info)
    return RunStage(out, st)


def record_failure(stage: Optional[RunStage], info: DistInfo, exc: BaseException) -> None:
    """Note ``exc`` in the marker of the staging directory (rank 0; never raises)."""
    if stage is None or not info.is_main or not stage.work.is_dir():
        return
    try:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        write_marker(stage.work, {}, error=f"{type(exc).__name__}: {first}" if first else type(exc).__name__)
    except Exception:  # noqa: BLE001 - the original error matters more than the marker
        pass


def _merge(src: Path, dst: Path) -> None:
    """Move ``src``'s entries into the existing directory ``dst``; drop ``dst``'s stale run files."""
    for stale in RUN_FILES:
        if (dst / stale).is_file() and not (src / stale).exists():
            (dst / stale).unlink()
    for entry in src.iterdir():
        target = dst / entry.name
        if entry.is_dir() and target.is_dir():
            _merge(entry, target)
            entry.rmdir()
        else:
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)


def commit(stage: Optional[RunStage], info: DistInfo) -> None:
    """Rank 0 removes the marker and puts the finished run at ``stage.final`` (after every rank is done)."""
    if stage is None:
        return
    barrier(info)
    if info.is_main:
        (stage.work / INCOMPLETE_FILE).unlink(missing_ok=True)
        final = stage.final
        if final.is_dir() and any(final.iterdir()):
            _merge(stage.work, final)
            stage.work.rmdir()
        else:
            if final.is_dir():
                final.rmdir()
            os.replace(stage.work, final)
    barrier(info)


def run_kind(out: Path) -> str:
    """``"compare"`` for a comparison root (finished or not), else ``"run"``."""
    out = Path(out)
    st = staging_dir(out)
    if st.is_dir():
        return "compare" if read_marker(st).get("kind") == "compare" else "run"
    return "compare" if (out / out_files.COMPARE_FILE).is_file() else "run"


def describe_resume(out: Path) -> str:
    """What resuming ``out`` will do, in one line (what the CLI prints before it continues a run)."""
    out = Path(out)
    st = staging_dir(out)
    if not st.is_dir():
        return (f"continuing the finished {'comparison' if run_kind(out) == 'compare' else 'run'} {out} from its "
                f"saved state (it is moved to {st} while it trains)")
    mark = read_marker(st)
    if mark.get("kind") == "compare":
        return (f"continuing the unfinished comparison {out} ({st}); variants finished: "
                f"{mark.get('variants_done') or 'none'}; the others continue from their last saved epoch or start")
    if mark.get("epochs_done"):
        return (f"continuing the unfinished run {out} ({st}) after epoch {mark['epochs_done']} of {mark.get('epochs', '?')}"
                " (state.pt is saved after each epoch: the steps of an epoch cut short are trained again)")
    return (f"the unfinished run {out} ({st}) stopped before its first epoch was saved: training it again from the "
            "start with its saved config")


def link_latest(run_dir: Path) -> Optional[Path]:
    """Point ``<parent>/latest`` at ``run_dir`` (a relative symlink, replaced atomically); None when a real
    file or folder named ``latest`` is in the way (it is never replaced)."""
    run_dir = Path(run_dir)
    link = run_dir.parent / "latest"
    if link.exists() and not link.is_symlink():
        return None
    tmp = run_dir.parent / f".latest.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(run_dir.name, tmp)
    os.replace(tmp, link)
    return link


__all__ = ["INCOMPLETE_FILE", "RUN_FILES", "RunStage", "staging_dir", "read_marker", "describe_unfinished",
           "check_new_run", "open_new_run", "open_resume", "write_marker", "record_failure", "commit", "link_latest",
           "run_kind", "describe_resume"]
