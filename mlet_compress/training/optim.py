"""Optimizer construction with per-group learning rates, and embedding-parameter accounting.

Parameters are split into three groups:

* ``embedding_sparse``: lookup tables that produce sparse gradients (``nn.Embedding.weight`` or
  ``MLETEmbedding.table`` with ``sparse=True``);
* ``embedding_dense``: the other embedding parameters (MLET projections, whose gradient is always
  dense, and tables created with ``sparse=False``);
* ``dense``: everything else (MLPs, interaction layers, biases).

Both embedding groups use ``lr * emb_lr_mult``; ``dense`` uses ``lr``. SGD (without momentum) and
Adagrad accept sparse gradients, so one optimizer holds all three groups.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..errors import ConfigError

#: Parameter names of lookup tables inside an embedding-like module.
_TABLE_PARAM_NAMES = ("weight", "table")


def is_embedding_module(module: nn.Module) -> bool:
    """True for lookup modules: ``nn.Embedding``/``nn.EmbeddingBag`` and any ``*Embedding``/``*EmbeddingBag``
    class (MLET, hashed, low-rank, quantized twins). Containers such as a model's ``FeatureEmbedding``
    also match by name; :func:`embedding_modules` keeps only those that own tensors directly.

    Example:
        >>> is_embedding_module(nn.Embedding(3, 2)), is_embedding_module(nn.Linear(2, 2))
        (True, False)
    """
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return True
    name = type(module).__name__
    return name.endswith("Embedding") or name.endswith("EmbeddingBag")


def embedding_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every lookup module: an embedding-like module that owns parameters or buffers
    itself (not only through children); descendants of a match are skipped."""
    found: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()
    for name, mod in model.named_modules():
        if id(mod) in seen:
            continue
        if any(name.startswith(prefix + ".") for prefix, _ in found):
            continue
        owns_state = any(True for _ in mod.parameters(recurse=False)) or any(True for _ in mod.buffers(recurse=False))
        if is_embedding_module(mod) and owns_state:
            found.append((name, mod))
            seen.add(id(mod))
    return found


def param_groups(model: nn.Module, lr: float, emb_lr_mult: float = 1.0) -> list[dict]:
    """Split ``model``'s trainable parameters into the three groups described in the module docstring.

    Args:
        model: the (possibly MLET-wrapped, possibly DDP-unwrapped) model.
        lr: base learning rate.
        emb_lr_mult: multiplier applied to both embedding groups.

    Returns:
        A list of torch param-group dicts (empty groups omitted), each with a ``"name"`` key.

    Example:
        >>> groups = param_groups(nn.Sequential(nn.Embedding(5, 2, sparse=True), nn.Linear(2, 1)), 0.1, 4.0)
        >>> [(g["name"], g["lr"]) for g in groups]
        [('embedding_sparse', 0.4), ('dense', 0.1)]
    """
    sparse_ids: set[int] = set()
    emb_ids: set[int] = set()
    for _, mod in embedding_modules(model):
        for pname, p in mod.named_parameters(recurse=True):
            emb_ids.add(id(p))
            if pname in _TABLE_PARAM_NAMES and bool(getattr(mod, "sparse", False)):
                sparse_ids.add(id(p))
    groups: dict[str, list[torch.nn.Parameter]] = {"embedding_sparse": [], "embedding_dense": [], "dense": []}
    seen: set[int] = set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if id(p) in sparse_ids:
            groups["embedding_sparse"].append(p)
        elif id(p) in emb_ids:
            groups["embedding_dense"].append(p)
        else:
            groups["dense"].append(p)
    out = []
    for name, params in groups.items():
        if params:
            out.append({"params": params, "lr": lr * (emb_lr_mult if name != "dense" else 1.0), "name": name})
    return out


def build_optimizer(model: nn.Module, name: str, lr: float, emb_lr_mult: float = 1.0) -> torch.optim.Optimizer:
    """The training optimizer over :func:`param_groups` (``sgd``: plain SGD; ``adagrad``: torch Adagrad).

    Raises:
        ConfigError: unknown optimizer name.

    Example:
        >>> opt = build_optimizer(nn.Linear(2, 1), "adagrad", 0.02)
        >>> type(opt).__name__
        'Adagrad'
    """
    groups = param_groups(model, lr, emb_lr_mult)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr)
    raise ConfigError(f"optimizer {name!r} is not supported; use 'sgd' or 'adagrad'")


def optimizer_supports_sparse(name: str) -> bool:
    """Whether the named optimizer (as built by :func:`build_optimizer`) accepts sparse gradients."""
    return name in ("sgd", "adagrad")


def _numel(tensors: Iterable[torch.Tensor]) -> int:
    return int(sum(t.numel() for t in tensors))


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts: ``embedding`` (all lookup modules, incl. 1-dim linear tables), ``total``.

    Quantized tables that store their rows as buffers are counted by stored elements.

    Example:
        >>> count_parameters(nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 1)))
        {'embedding': 40, 'total': 45}
    """
    emb = 0
    emb_ids: set[int] = set()
    for _, mod in embedding_modules(model):
        params = [p for p in mod.parameters() if id(p) not in emb_ids]
        emb_ids.update(id(p) for p in params)
        emb += _numel(params)
        if not params:
            emb += _numel(mod.buffers())
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return {"embedding": emb, "total": int(total)}


__all__ = [
    "is_embedding_module",
    "embedding_modules",
    "param_groups",
    "build_optimizer",
    "optimizer_supports_sparse",
    "count_parameters",
]
