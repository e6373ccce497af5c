"""Which tensors of a plain state dict are embedding tables: by a ``tables`` regex, or detected by name.

A table is a 2-D floating ``<module>.weight`` tensor. Without a regex, a module is detected as a table
when a part of its name looks like an embedding (``embed``, ``emb_l``, ``embeddings``,
``embedding_bags``, ``word_embeddings``, ``wte``, ``wpe``, ...) and it has no ``<module>.bias`` (a
weight with a bias is a ``Linear``). MLET factor pairs (``<name>.table`` + ``<name>.proj``) are always
recognised. Every 2-D floating weight that is not taken is reported with the reason.

Example:
    >>> import torch
    >>> from mlet_compress.converters.sources import TensorMeta
    >>> metas = {k: TensorMeta(k, torch.float32, s) for k, s in [("bert.embeddings.word_embeddings.weight", (30, 8)),
    ...          ("bert.embeddings.proj.weight", (8, 8)), ("bert.embeddings.proj.bias", (8,))]}
    >>> d = detect_tables(metas)
    >>> sorted(d.tables), d.rejected["bert.embeddings.proj.weight"]
    (['bert.embeddings.word_embeddings'], "has a bias 'bert.embeddings.proj.bias' (a Linear layer)")
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Optional

from ..errors import ConfigError
from ..layers._base import EMBEDDING_BAG_MODES
from ..safetensors_io import dtype_name
from ..schema import Factor, TableEntry
from .sources import TensorMeta

#: Name parts (split at ``.``, ``_``, ``-`` and digits, lower-cased) that mark an embedding table:
#: any part starting with ``emb`` (embed, embedding(s), embedding_bags, emb_l, ...) or one of these.
EMBEDDING_WORDS = ("wte", "wpe")


def looks_like_embedding(module: str) -> Optional[str]:
    """The part of ``module``'s name that marks it as an embedding table, or None.

    Example:
        >>> looks_like_embedding("emb_l.0"), looks_like_embedding("transformer.wte"), looks_like_embedding("member")
        ('emb', 'wte', None)
    """
    for part in re.split(r"[._\-\d]+", module.lower()):
        if part.startswith("emb") or part in EMBEDDING_WORDS:
            return part
    return None


@dataclass
class Detection:
    """What :func:`detect_tables` found.

    Attributes:
        tables: module name → :class:`TableEntry` (plain or MLET).
        why: module name → why it was taken (``name part 'embeddings'``, ``matched tables=...``, ``MLET pair``).
        rejected: tensor key → why a 2-D floating weight was not taken as a table.
        bag_mode: the EmbeddingBag mode recorded for the tables (None: recorded as ``nn.Embedding``).
    """

    tables: dict[str, TableEntry] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    bag_mode: Optional[str] = None

    def to_dict(self) -> dict:
        """JSON-able form: ``{"tables": {name: {kind, rows, dim, why}}, "rejected": {...}, "bag_mode"}``."""
        return {"tables": {n: {"kind": e.kind, "rows": e.num_embeddings, "dim": e.embedding_dim, "why": self.why[n]}
                           for n, e in self.tables.items()},
                "rejected": dict(self.rejected), "bag_mode": self.bag_mode}


def _options(bag_mode: Optional[str]) -> tuple[str, dict]:
    if bag_mode is None:
        return "embedding", {"padding_idx": None}
    if bag_mode not in EMBEDDING_BAG_MODES:
        raise ConfigError(f"{{option}} must be one of {EMBEDDING_BAG_MODES}, got {bag_mode!r}", option="bag_mode",
                          value=bag_mode)
    return "embedding_bag", {"padding_idx": None, "mode": bag_mode, "include_last_offset": False}


def _mlet_pairs(metas: Mapping[str, TensorMeta], module: str, options: dict) -> dict[str, TableEntry]:
    out = {}
    for key, t in metas.items():
        if not key.endswith(".table") or len(t.shape) != 2:
            continue
        name = key[: -len(".table")]
        proj = metas.get(name + ".proj")
        if proj is not None and len(proj.shape) == 2 and proj.shape[1] == t.shape[1]:
            out[name] = TableEntry.mlet(name, Factor(key, t.shape, dtype_name(t.dtype)),
                                        Factor(proj.key, proj.shape, dtype_name(proj.dtype)), module=module,
                                        options=options)
    return out


def _reason(name: str, metas: Mapping[str, TensorMeta], pattern: Optional[re.Pattern]) -> tuple[bool, str]:
    """(taken, why) for the 2-D floating weight of module ``name``."""
    if pattern is not None:
        ok = bool(pattern.fullmatch(name))
        return ok, (f"matched tables={pattern.pattern!r}" if ok else f"does not match tables={pattern.pattern!r}")
    part = looks_like_embedding(name)
    if part is None:
        return False, "no part of its name looks like an embedding (emb*, wte, wpe)"
    if name + ".bias" in metas:
        return False, f"has a bias {name + '.bias'!r} (a Linear layer)"
    return True, f"name part {part!r}"


def detect_tables(metas: Mapping[str, TensorMeta], tables: Optional[str] = None, *,
                  bag_mode: Optional[str] = None) -> Detection:
    """Pick the embedding tables of a plain state dict (see the module docstring for the rules).

    Args:
        metas: tensor key → :class:`TensorMeta` (the shapes and dtypes; no data is needed).
        tables: regex, full match on the module name (the key without ``.weight``); None detects by name.
        bag_mode: ``"sum"`` / ``"mean"``: record the tables as ``nn.EmbeddingBag`` with this mode
            (None: ``nn.Embedding``).

    Returns:
        A :class:`Detection`.

    Raises:
        ConfigError: an invalid regex or ``bag_mode``; a ``tables`` regex that matched nothing.
    """
    module, options = _options(bag_mode)
    pattern = None
    if tables is not None:
        try:
            pattern = re.compile(tables)
        except re.error as exc:
            raise ConfigError(f"{{option}} is not a valid regex: {exc}", option="tables", value=tables) from None
    det = Detection(bag_mode=bag_mode)
    for name, entry in _mlet_pairs(metas, module, options).items():
        det.tables[name], det.why[name] = entry, "MLET factor pair (.table + .proj)"
    for key, t in metas.items():
        if not key.endswith(".weight") or len(t.shape) != 2 or not t.dtype.is_floating_point:
            continue
        name = key[: -len(".weight")]
        if name in det.tables:
            continue
        taken, why = _reason(name, metas, pattern)
        if taken:
            det.tables[name] = TableEntry.plain(name, key, t.shape, dtype_name(t.dtype), module=module, options=options)
            det.why[name] = why
        else:
            det.rejected[key] = why
    if pattern is not None and not det.tables:
        raise ConfigError(f"{{option}} matched no 2-D floating '<module>.weight' tensor ({len(det.rejected)} "
                          f"candidates, e.g. {sorted(det.rejected)[:3]})", option="tables", value=tables)
    return det


__all__ = ["EMBEDDING_WORDS", "Detection", "detect_tables", "looks_like_embedding"]
