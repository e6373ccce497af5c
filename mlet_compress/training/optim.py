"""Optimizer construction with per-group learning rates, and embedding-parameter accounting.

Parameters are split into three groups:

* ``embedding_sparse``: lookup tables that produce sparse gradients (``nn.Embedding.weight`` or
  ``MLETEmbedding.table`` with ``sparse=True``);
* ``embedding_dense``: the other embedding parameters (MLET projections, whose gradient is always
  dense, and tables created with ``sparse=False``);
* ``dense``: everything else (MLPs, interaction layers, biases).

Both embedding groups use ``lr * emb_lr_mult``; ``dense`` uses ``lr``. SGD (without momentum),
Adagrad and :class:`RowWiseAdagrad` accept sparse gradients, so one optimizer holds all three groups.

``rowwise_adagrad`` (:class:`RowWiseAdagrad`, FBGEMM / TorchRec's ``EXACT_ROWWISE_ADAGRAD``) keeps one
accumulator per row of every 2-D lookup table (n floats instead of Adagrad's n×k) and the per-element
Adagrad state for everything else (MLET projections, MLPs). :func:`memory_bytes` accounts for both.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

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


def _embedding_param_ids(model: nn.Module) -> tuple[set[int], set[int], set[int]]:
    """``(embedding, table, sparse table)`` parameter ids: every parameter of a lookup module, its lookup
    tables (``weight`` / ``table``), and the tables that produce sparse gradients."""
    emb_ids: set[int] = set()
    table_ids: set[int] = set()
    sparse_ids: set[int] = set()
    for _, mod in embedding_modules(model):
        for pname, p in mod.named_parameters(recurse=True):
            emb_ids.add(id(p))
            if pname in _TABLE_PARAM_NAMES:
                table_ids.add(id(p))
                if bool(getattr(mod, "sparse", False)):
                    sparse_ids.add(id(p))
    return emb_ids, table_ids, sparse_ids


def param_groups(model: nn.Module, lr: float, emb_lr_mult: float = 1.0, *, split_tables: bool = False) -> list[dict]:
    """Split ``model``'s trainable parameters into the three groups described in the module docstring.

    Args:
        model: the (possibly MLET-wrapped, possibly DDP-unwrapped) model.
        lr: base learning rate.
        emb_lr_mult: multiplier applied to both embedding groups.
        split_tables: also split lookup tables with dense gradients out of ``embedding_dense`` into
            ``embedding_table`` (what :class:`RowWiseAdagrad` updates row-wise).

    Returns:
        A list of torch param-group dicts (empty groups omitted), each with a ``"name"`` key.

    Example:
        >>> groups = param_groups(nn.Sequential(nn.Embedding(5, 2, sparse=True), nn.Linear(2, 1)), 0.1, 4.0)
        >>> [(g["name"], g["lr"]) for g in groups]
        [('embedding_sparse', 0.4), ('dense', 0.1)]
    """
    emb_ids, table_ids, sparse_ids = _embedding_param_ids(model)
    names = ("embedding_sparse", "embedding_table", "embedding_dense", "dense")
    groups: dict[str, list[torch.nn.Parameter]] = {name: [] for name in names}
    seen: set[int] = set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if id(p) in sparse_ids:
            groups["embedding_sparse"].append(p)
        elif split_tables and id(p) in table_ids:
            groups["embedding_table"].append(p)
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
    """The training optimizer over :func:`param_groups`.

    ``sgd``: plain SGD; ``adagrad``: torch Adagrad; ``rowwise_adagrad``: :class:`RowWiseAdagrad`, row-wise on
    the lookup tables (sparse or dense gradients), per-element Adagrad on every other parameter.

    Raises:
        ConfigError: unknown optimizer name.

    Example:
        >>> opt = build_optimizer(nn.Linear(2, 1), "adagrad", 0.02)
        >>> type(opt).__name__
        'Adagrad'
    """
    if name == "rowwise_adagrad":
        groups = param_groups(model, lr, emb_lr_mult, split_tables=True)
        for g in groups:
            g["rowwise"] = g["name"] in ("embedding_sparse", "embedding_table")
        return RowWiseAdagrad(groups, lr=lr)
    groups = param_groups(model, lr, emb_lr_mult)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr)
    raise ConfigError(f"optimizer {name!r} is not supported; use 'sgd', 'adagrad' or 'rowwise_adagrad'")


class RowWiseAdagrad(torch.optim.Optimizer):
    """Adagrad with one accumulator per table row: FBGEMM's ``EXACT_ROWWISE_ADAGRAD`` in the torch engine.

    For a 2-D parameter of a group with ``rowwise=True`` (the default), each row i with gradient g_i (its
    gradients in the batch summed: sparse COO gradients are coalesced first, as FBGEMM's "exact" kernels
    aggregate duplicate indices) is updated as::

        G_i += mean_j(g_ij²);    w_i -= lr · g_i / (sqrt(G_i) + eps)

    so the state is n floats instead of Adagrad's n×k. Rows without a gradient are left alone (a dense
    gradient's zero rows change nothing either). Every other parameter (groups with ``rowwise=False``, 1-D
    parameters) gets the per-element Adagrad update ``G += g²; w -= lr · g / (sqrt(G) + eps)`` — torch's
    Adagrad without lr decay or weight decay, sparse gradients included.

    Args:
        params: parameters or param-group dicts (a group may set ``lr``, ``eps``, ``rowwise``).
        lr: learning rate. eps: added to sqrt(G) (torch Adagrad's default 1e-10; FBGEMM's is 1e-8).
        rowwise: default of the groups' ``rowwise``.

    Raises:
        ConfigError: lr or eps negative.

    Example:
        >>> emb = nn.Embedding(4, 3, sparse=True)
        >>> opt = RowWiseAdagrad(emb.parameters(), lr=0.1)
        >>> emb(torch.tensor([1, 1, 2])).sum().backward(); opt.step()
        >>> tuple(opt.state[emb.weight]["sum"].shape)  # one accumulator per row
        (4,)
    """

    def __init__(self, params: Any, lr: float = 0.01, eps: float = 1e-10, rowwise: bool = True) -> None:
        if not lr >= 0 or not eps >= 0:
            raise ConfigError(f"RowWiseAdagrad needs lr >= 0 and eps >= 0, got lr={lr}, eps={eps}")
        super().__init__(params, {"lr": lr, "eps": eps, "rowwise": rowwise})
        for group in self.param_groups:  # allocate now, like torch Adagrad: state size is known before step 1
            for p in group["params"]:
                self.state[p]["sum"] = self._new_sum(p, group)

    @staticmethod
    def _new_sum(p: torch.Tensor, group: dict) -> torch.Tensor:
        rowwise = group["rowwise"] and p.dim() == 2
        return torch.zeros(p.shape[0], dtype=p.dtype, device=p.device) if rowwise else torch.zeros_like(p)

    @torch.no_grad()
    def step(self, closure: Optional[Any] = None) -> Optional[torch.Tensor]:
        """One update of every parameter that has a gradient (see the class docstring)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, eps = group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "sum" not in state:  # a parameter added after construction
                    state["sum"] = self._new_sum(p, group)
                acc = state["sum"]
                if acc.shape != p.shape:
                    _rowwise_update(p, p.grad, acc, lr, eps)
                else:
                    _elementwise_update(p, p.grad, acc, lr, eps)
        return loss


def _rowwise_update(p: torch.Tensor, grad: torch.Tensor, acc: torch.Tensor, lr: float, eps: float) -> None:
    if grad.is_sparse:
        grad = grad.coalesce()
        rows, g = grad.indices()[0], grad.values()
        if rows.numel() == 0:
            return
        acc.index_add_(0, rows, g.pow(2).mean(dim=1))
        p.index_add_(0, rows, g * (-lr / (acc[rows].sqrt() + eps)).unsqueeze(1))
    else:
        acc.add_(grad.pow(2).mean(dim=1))
        p.addcdiv_(grad, (acc.sqrt() + eps).unsqueeze(1), value=-lr)


def _elementwise_update(p: torch.Tensor, grad: torch.Tensor, acc: torch.Tensor, lr: float, eps: float) -> None:
    if grad.is_sparse:
        grad = grad.coalesce()
        idx, g = grad.indices(), grad.values()
        if g.numel() == 0:
            return
        acc.index_put_(tuple(idx), g.pow(2), accumulate=True)
        p.index_put_(tuple(idx), g * (-lr) / (acc[tuple(idx)].sqrt() + eps), accumulate=True)
    else:
        acc.addcmul_(grad, grad)
        p.addcdiv_(grad, acc.sqrt().add_(eps), value=-lr)


def optimizer_supports_sparse(name: str) -> bool:
    """Whether the named optimizer (as built by :func:`build_optimizer`) accepts sparse gradients."""
    return name in ("sgd", "adagrad", "rowwise_adagrad")


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


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def memory_bytes(model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None) -> dict[str, int]:
    """Bytes of the embedding parameters and of the optimizer state kept for them (MLET's real training cost).

    Args:
        model: the model (its lookup modules: tables, MLET projections, quantized codes and scales).
        optimizer: its optimizer; its state for the embedding parameters is counted (after step 1 for
            optimizers that allocate lazily; torch Adagrad and :class:`RowWiseAdagrad` allocate up front).

    Returns:
        ``{"embedding_params": bytes, "embedding_optimizer_state": bytes}`` (0 without an optimizer, and
        for SGD without momentum).

    Example:
        >>> emb = nn.Embedding(100, 8)
        >>> memory_bytes(emb, torch.optim.Adagrad(emb.parameters()))["embedding_optimizer_state"]  # n·d floats + step
        3204
        >>> memory_bytes(emb, RowWiseAdagrad(emb.parameters()))["embedding_optimizer_state"]       # n floats
        400
    """
    params: dict[int, torch.Tensor] = {}
    stored = 0
    for _, mod in embedding_modules(model):
        own = [p for p in mod.parameters() if id(p) not in params]
        params.update((id(p), p) for p in own)
        if not any(True for _ in mod.parameters()):  # quantized tables: codes and scales are buffers
            stored += sum(_nbytes(b) for b in mod.buffers())
    state = 0
    if optimizer is not None:
        for p in params.values():
            state += sum(_nbytes(v) for v in optimizer.state.get(p, {}).values() if isinstance(v, torch.Tensor))
    return {"embedding_params": stored + sum(_nbytes(p) for p in params.values()), "embedding_optimizer_state": state}


__all__ = [
    "is_embedding_module",
    "embedding_modules",
    "param_groups",
    "build_optimizer",
    "optimizer_supports_sparse",
    "count_parameters",
    "RowWiseAdagrad",
    "memory_bytes",
]
