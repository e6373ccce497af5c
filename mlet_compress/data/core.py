"""``load_dataset`` / ``load_eval_split``: read, split, fit the vocabularies on train, cache.

Formats: ``criteo``, ``avazu``, ``movielens``, ``libfm``, ``csv`` (also ``.tsv`` and ``.parquet``),
``synthetic``. Splits: see :mod:`.splits` (Criteo by time, the others random and seeded). The
preprocessor (:mod:`.vocab`) is fitted on the training rows only. Results of file formats are cached
(:mod:`.cache`); synthetic data is regenerated (it takes well under a second at the default size).
Text inputs ending in ``.gz``/``.bz2``/``.zst``/``.lz4`` are decompressed on the fly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import ConfigError, DataError
from .cache import cache_key, cache_path, default_cache_dir, file_sha256, load_splits, save_splits
from .readers_libfm import read_libfm
from .readers_movielens import movielens_files, read_movielens
from .readers_avazu import read_avazu
from .readers_criteo import read_criteo
from .readers_csv import read_csv_table
from .splits import describe_rule, split_indices
from .synthetic import SyntheticConfig, synthetic_raw
from .types import DataSplits, RawTable, TabularData
from .vocab import DENSE_TRANSFORMS, Preprocessor

FORMATS = ("criteo", "avazu", "movielens", "libfm", "csv", "synthetic")
_DEFAULT_DENSE = {"criteo": "log1p", "csv": "standardize"}
_SPLIT_OPTIONS = ("label", "categorical", "numeric", "min_freq", "seed", "skip_bad_rows", "numeric_transform")


def _check_format(fmt: str) -> str:
    f = str(fmt).lower()
    if f == "parquet":
        f = "csv"
    if f not in FORMATS:
        raise ConfigError(f"data format {fmt!r} is unknown; use one of {FORMATS}")
    return f


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


def _options(fmt, label, categorical, numeric, min_freq, seed, skip_bad_rows, numeric_transform,
             has_val, has_test) -> dict:
    if label is not None and fmt != "csv":
        raise ConfigError(f"label={label!r} applies to format 'csv' only; format {fmt!r} has a fixed label")
    if isinstance(categorical, str) or isinstance(numeric, str):
        raise ConfigError("categorical/numeric take a list of column names, not a string; wrap it in [...]")
    nt = numeric_transform or _DEFAULT_DENSE.get(fmt, "none")
    if nt not in DENSE_TRANSFORMS:
        raise ConfigError(f"numeric_transform={nt!r} is unknown; use one of {DENSE_TRANSFORMS}")
    if int(min_freq) < 1:
        raise ConfigError(f"min_freq={min_freq} must be >= 1 (1 keeps every category seen in training)")
    return {"format": fmt, "label": label, "categorical": None if categorical is None else list(categorical),
            "numeric": None if numeric is None else list(numeric), "min_freq": int(min_freq), "seed": int(seed),
            "skip_bad_rows": bool(skip_bad_rows), "numeric_transform": nt,
            "split_rule": "time" if fmt == "criteo" else "random", "has_val_file": has_val, "has_test_file": has_test}


def _describe_sources(roles: dict[str, list[Path]], cache_dir: Path | None) -> list[dict]:
    out = []
    for role, files in roles.items():
        for f in files:
            out.append({"role": role, "path": str(Path(f).resolve()), "bytes": Path(f).stat().st_size,
                        "sha256": file_sha256(f, cache_dir)})
    return out


def load_dataset(path: str | Path | None, format: str = "synthetic", *, label: str | None = None,
                 categorical: list[str] | None = None, numeric: list[str] | None = None, val_data=None,
                 test_data=None, min_freq: int = 1, seed: int = 0, skip_bad_rows: bool = False,
                 cache_dir: str | Path | None | bool = None, synthetic: SyntheticConfig | None = None,
                 progress: Callable[[str], None] | None = None,
                 numeric_transform: str | None = None) -> DataSplits:
    """Load, split and preprocess a dataset.

    Args:
        path: the data file (movielens: folder or ``.inter``/``u.data``); None for ``synthetic``.
        format: one of ``criteo, avazu, movielens, libfm, csv, synthetic`` (``parquet`` = ``csv``).
        label: label column (``csv`` only; default: label/click/target/y).
        categorical: categorical columns (``csv``) or a subset of the format's fields (others).
        numeric: numeric columns (``csv``) or a subset of the dense columns (``criteo``).
        val_data, test_data: separate files of the same format (see :mod:`.splits`).
        min_freq: categories seen fewer times in train map to the OOV id 0.
        seed: seed of the random split (synthetic data uses ``synthetic.seed`` for the rows).
        skip_bad_rows: drop malformed rows (counted in ``info["skipped_bad_rows"]``) instead of raising.
        cache_dir: cache folder (None = ``$MLET_CACHE_DIR`` or ``~/.cache/mlet-compress``; False = off).
        synthetic: generator settings (default :class:`SyntheticConfig()`).
        progress: callback receiving one-line status messages.
        numeric_transform: ``log1p``/``standardize``/``none`` (default: criteo log1p, csv standardize).

    Returns:
        :class:`DataSplits` with train/val/test, the fitted preprocessor and a JSON-able ``info``.

    Raises:
        ConfigError: unknown format/option/column. DataError: unreadable or malformed data.

    Example:
        >>> splits = load_dataset(None, "synthetic", synthetic=SyntheticConfig(num_rows=5000))
        >>> len(splits.train), len(splits.val), len(splits.test)
        (4000, 500, 500)
    """
    fmt = _check_format(format)
    say = progress or (lambda _msg: None)
    if fmt == "synthetic":
        if path is not None or val_data is not None or test_data is not None:
            raise ConfigError("format 'synthetic' takes no path/val_data/test_data; pass path=None")
        return _load_synthetic(synthetic or SyntheticConfig(), min_freq, seed, label, categorical, numeric, say)
    opts = _options(fmt, label, categorical, numeric, min_freq, seed, skip_bad_rows, numeric_transform,
                    val_data is not None, test_data is not None)
    cdir = None if cache_dir is False else Path(cache_dir) if cache_dir not in (None, True) else default_cache_dir()
    roles = {"train": _source_files(fmt, path)}
    if val_data is not None:
        roles["val"] = _source_files(fmt, val_data)
    if test_data is not None:
        roles["test"] = _source_files(fmt, test_data)
    say("hashing input files")
    sources = _describe_sources(roles, cdir)
    key = cache_key({"options": opts, "sources": [(s["role"], s["sha256"]) for s in sources]})
    if cdir is not None:
        hit = load_splits(cache_path(cdir, key))
        if hit is not None:
            say(f"cache hit {cache_path(cdir, key)}")
            data, pre_d, info = hit
            info["cache"] = {"key": key, "hit": True, "path": str(cache_path(cdir, key))}
            info["sources"] = sources
            return DataSplits(data["train"], data["val"], data["test"], Preprocessor.from_dict(pre_d), info)
    raw = _read(fmt, path, opts, progress)
    extra = {r: _read(fmt, p, opts, progress) for r, p in (("val", val_data), ("test", test_data)) if p is not None}
    idx = split_indices(len(raw), opts["split_rule"], opts["seed"], has_val_file="val" in extra,
                        has_test_file="test" in extra)
    if len(idx["train"]) == 0:
        raise DataError(f"{path}: no training rows after splitting {len(raw)} rows; provide more data")
    say(f"building vocabularies on {len(idx['train'])} training rows")
    pre = Preprocessor.fit(raw, idx["train"], min_freq=opts["min_freq"], dense_transform=opts["numeric_transform"])
    parts = {s: pre.transform(raw.take(idx[s])) for s in idx}
    parts.update({s: pre.transform(r) for s, r in extra.items()})
    info = {
        "format": fmt, "sources": sources, "options": opts,
        "split": {"rule": opts["split_rule"], "seed": opts["seed"], "description": describe_rule(opts["split_rule"]),
                  "val_from": "file" if "val" in extra else "path", "test_from": "file" if "test" in extra else "path"},
        "rows": {s: len(parts[s]) for s in ("train", "val", "test")}, "rows_in_path": len(raw),
        "skipped_bad_rows": int(raw.skipped + sum(r.skipped for r in extra.values())),
        "field_names": pre.field_names, "dense_names": pre.dense_names, "vocab_sizes": pre.vocab_sizes,
        "label_rate": {s: float(parts[s].labels.mean()) if len(parts[s]) else None for s in parts},
        "cache": {"key": key, "hit": False, "path": None if cdir is None else str(cache_path(cdir, key))},
    }
    splits = DataSplits(parts["train"], parts["val"], parts["test"], pre, info)
    if cdir is not None:
        try:
            save_splits(cache_path(cdir, key), splits)
            say(f"cached as {cache_path(cdir, key)}")
        except OSError as exc:
            say(f"could not write the cache ({exc}); continuing without it")
            info["cache"]["path"] = None
    return splits


def _load_synthetic(cfg, min_freq, seed, label, categorical, numeric, say) -> DataSplits:
    from ..metrics import log_loss, roc_auc

    if label is not None:
        raise ConfigError(f"label={label!r} applies to format 'csv' only")
    if not isinstance(cfg, SyntheticConfig):
        raise ConfigError(f"synthetic= must be a SyntheticConfig, got {type(cfg).__name__}")
    opts = _options("synthetic", None, categorical, numeric, min_freq, seed, False, None, False, False)
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


def load_eval_split(path: str | Path | None, format: str | None, preprocessor_dict: dict, info: dict, *,
                    test_data=None, **same_options) -> TabularData:
    """Rebuild exactly the test split of a training run (or encode a new test file) with its vocabulary.

    Args:
        path: the training data (None = the path recorded in ``info``).
        format: the format (None = ``info["format"]``).
        preprocessor_dict: ``DataSplits.preprocessor.to_dict()`` of the training run.
        info: ``DataSplits.info`` of the training run.
        test_data: a separate file to encode instead of rebuilding the split.
        **same_options: ``load_dataset`` options; split-relevant ones must equal the run's
            (``cache_dir`` and ``progress`` are free).

    Returns:
        The test :class:`TabularData`, encoded with the saved vocabularies.

    Raises:
        ConfigError: an option or the format differs from the run. DataError: the data changed since
        the run (content hash or row count differ), or is malformed.

    Example:
        >>> s = load_dataset(None, "synthetic", synthetic=SyntheticConfig(num_rows=3000))
        >>> t = load_eval_split(None, None, s.preprocessor.to_dict(), s.info)
        >>> bool((t.sparse == s.test.sparse).all())
        True
    """
    fmt = _check_format(format or info.get("format", ""))
    if fmt != info.get("format"):
        raise ConfigError(f"format {fmt!r} differs from the training run's {info.get('format')!r}; pass the same")
    pre = Preprocessor.from_dict(preprocessor_dict)
    opts = dict(info["options"])
    progress = same_options.pop("progress", None)
    cache_dir = same_options.pop("cache_dir", None)
    same_options.pop("val_data", None)
    for k, v in same_options.items():
        if k == "synthetic":
            if v is not None and SyntheticConfig.from_dict(info["synthetic"]) != v:
                raise ConfigError("synthetic config differs from the training run's; pass the same or None")
            continue
        if k not in _SPLIT_OPTIONS:
            raise ConfigError(f"load_eval_split: unknown option {k!r}")
        run_v = opts.get(k)
        norm = list(v) if isinstance(v, (list, tuple)) else v
        if v is not None and norm != run_v:
            raise ConfigError(f"option {k}={v!r} differs from the training run's {run_v!r}; the split would differ")
    if test_data is not None:
        if fmt == "synthetic":
            raise ConfigError("format 'synthetic' has no test file; omit test_data")
        return pre.transform(_read(fmt, test_data, opts, progress))
    if fmt == "synthetic":
        raw, _ = synthetic_raw(SyntheticConfig.from_dict(info["synthetic"]))
        raw = raw.select(opts["categorical"], opts["numeric"])
        return pre.transform(raw.take(split_indices(len(raw), "random", opts["seed"])["test"]))
    cdir = None if cache_dir is False else Path(cache_dir) if cache_dir not in (None, True) else default_cache_dir()
    key = (info.get("cache") or {}).get("key")
    if cdir is not None and key:
        hit = load_splits(cache_path(cdir, key), only=("test",))
        if hit is not None and hit[1].get("vocab_sizes") == pre.vocab_sizes:
            return hit[0]["test"]
    role = "test" if opts["has_test_file"] else "train"
    recorded = [s for s in info["sources"] if s["role"] == role]
    if path is None or role == "test":
        if not recorded:
            raise ConfigError("info has no recorded data path; pass path")
        path = recorded[0]["path"]
    files = _source_files(fmt, path)
    got = [file_sha256(f, cdir) for f in files]
    if got != [s["sha256"] for s in recorded]:
        raise DataError(f"{path}: content differs from the training run's data (sha256 mismatch); the test split "
                        f"cannot be rebuilt; pass the original file or test_data=")
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
