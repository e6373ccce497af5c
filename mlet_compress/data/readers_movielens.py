"""MovieLens reader (ML-100K and alike) for two layouts.

* **RecBole atomic files**: ``<name>.inter`` (TSV, header ``user_id:token item_id:token rating:float
  timestamp:float``; the ``:type`` suffix is stripped) plus optional ``<name>.user`` / ``<name>.item``.
* **GroupLens**: ``u.data`` (tab-separated ``user item rating timestamp``, no header), optional
  ``u.user`` (``user|age|gender|occupation|zip``), ``u.item`` (latin-1, ``|``-separated, 19 genre
  flags at the end) and ``u.genre`` (genre names).

``path`` may be the folder or the ``.inter`` / ``u.data`` file. Label: ``click = rating >= 4`` (or an
existing 0/1 ``label`` column of a RecBole ``.inter``). Fields, all categorical (no dense features):
``user_id, item_id`` and, when the side files exist, ``age`` (the raw age value), ``gender``,
``occupation``, ``zip3`` (first 3 characters of the zip code: a regional prefix, since the full zip
is almost unique per user), ``release_year`` (RecBole ``release_year``; GroupLens: last 4 characters
of the release date) and ``genre`` (the first listed genre: first token of RecBole ``class``, first set
flag in GroupLens; both use the same alphabetical genre order, so both layouts give the same values).
Users/items missing from a side file get missing (OOV) values. The timestamp is not used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError
from .textio import ColSpec, in_set, raw_column, read_delimited, sniff_first_line, to_numpy
from .types import RawTable

# pyarrow is imported inside the functions that use it (lean import): `import mlet_compress.data` and the
# synthetic path never load it.

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
          "War", "Western"]


def movielens_files(path: Path) -> tuple[str, Path, Path | None, Path | None, Path | None]:
    """Resolve ``path`` to ``(layout, interactions, users, items, genres)`` (absent side files -> None)."""
    path = Path(path)
    if path.is_dir():
        inters = sorted(path.glob("*.inter"))
        if inters:
            named = [p for p in inters if p.stem == path.name]
            if len(inters) > 1 and not named:
                raise DataError(f"{path}: several .inter files {[p.name for p in inters]}; pass one file as path")
            path = named[0] if named else inters[0]
        elif (path / "u.data").is_file():
            path = path / "u.data"
        else:
            raise DataError(f"{path}: no *.inter (RecBole) or u.data (GroupLens) file in this folder")
    if not path.is_file():
        raise DataError(f"MovieLens path {path} does not exist; pass the folder or the .inter/u.data file")
    first = sniff_first_line(path)
    if path.suffix == ".inter" or ":" in first.split("\t")[0]:
        side = [path.with_suffix(s) for s in (".user", ".item")]
        return ("recbole", path, *[p if p.is_file() else None for p in side], None)
    side = [path.parent / n for n in ("u.user", "u.item", "u.genre")]
    return ("grouplens", path, *[p if p.is_file() else None for p in side])


def _recbole_header(path: Path) -> list[str]:
    return [c.strip().split(":")[0] for c in sniff_first_line(path).split("\t")]


def _lookup(keys_col, table, key: str, value_cols: list[str]) -> dict:
    """Values of ``value_cols`` of ``table`` for each element of ``keys_col`` (join on ``key``)."""
    import pyarrow.compute as pc

    idx = pc.index_in(keys_col, value_set=table.column(key).combine_chunks())
    return {c: table.column(c).combine_chunks().take(idx) for c in value_cols}


def read_movielens(path: Path, *, skip_bad_rows: bool = False,
                   progress: Callable[[str], None] | None = None) -> RawTable:
    """Read MovieLens interactions (+ user/item features) into a :class:`RawTable`.

    Args:
        path: the folder, or the ``.inter`` / ``u.data`` file.
        skip_bad_rows: drop (and count) malformed rows of any of the files instead of raising.
        progress: optional status callback.

    Returns:
        RawTable with fields ``user_id, item_id[, age, gender, occupation, zip3][, release_year, genre]``.

    Raises:
        DataError: missing files/columns, wrong column count, non-numeric rating (file + line).

    Example:
        >>> # raw = read_movielens(Path("ml-100k"))
    """
    layout, inter, users, items, genres = movielens_files(path)
    if progress is not None:
        progress(f"parsing MovieLens ({layout}) {inter.name}")
    kw = dict(skip_bad_rows=skip_bad_rows, progress=progress)
    t, labels, skipped = _read_interactions(layout, inter, kw)
    uid, iid = t.column("user_id").combine_chunks(), t.column("item_id").combine_chunks()
    fields = {"user_id": uid, "item_id": iid}
    if users is not None:
        user_fields, s = _user_fields(layout, users, uid, kw)
        fields.update(user_fields)
        skipped += s
    if items is not None:
        item_fields, s = _item_fields(layout, items, genres, iid, kw)
        fields.update(item_fields)
        skipped += s
    columns = [raw_column(v) for v in fields.values()]
    return RawTable(labels, np.zeros((len(labels), 0)), [], list(fields), columns, skipped)


def _read_interactions(layout: str, inter: Path, kw: dict):
    """The interactions table, the click labels (``rating >= 4``, or a 0/1 ``label``) and the skipped rows."""
    if layout == "recbole":
        names = _recbole_header(inter)
        for need in ("user_id", "item_id"):
            if need not in names:
                raise DataError(f"{inter}: header lacks '{need}' (got {names}); use RecBole atomic names")
        lab = "label" if "label" in names else "rating"
        if lab not in names:
            raise DataError(f"{inter}: header needs a 'rating' or 'label' column (got {names})")
        spec = ColSpec("int", in_set([0, 1]), "label must be 0 or 1") if lab == "label" else \
            ColSpec("float", lambda a: np.isfinite(to_numpy(a)), "rating must be a number")
        t, skipped = read_delimited(inter, delimiter="\t", names=names, header_lines=1,
                                    specs={"user_id": ColSpec("str"), "item_id": ColSpec("str"), lab: spec}, **kw)
        y = to_numpy(t.column(lab)).astype(np.float64)
    else:
        names = ["user_id", "item_id", "rating", "timestamp"]
        t, skipped = read_delimited(inter, delimiter="\t", names=names, header_lines=0, specs={
            "user_id": ColSpec("str"), "item_id": ColSpec("str"),
            "rating": ColSpec("float", lambda a: np.isfinite(to_numpy(a)), "rating must be a number")}, **kw)
        lab, y = "rating", to_numpy(t.column("rating")).astype(np.float64)
    labels = (y >= 4).astype(np.float32) if lab == "rating" else y.astype(np.float32)
    return t, labels, skipped


def _user_fields(layout: str, users: Path, uid, kw: dict) -> tuple[dict, int]:
    """``age``, ``gender``, ``occupation``, ``zip3`` of each interaction's user (those the file has)."""
    import pyarrow.compute as pc

    if layout == "recbole":
        un = _recbole_header(users)
        ut, skipped = read_delimited(users, delimiter="\t", names=un, header_lines=1,
                                     specs={c: ColSpec("str") for c in un}, **kw)
    else:
        un = ["user_id", "age", "gender", "occupation", "zip_code"]
        ut, skipped = read_delimited(users, delimiter="|", names=un, header_lines=0,
                                     specs={c: ColSpec("str") for c in un}, **kw)
    if "user_id" not in ut.column_names:
        raise DataError(f"{users}: no user_id column; cannot join user features")
    vals = _lookup(uid, ut, "user_id", [c for c in ("age", "gender", "occupation", "zip_code") if c in un])
    fields = {c: vals[c] for c in ("age", "gender", "occupation") if c in vals}
    if "zip_code" in vals:
        fields["zip3"] = pc.utf8_slice_codeunits(vals["zip_code"], 0, 3)
    return fields, skipped


def _item_fields(layout: str, items: Path, genres: Path | None, iid, kw: dict) -> tuple[dict, int]:
    """``release_year`` and ``genre`` of each interaction's item (those the files have)."""
    import pyarrow as pa

    if layout == "recbole":
        it, year, genre, skipped = _recbole_items(items, kw)
    else:
        it, year, genre, skipped = _grouplens_items(items, genres, kw)
    null = pa.nulls(it.num_rows, pa.string())
    it = pa.table({"item_id": it.column("item_id"), "_year": year if year is not None else null,
                   "_genre": genre if genre is not None else null})
    vals = _lookup(iid, it, "item_id", ["_year", "_genre"])
    fields = {}
    if year is not None:
        fields["release_year"] = vals["_year"]
    if genre is not None:
        fields["genre"] = vals["_genre"]
    return fields, skipped


def _recbole_items(items: Path, kw: dict):
    """RecBole ``.item``: ``(table, release_year or None, first genre of class or None, skipped)``."""
    import pyarrow.compute as pc

    inames = _recbole_header(items)
    it, skipped = read_delimited(items, delimiter="\t", names=inames, header_lines=1,
                                 specs={c: ColSpec("str") for c in inames if c in ("item_id", "release_year",
                                                                                   "class")}, **kw)
    if "item_id" not in it.column_names:
        raise DataError(f"{items}: no item_id column; cannot join item features")
    year = it.column("release_year") if "release_year" in it.column_names else None
    genre = None
    if "class" in it.column_names:
        genre = pc.list_element(pc.split_pattern(pc.fill_null(it.column("class"), ""), " "), 0)
    return it, year, genre, skipped


def _grouplens_items(items: Path, genres: Path | None, kw: dict):
    """GroupLens ``u.item`` (+ ``u.genre``): ``(table, release year, first set genre flag, skipped)``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    inames = ["item_id", "title", "release_date", "video_date", "url"] + [f"g{j}" for j in range(19)]
    specs = {"item_id": ColSpec("str"), "release_date": ColSpec("str")}
    specs.update({f"g{j}": ColSpec("int") for j in range(19)})
    it, skipped = read_delimited(items, delimiter="|", names=inames, header_lines=0, specs=specs,
                                 encoding="latin-1", **kw)
    year = pc.utf8_slice_codeunits(it.column("release_date"), -4, 2 ** 31 - 1)
    flags = np.stack([np.nan_to_num(to_numpy(it.column(f"g{j}")).astype(float)) for j in range(19)], 1)
    gnames = list(GENRES)
    if genres is not None:
        gt, _ = read_delimited(genres, delimiter="|", names=["name", "idx"], header_lines=0,
                               specs={"name": ColSpec("str"), "idx": ColSpec("int")}, **kw)
        order = np.argsort(to_numpy(gt.column("idx")))
        gnames = [gt.column("name")[int(i)].as_py() for i in order][:19] + gnames[len(order):]
    first = np.argmax(flags > 0, axis=1)
    genre = pa.array(np.where(flags.max(axis=1) > 0, np.array(gnames, object)[first], None), pa.string())
    return it, year, genre, skipped
