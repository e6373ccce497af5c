"""Find embedding modules by name and swap them in place (the model walker behind every stage).

Matching follows peft's conventions: a string is a regex that must fully match the module name; a list
holds exact names or dotted suffixes. A module registered under several names (aliases) is found once;
it matches when any of its names matches, and swapping replaces it under every name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Union

from torch import nn

from .errors import ConfigError, TargetingError

Targets = Optional[Union[str, Iterable[str]]]


@dataclass
class Found:
    """One embedding module found in a model, with every name it is registered under."""

    names: list[str]
    module: nn.Module

    @property
    def name(self) -> str:
        """The canonical (first-registered) name."""
        return self.names[0]


def name_matches(name: str, targets: Targets) -> bool:
    """True when ``name`` matches ``targets`` (regex full-match for a string, names/suffixes for a list)."""
    if targets is None:
        return True
    if isinstance(targets, str):
        try:
            return re.fullmatch(targets, name) is not None
        except re.error as exc:
            raise ConfigError(f"table regex {targets!r} is not a valid regular expression: {exc}") from None
    return any(name == t or name.endswith("." + t) for t in targets)


def lookup_by_name(mapping: Optional[dict], name: str):
    """Value of ``mapping`` for ``name`` by exact name first, then the longest matching dotted suffix."""
    if not mapping:
        return None
    if name in mapping:
        return mapping[name]
    best = None
    for key in mapping:
        if name.endswith("." + key) and (best is None or len(key) > len(best)):
            best = key
    return mapping[best] if best is not None else None


def find_modules(model: nn.Module, kinds: tuple[type, ...]) -> list[Found]:
    """Every module of one of ``kinds`` in ``model`` (nested, in ModuleDicts), de-duplicated by identity."""
    by_id: dict[int, Found] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        if isinstance(mod, kinds):
            if id(mod) in by_id:
                by_id[id(mod)].names.append(name)
            else:
                by_id[id(mod)] = Found([name], mod)
    return list(by_id.values())


def select(
    found: list[Found],
    target_modules: Targets,
    exclude_modules: Targets,
    extra: Optional[Callable[[Found], bool]] = None,
) -> list[Found]:
    """Filter ``found`` by targets/excludes (any alias may match) and an optional predicate."""
    out = []
    for f in found:
        if not any(name_matches(n, target_modules) for n in f.names):
            continue
        if exclude_modules is not None and any(name_matches(n, exclude_modules) for n in f.names):
            continue
        if extra is not None and not extra(f):
            continue
        out.append(f)
    return out


def describe_available(found: list[Found]) -> str:
    """A short listing of embedding modules for error messages."""
    if not found:
        return "the model has no nn.Embedding/nn.EmbeddingBag modules"
    parts = []
    for f in found[:20]:
        m = f.module
        shape = f"{getattr(m, 'num_embeddings', '?')}x{getattr(m, 'embedding_dim', '?')}"
        parts.append(f"{f.name} ({type(m).__name__} {shape})")
    more = f" and {len(found) - 20} more" if len(found) > 20 else ""
    return "embedding modules present: " + ", ".join(parts) + more


def replace_module(model: nn.Module, names: list[str], new: nn.Module) -> None:
    """Register ``new`` in place of the module under each of ``names``."""
    for name in names:
        if name == "":
            raise TargetingError("cannot replace the root module itself; wrap a model that contains embeddings")
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
