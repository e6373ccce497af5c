"""Find, replace, wrap and collapse the TorchRec ``EmbeddingBagCollection`` modules of a whole model.

Also :func:`describe_tables`: per table, what a checkpoint writer needs (names, pooling, sizes, state-dict keys).
"""

from __future__ import annotations

from typing import Mapping, Optional

from torch import nn

from ..errors import TargetingError
from .torchrec_ebc import (POOLINGS, EmbeddingBagCollection, EmbeddingBagConfig, InnerDims,  # noqa: F401 (doctests)
                           MLETEmbeddingBagCollection, Select, collapse_ebc, wrap_ebc)

EBC_KINDS = (EmbeddingBagCollection, MLETEmbeddingBagCollection)


def find_ebcs(model: nn.Module) -> dict[str, nn.Module]:
    """Plain and MLET ``EmbeddingBagCollection`` modules anywhere in ``model``, by (first) module name.

    The root itself is listed under ``""``; the inner EBC of an MLET-EBC is not listed separately.

    Example:
        >>> ebc = EmbeddingBagCollection([EmbeddingBagConfig(name="t0", embedding_dim=4, num_embeddings=10)])
        >>> list(find_ebcs(nn.ModuleDict({"sparse": ebc})))
        ['sparse']
    """
    found: dict[str, nn.Module] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, EBC_KINDS) and not any(name.startswith(f"{n}.") for n in found if n) and "" not in found:
            found[name] = mod
    return found


def replace_ebc(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` in place of the module named ``name`` (and of every alias of it); returns the old module.

    Raises:
        TargetingError: ``name`` is empty (the root cannot be replaced in place) or not a submodule.
    """
    if not name:
        raise TargetingError("replace_ebc: the model itself is the EBC; use the returned module instead")
    try:
        old = model.get_submodule(name)
    except AttributeError as e:
        raise TargetingError(f"replace_ebc: no submodule {name!r} in the model") from e
    for parent in model.modules():
        for key, child in list(parent._modules.items()):
            if child is old:
                setattr(parent, key, new)
    return old


def wrap_ebcs_(model: nn.Module, inner_dim: int = 64, inner_dims: InnerDims = None, select: Select = None,
               init_std: float = 0.25, seed: Optional[int] = None,
               preserve_function: bool = False) -> dict[str, MLETEmbeddingBagCollection]:
    """In place: replace every plain EBC of ``model`` with :func:`wrap_ebc` of it; returns the new modules by name.

    ``select(table)`` and ``inner_dims`` (dict or callable, by table name) are applied per table; an EBC
    none of whose tables is selected is left alone.

    Raises:
        TargetingError: no plain EBC with a selected table (the message lists what was found).

    Example:
        >>> model = nn.ModuleDict({"ebc": EmbeddingBagCollection([EmbeddingBagConfig(name="t0", embedding_dim=4, num_embeddings=10)])})
        >>> list(wrap_ebcs_(model, inner_dim=16))
        ['ebc']
    """
    found = find_ebcs(model)
    done: dict[str, MLETEmbeddingBagCollection] = {}
    for i, (name, ebc) in enumerate(found.items()):
        tables = [c.name for c in ebc.embedding_bag_configs()]
        if isinstance(ebc, MLETEmbeddingBagCollection) or not any(select is None or select(t) for t in tables):
            continue
        new = wrap_ebc(ebc, inner_dim, inner_dims, init_std, None if seed is None else seed + i, preserve_function, select)
        if name:
            replace_ebc(model, name, new)
        done[name] = new
    if not done:
        raise TargetingError(f"wrap_ebcs_: nothing to wrap; EBCs found: {_summary(found) or 'none'}")
    return done


def collapse_ebcs_(model: nn.Module, check: bool = True) -> dict[str, EmbeddingBagCollection]:
    """In place: replace every MLET-EBC of ``model`` with :func:`collapse_ebc` of it; returns the new EBCs by name."""
    done = {}
    for name, mod in find_ebcs(model).items():
        if isinstance(mod, MLETEmbeddingBagCollection):
            done[name] = collapse_ebc(mod, check)
            if name:
                replace_ebc(model, name, done[name])
    return done


def _summary(found: Mapping[str, nn.Module]) -> str:
    return "; ".join(f"{n or '<root>'} ({type(m).__name__}: {[c.name for c in m.embedding_bag_configs()]})"
                     for n, m in found.items())


def describe_tables(model: nn.Module) -> dict[str, dict]:
    """Per table, what a checkpoint writer needs, for every (MLET-)EBC in ``model`` (or ``model`` itself).

    Returns:
        ``{table: {"module", "feature_names", "pooling" ("sum"/"mean"), "num_embeddings", "embedding_dim",
        "inner_dim" (k or None), "dtype", "is_weighted", "weight_key", "table_key", "proj_key",
        "collapsed_key"}}``. Keys are full state-dict keys of ``model``: ``weight_key`` holds the stored
        n×d table (None for an MLET table), ``table_key``/``proj_key`` the n×k and d×k factors (None for
        single-layer tables), ``collapsed_key`` the n×d key after :func:`collapse_ebc` (= original model).

    Raises:
        TargetingError: no EBC, or two EBCs with the same table name.

    Example:
        >>> m = MLETEmbeddingBagCollection([EmbeddingBagConfig(name="t0", embedding_dim=4, num_embeddings=10)], 8)
        >>> e = describe_tables(m)["t0"]; e["table_key"], e["proj_key"], e["collapsed_key"]
        ('inner.embedding_bags.t0.weight', 'projs.t0', 'embedding_bags.t0.weight')
    """
    found = find_ebcs(model)
    if not found:
        raise TargetingError("describe_tables: no torchrec EmbeddingBagCollection in the model")
    out: dict[str, dict] = {}
    for name, mod in found.items():
        p = f"{name}." if name else ""
        mlet = isinstance(mod, MLETEmbeddingBagCollection)
        for c in mod.embedding_bag_configs():
            if c.name in out:
                raise TargetingError(f"describe_tables: table name {c.name!r} appears in {out[c.name]['module']!r} "
                                     f"and {name!r}; describe each EBC separately")
            k = mod.inner_dims[c.name] if mlet else None
            stored = f"{p}inner.embedding_bags.{c.name}.weight" if mlet else f"{p}embedding_bags.{c.name}.weight"
            out[c.name] = {
                "module": name, "feature_names": list(c.feature_names), "pooling": POOLINGS[c.pooling],
                "num_embeddings": c.num_embeddings, "embedding_dim": c.embedding_dim, "inner_dim": k,
                "dtype": "float32" if c.data_type.name == "FP32" else "float16", "is_weighted": mod.is_weighted(),
                "weight_key": None if k else stored, "table_key": stored if k else None,
                "proj_key": f"{p}projs.{c.name}" if k else None, "collapsed_key": f"{p}embedding_bags.{c.name}.weight",
            }
    return out


__all__ = ["find_ebcs", "replace_ebc", "wrap_ebcs_", "collapse_ebcs_", "describe_tables"]
