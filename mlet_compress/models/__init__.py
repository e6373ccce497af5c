"""The seven CTR models of the MLET paper (§4): DLRM and six DeepCTR-Torch models.

Every model takes ``(vocab_sizes, num_dense, embed_dim=16, *, field_names=None, ...)``, maps
``forward(dense [B, num_dense] float, sparse [B, F] long) -> logits [B]`` (raw logits, for
``BCEWithLogitsLoss``), exposes ``config`` (JSON-serialisable constructor kwargs) and ``reg_loss``
(the L2 term of the last training forward; see :mod:`mlet_compress.models.base`). Embedding tables
live in ``model.embedding.tables[<field>]`` (plain ``nn.Embedding``, swappable for MLET modules);
first-order tables in ``model.linear.tables[<field>]`` (1-dim, left alone by MLET).

Example:
    >>> import json, torch
    >>> m = build_model("deepfm", vocab_sizes=[10, 20], num_dense=2, embed_dim=4)
    >>> m2 = build_model(m.name, **json.loads(json.dumps(m.config)))
    >>> _ = m2.load_state_dict(m.state_dict(), strict=True)
    >>> default_optimizer("dlrm")
    {'optimizer': 'sgd', 'lr': 0.2, 'init_std': 0.25}
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from torch import nn

from mlet_compress.errors import ConfigError
from mlet_compress.models.autoint import AutoInt
from mlet_compress.models.base import CTRModel, DeepCTRModel
from mlet_compress.models.dcn import DCN
from mlet_compress.models.deepfm import DeepFM
from mlet_compress.models.dlrm import DLRM
from mlet_compress.models.embedding import FeatureEmbedding, LinearFeatures, sanitize_field_names
from mlet_compress.models.nfm import NFM
from mlet_compress.models.wdl import WDL
from mlet_compress.models.xdeepfm import XDeepFM

MODELS: dict[str, type] = {
    cls.name: cls for cls in (DLRM, WDL, DeepFM, XDeepFM, DCN, AutoInt, NFM)
}


#: Models of optional integrations, imported only when built (``eval`` of a ``--engine torchrec`` run), so
#: ``import mlet_compress`` never imports their library: name -> (module, class).
LAZY_MODELS: dict[str, tuple[str, str]] = {"torchrec_dlrm": ("mlet_compress.integrations.torchrec_dlrm", "TorchRecDLRM")}


def _lookup(name: str) -> type:
    key = str(name).strip().lower()
    if key in LAZY_MODELS:
        module, attr = LAZY_MODELS[key]
        return getattr(importlib.import_module(module), attr)
    if key not in MODELS:
        raise ConfigError(f"model {name!r} is unknown; use one of {sorted(MODELS)}")
    return MODELS[key]


def build_model(name: str, **config: Any) -> nn.Module:
    """Build a model by name; ``build_model(m.name, **m.config)`` rebuilds ``m``'s architecture.

    Args:
        name: one of ``MODELS`` (case-insensitive).
        **config: constructor kwargs (``vocab_sizes``, ``num_dense``, ``embed_dim``, ...).

    Returns:
        The freshly initialised model.

    Raises:
        ConfigError: unknown name, unknown / missing kwargs, or invalid values.

    Example:
        >>> build_model("dcn", vocab_sizes=[4, 4], num_dense=0).name
        'dcn'
    """
    cls = _lookup(name)
    try:
        inspect.signature(cls).bind(**config)
    except TypeError as exc:
        valid = [p for p in inspect.signature(cls).parameters]
        raise ConfigError(f"model {cls.name!r}: {exc}; valid arguments are {valid}") from None
    return cls(**config)


_DEFAULTS = {
    "dlrm": {"optimizer": "sgd", "lr": 0.2, "init_std": 0.25},
    "other": {"optimizer": "adagrad", "lr": 0.02, "init_std": 0.5},
}


def default_optimizer(name: str) -> dict[str, Any]:
    """The paper's training defaults (§4) for a model.

    ``init_std`` here is the std of MLET's Gaussian-initialised second factor (the projection),
    not the models' own ``init_std`` kwarg (DeepCTR's N(0, 1e-4) embedding / DNN init).

    Args:
        name: one of ``MODELS``.

    Returns:
        A new dict ``{"optimizer": "sgd" | "adagrad", "lr": float, "init_std": float}``:
        DLRM: SGD, lr 0.2, MLET init std 0.25; others: Adagrad, lr 0.02, MLET init std 0.5.

    Raises:
        ConfigError: unknown name.

    Example:
        >>> default_optimizer("nfm")["optimizer"]
        'adagrad'
    """
    cls = _lookup(name)
    return dict(_DEFAULTS["dlrm" if cls.name == "dlrm" else "other"])


__all__ = [
    "MODELS",
    "build_model",
    "default_optimizer",
    "CTRModel",
    "DeepCTRModel",
    "FeatureEmbedding",
    "LinearFeatures",
    "sanitize_field_names",
    "DLRM",
    "WDL",
    "DeepFM",
    "XDeepFM",
    "DCN",
    "AutoInt",
    "NFM",
]
