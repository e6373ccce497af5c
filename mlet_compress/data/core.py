"""``load_dataset`` / ``load_eval_split``: read, split, fit the vocabularies on train, cache.

Formats: ``criteo``, ``avazu``, ``movielens``, ``libfm``, ``csv`` (also ``.tsv`` and ``.parquet``),
``synthetic``. Splits: see :mod:`.splits` (Criteo by time, the others random and seeded). The
preprocessor (:mod:`.vocab`) is fitted on the training rows only. Results of file formats are cached
(:mod:`.cache`); synthetic data is regenerated (it takes well under a second at the default size).
Text inputs ending in ``.gz``/``.bz2``/``.zst``/``.lz4`` are decompressed on the fly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from ..errors import ConfigError, DataError
from ..metrics import log_loss, roc_auc
from .cache import cache_key, cache_path, default_cache_dir, file_sha256, load_splits, save_splits
from .readers_avazu import read_avazu
from .readers_criteo import read_criteo
from .readers_csv import read_csv_table
from .readers_libfm import read_libfm
from .readers_movielens import movielens_files, read_movielens
from .spec import FORMATS, DataSpec, check_format  # FORMATS re-exported (0.1.0 defined it here)
from .splits import describe_rule, split_indices
from .synthetic import SyntheticConfig, synthetic_raw
from .types import DataSplits, RawTable, TabularData
from .vocab import Preprocessor

_DEFAULT_DENSE = {"criteo": "log1p", "csv": "standardize"}
_SPLIT_OPTIONS = ("label", "categorical", "numeric", "min_freq", "seed", "skip_bad_rows", "numeric_transform")
Progress = Optional[Callable[[str], None]]


def _source_files(fmt: str, path) -> list[Path]:
    if path is None:
        raise ConfigError(f"format {fmt!r} needs a path to the data")
    if fmt == "movielens":
        _, inter, users, items, genres = movielens_files(Path(path))
        return [p for p in (inter, users, items, genres) if p is not None]
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {p} does not exist or is not a file; check the path")
    return [p]


def _read(fmt: str, path, opts: dict, progress) -> RawTable:
    kw = dict(skip_bad_rows=opts["skip_bad_rows"], progress=progress)
    p = Path(path)
    if fmt == "csv":
        return read_csv_table(p, label=opts["label"], categorical=opts["categorical"], numeric=opts["numeric"], **kw)
    reader = {"criteo": read_criteo, "avazu": read_avazu, "movielens": read_movielens, "libfm": read_libfm}[fmt]
    return reader(p, **kw).select(opts["categorical"], opts["numeric"])


def _options(fmt: str, spec: DataSpec, *, skip_bad_rows: bool) -> dict:
    """The run's preprocessing options as recorded in ``info["options"]`` (and hashed into the cache key)."""
    return {"format": fmt, "label": spec.label,
            "categorical": None if spec.categorical is None else list(spec.categorical),
            "numeric": None if spec.numeric is None else list(spec.numeric), "min_freq": int(spec.min_freq),
            "seed": int(spec.seed), "skip_bad_rows": bool(skip_bad_rows),
            "numeric_transform": spec.numeric_transform or _DEFAULT_DENSE.get(fmt, "none"),
            "split_rule": "time" if fmt == "criteo" else "random", "has_val_file": spec.val_data is not None,
            "has_test_file": spec.test_data is not None}


def _cache_dir(value) -> Path | None:
    """``False``: no cache; ``None``/``True``: the default folder; otherwise the given folder."""
    return None if value is False else Path(value) if value not in (None, True) else default_cache_dir()


def _describe_sources(roles: dict[str, list[Path]], cache_dir: Path | None) -> list[dict]:
    out = []
    for role, files in roles.items():
        for f in files:
            out.append({"role": role, "path": str(Path(f).resolve()), "bytes": Path(f).stat().st_size,
                        "sha256": file_sha256(f, cache_dir)})
    return out


def load_dataset(spec: DataSpec, *, progress: Progress = None) -> DataSplits:
    """Load, split and preprocess the dataset that ``spec`` describes.

    File formats are split (:mod:`.splits`), their vocabularies fitted on the training rows and the
    result cached under a key of every option and the SHA-256 of every input file; the synthetic
    generator is re-run (it takes well under a second at the default size).

    Args:
        spec: the :class:`DataSpec` (path, format, columns, split seed, cache folder, ...).
        progress: callback receiving one-line status messages.

    Returns:
        :class:`DataSplits` with train/val/test, the fitted preprocessor and a JSON-able ``info``.

    Raises:
        ConfigError: an invalid spec, or an unknown column. DataError: unreadable or malformed data.

    Example:
        >>> splits = load_dataset(DataSpec(format="synthetic", synthetic={"num_rows": 5000}))
        >>> len(splits.train), len(splits.val), len(splits.test)
        (4000, 500, 500)
    """
    if not isinstance(spec, DataSpec):
        raise ConfigError(f"load_dataset takes a DataSpec, got {type(spec).__name__}; "
                          "e.g. load_dataset(DataSpec(path='train.txt', format='criteo'))")
    spec.validate()
    fmt = check_format(spec.format)
    say = progress or (lambda _msg: None)
    if fmt == "synthetic":
        return _load_synthetic(spec, say)
    opts = _options(fmt, spec, skip_bad_rows=spec.skip_bad_rows)
    cdir = _cache_dir(spec.cache_dir)
    roles = {"train": _source_files(fmt, spec.path)}
    if spec.val_data is not None:
        roles["val"] = _source_files(fmt, spec.val_data)
    if spec.test_data is not None:
        roles["test"] = _source_files(fmt, spec.test_data)
    say("hashing input files")
    sources = _describe_sources(roles, cdir)
    key = cache_key({"options": opts, "sources": [(s["role"], s["sha256"]) for s in sources]})
    if cdir is not None:
        hit = _cache_hit(cdir, key, sources, say)
        if hit is not None:
            return hit
    splits = _split_files(fmt, spec, opts, progress, say)
    splits.info.update(sources=sources, cache={"key": key, "hit": False,
                                               "path": None if cdir is None else str(cache_path(cdir, key))})
    if cdir is not None:
        try:
            save_splits(cache_path(cdir, key), splits)
            say(f"cached as {cache_path(cdir, key)}")
        except OSError as exc:
            say(f"could not write the cache ({exc}); continuing without it")
            splits.info["cache"]["path"] = None
    return splits


def _cache_hit(cdir: Path, key: str, sources: list[dict], say: Callable[[str], None]) -> DataSplits | None:
    """The cached splits of ``key`` (with this call's ``sources``), or None on a miss or a corrupt entry."""
    hit = load_splits(cache_path(cdir, key))
    if hit is None:
        return None
    say(f"cache hit {cache_path(cdir, key)}")
    data, pre_d, info = hit
    info["cache"] = {"key": key, "hit": True, "path": str(cache_path(cdir, key))}
    info["sources"] = sources
    return DataSplits(data["train"], data["val"], data["test"], Preprocessor.from_dict(pre_d), info)


def _split_files(fmt: str, spec: DataSpec, opts: dict, progress: Progress,
                 say: Callable[[str], None]) -> DataSplits:
    """Read the files, split, fit the vocabularies on the training rows and encode every split.

    ``info`` gets ``sources`` and ``cache`` placeholders (in their usual place); the caller fills them.
    """
    raw = _read(fmt, spec.path, opts, progress)
    extra = {r: _read(fmt, p, opts, progress) for r, p in (("val", spec.val_data), ("test", spec.test_data))
             if p is not None}
    idx = split_indices(len(raw), opts["split_rule"], opts["seed"], has_val_file="val" in extra,
                        has_test_file="test" in extra)
    if len(idx["train"]) == 0:
        raise DataError(f"{spec.path}: no training rows after splitting {len(raw)} rows; provide more data")
    say(f"building vocabularies on {len(idx['train'])} training rows")
    pre = Preprocessor.fit(raw, idx["train"], min_freq=opts["min_freq"], dense_transform=opts["numeric_transform"])
    parts = {s: pre.transform(raw.take(idx[s])) for s in idx}
    parts.update({s: pre.transform(r) for s, r in extra.items()})
    info = {
        "format": fmt, "sources": None, "options": opts,
        "split": {"rule": opts["split_rule"], "seed": opts["seed"], "description": describe_rule(opts["split_rule"]),
                  "val_from": "file" if "val" in extra else "path", "test_from": "file" if "test" in extra else "path"},
        "rows": {s: len(parts[s]) for s in ("train", "val", "test")}, "rows_in_path": len(raw),
        "skipped_bad_rows": int(raw.skipped + sum(r.skipped for r in extra.values())),
        "field_names": pre.field_names, "dense_names": pre.dense_names, "vocab_sizes": pre.vocab_sizes,
        "label_rate": {s: float(parts[s].labels.mean()) if len(parts[s]) else None for s in parts},
        "cache": None,
    }
    return DataSplits(parts["train"], parts["val"], parts["test"], pre, info)


def _load_synthetic(spec: DataSpec, say: Callable[[str], None]) -> DataSplits:
    cfg = spec.synthetic_config()
    opts = _options("synthetic", spec, skip_bad_rows=False)  # generated rows are never malformed
    say(f"generating {cfg.num_rows} synthetic rows")
    raw, probs = synthetic_raw(cfg)
    raw = raw.select(opts["categorical"], opts["numeric"])
    idx = split_indices(len(raw), "random", opts["seed"])
    pre = Preprocessor.fit(raw, idx["train"], min_freq=opts["min_freq"], dense_transform="none")
    parts = {s: pre.transform(raw.take(i)) for s, i in idx.items()}
    t = idx["test"]
    info = {
        "format": "synthetic", "sources": [], "options": opts, "synthetic": cfg.to_dict(),
        "split": {"rule": "random", "seed": opts["seed"], "description": describe_rule("random"),
                  "val_from": "path", "test_from": "path"},
        "rows": {s: len(parts[s]) for s in ("train", "val", "test")}, "rows_in_path": len(raw),
        "skipped_bad_rows": 0, "field_names": pre.field_names, "dense_names": pre.dense_names,
        "vocab_sizes": pre.vocab_sizes, "label_rate": {s: float(parts[s].labels.mean()) for s in parts},
        "synthetic_bayes": {"test_auc": roc_auc(raw.labels[t], probs[t]),
                            "test_logloss": log_loss(raw.labels[t], probs[t])},
        "cache": {"key": None, "hit": False, "path": None},
    }
    return DataSplits(parts["train"], parts["val"], parts["test"], pre, info)


def load_eval_split(spec: DataSpec | None, preprocessor_dict: dict, info: dict, *,
                    progress: Progress = None) -> TabularData:
    """Rebuild exactly the test split of a training run (or encode a new test file) with its vocabulary.

    Args:
        spec: the run's :class:`DataSpec`, possibly with another ``path`` (same content: the SHA-256 is
            checked), another ``cache_dir``, or a ``test_data`` file to encode instead of rebuilding the
            split. Its split options (label, columns, min_freq, seed, skip_bad_rows, numeric_transform,
            synthetic settings; ``None`` = the run's) must equal the run's. ``None``: the data, format
            and options recorded in ``info``, with the default cache folder.
        preprocessor_dict: ``DataSplits.preprocessor.to_dict()`` of the training run.
        info: ``DataSplits.info`` of the training run.
        progress: callback receiving one-line status messages.

    Returns:
        The test :class:`TabularData`, encoded with the saved vocabularies.

    Raises:
        ConfigError: an option or the format differs from the run. DataError: the data changed since
        the run (content hash or row count differ), or is malformed.

    Example:
        >>> spec = DataSpec(format="synthetic", synthetic={"num_rows": 3000})
        >>> s = load_dataset(spec)
        >>> t = load_eval_split(spec, s.preprocessor.to_dict(), s.info)
        >>> bool((t.sparse == s.test.sparse).all())
        True
    """
    fmt = check_format(spec.format if spec is not None else info.get("format", ""))
    if fmt != info.get("format"):
        raise ConfigError(f"format {fmt!r} differs from the training run's {info.get('format')!r}; pass the same")
    pre = Preprocessor.from_dict(preprocessor_dict)
    opts = dict(info["options"])
    if spec is not None:
        spec.validate()
        _check_same_options(spec, fmt, opts, info)
        if spec.test_data is not None:
            return pre.transform(_read(fmt, spec.test_data, opts, progress))
    if fmt == "synthetic":
        raw, _ = synthetic_raw(SyntheticConfig.from_dict(info["synthetic"]))
        raw = raw.select(opts["categorical"], opts["numeric"])
        return pre.transform(raw.take(split_indices(len(raw), "random", opts["seed"])["test"]))
    if spec is None:
        return _rebuild_test(fmt, None, default_cache_dir(), pre, opts, info, progress)
    return _rebuild_test(fmt, spec.path, _cache_dir(spec.cache_dir), pre, opts, info, progress)


def _check_same_options(spec: DataSpec, fmt: str, opts: dict, info: dict) -> None:
    """Raise ConfigError when a split-relevant option of ``spec`` differs from the run's (None = the run's)."""
    if fmt == "synthetic" and spec.synthetic is not None and \
            SyntheticConfig.from_dict(info["synthetic"]) != spec.synthetic_config():
        raise ConfigError("synthetic config differs from the training run's; pass the same or None")
    for k in _SPLIT_OPTIONS:
        if k == "skip_bad_rows" and fmt == "synthetic":
            continue  # ignored for generated data (recorded as False)
        v, run_v = getattr(spec, k), opts.get(k)
        norm = list(v) if isinstance(v, (list, tuple)) else v
        if v is not None and norm != run_v:
            raise ConfigError(f"option {k}={v!r} differs from the training run's {run_v!r}; the split would differ")


def _rebuild_test(fmt: str, path, cdir: Path | None, pre: Preprocessor, opts: dict, info: dict,
                  progress: Progress) -> TabularData:
    """The run's test rows of a file format: from the cache when present, else re-read (SHA-256 checked)."""
    key = (info.get("cache") or {}).get("key")
    if cdir is not None and key:
        hit = load_splits(cache_path(cdir, key), only=("test",))
        if hit is not None and hit[1].get("vocab_sizes") == pre.vocab_sizes:
            return hit[0]["test"]
    role = "test" if opts["has_test_file"] else "train"
    recorded = [s for s in info["sources"] if s["role"] == role]
    if path is None or role == "test":
        if not recorded:
            raise ConfigError("info has no recorded data path; pass a DataSpec with the path")
        path = recorded[0]["path"]
    files = _source_files(fmt, path)
    got = [file_sha256(f, cdir) for f in files]
    if got != [s["sha256"] for s in recorded]:
        raise DataError(f"{path}: content differs from the training run's data (sha256 mismatch); the test split "
                        f"cannot be rebuilt; pass the original file or a DataSpec with test_data")
    raw = _read(fmt, path, opts, progress)
    if role == "test":
        data = pre.transform(raw)
    else:
        idx = split_indices(len(raw), opts["split_rule"], opts["seed"], has_val_file=opts["has_val_file"])["test"]
        data = pre.transform(raw.take(idx))
    if len(data) != info["rows"]["test"]:
        raise DataError(f"{path}: rebuilt test split has {len(data)} rows, the run had {info['rows']['test']}")
    return data


__all__ = ["FORMATS", "load_dataset", "load_eval_split"]
