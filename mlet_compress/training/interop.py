"""Interop with DeepCTR-Torch models (the library the paper's six non-DLRM models come from).

DeepCTR-Torch builds its L2 list (``model.regularization_weight``) from the embedding parameters at
construction time and its optimizer in ``compile()``. So: wrap *before* ``compile()``, and re-point the
regularisation list at the new parameters, which :func:`wrap_deepctr` does (a replaced table's weight
becomes the MLET ``table`` and ``proj``, i.e. L2 on both factors).

Example:
    >>> from deepctr_torch.models import DeepFM                     # doctest: +SKIP
    >>> model = wrap_deepctr(DeepFM(cols, cols, task="binary"), MLETConfig(inner_dim=64, init_std=0.5))  # doctest: +SKIP
    >>> model.compile("adagrad", "binary_crossentropy")              # doctest: +SKIP
"""

from __future__ import annotations

from typing import Optional

from torch import nn

from .. import MLETConfig, wrap


def wrap_deepctr(model: nn.Module, config: Optional[MLETConfig] = None) -> nn.Module:
    """``wrap`` a DeepCTR-Torch model in place and update its ``regularization_weight`` list.

    Args:
        model: a DeepCTR-Torch ``BaseModel`` (any module with an optional ``regularization_weight``
            list of ``(weights, l1, l2)`` entries; weights are parameters or ``(name, parameter)`` pairs).
        config: an ``MLETConfig`` (default ``MLETConfig()``).

    Returns:
        The same model; call its ``compile()`` afterwards so the optimizer sees the new parameters.

    Raises:
        TargetingError: from ``wrap`` (nothing matched, already wrapped, unsupported module).
    """
    before = {name: mod for name, mod in model.named_modules() if isinstance(mod, (nn.Embedding, nn.EmbeddingBag))}
    owner = {id(mod.weight): name for name, mod in before.items()}
    wrap(model, config)
    modules = dict(model.named_modules())
    entries = []
    for weights, l1, l2 in getattr(model, "regularization_weight", []) or []:
        new_list = []
        for w in weights:
            named = isinstance(w, tuple)
            param = w[1] if named else w
            name = owner.get(id(param))
            mod = modules.get(name) if name is not None else None
            if mod is not None and mod is not before[name]:  # this table was replaced by MLET factors
                new_list.extend((f"{name}.{pn}", p) if named else p for pn, p in mod.named_parameters())
            else:
                new_list.append(w)
        entries.append((new_list, l1, l2))
    if hasattr(model, "regularization_weight"):
        model.regularization_weight = entries
    return model


__all__ = ["wrap_deepctr"]
