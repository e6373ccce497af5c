"""mlet-compress: multi-layer embedding training (MLET) and embedding-table compression.

Train each embedding table as an n×k table times a k→d projection (:func:`wrap`), then
:func:`collapse` it to one n×d table so inference runs the original architecture; compose with low-rank,
quantization and hashing stages; store everything as safetensors checkpoints with a versioned schema.

Checkpoints: :func:`convert_checkpoint` (plain state dicts ⇄ this format), :func:`compress_checkpoint`,
:func:`inspect_checkpoint`, :func:`benchmark_checkpoint` (sizes, error, latency) and
:func:`evaluate_checkpoint` (test metrics of a trained run's checkpoint on its own test split).

Example:
    >>> import torch
    >>> from torch import nn
    >>> import mlet_compress as mc
    >>> model = nn.Sequential(nn.Embedding(1000, 16))
    >>> mc.wrap(model, mc.MLETConfig(inner_dim=64))      # train as 1000×64 @ 64→16
    Sequential(...)
"""

from ._version import __version__

from .checkpoint import Checkpoint, describe_model, load_checkpoint, save_checkpoint
from .config import CollapseConfig, HashConfig, LowRankConfig, MLETConfig, QuantConfig
from .errors import CheckpointError, ConfigError, DataError, MLETError, NumericalError, TargetingError
from .inspection import inspect_checkpoint
from .integrations import to_torchrec_quant
from .layers.hashed import HashedEmbedding, HashedEmbeddingBag
from .layers.lowrank import LowRankEmbedding, LowRankEmbeddingBag
from .layers.mlet import MLETEmbedding, MLETEmbeddingBag
from .layers.quantized import QuantizedEmbedding, QuantizedEmbeddingBag
from .lookup import load_lookup_modules, load_model_state, reconstruct
from .schema import CheckpointHeader, StageRecord, TableEntry
from .stages import CompressReport, collapse, collapse_checkpoint, compress_, compress_checkpoint, wrap
from .benchmark import benchmark_checkpoint
from .converters import ConvertReport, convert_checkpoint
from .inspection import inspect_state_dict
from .training.evaluate import evaluate_checkpoint  # after the names above: training builds on them

__all__ = [
    "__version__",
    "MLETConfig", "CollapseConfig", "LowRankConfig", "QuantConfig", "HashConfig",
    "wrap", "collapse", "compress_", "compress_checkpoint", "collapse_checkpoint", "CompressReport",
    "save_checkpoint", "load_checkpoint", "Checkpoint", "describe_model", "inspect_checkpoint", "inspect_state_dict",
    "convert_checkpoint", "ConvertReport", "evaluate_checkpoint", "benchmark_checkpoint",
    "TableEntry", "CheckpointHeader", "StageRecord",
    "reconstruct", "load_lookup_modules", "load_model_state", "to_torchrec_quant",
    "MLETEmbedding", "MLETEmbeddingBag", "HashedEmbedding", "HashedEmbeddingBag",
    "LowRankEmbedding", "LowRankEmbeddingBag", "QuantizedEmbedding", "QuantizedEmbeddingBag",
    "MLETError", "ConfigError", "TargetingError", "CheckpointError", "NumericalError", "DataError",
    "export_onnx", "export_program", "ExportResult",
]

#: Names served lazily from :mod:`mlet_compress.export` (importing mlet_compress never imports onnx).
_LAZY = {"export_onnx", "export_program", "ExportResult"}


def __getattr__(name: str):
    if name in _LAZY:
        from . import export

        return getattr(export, name)
    raise AttributeError(f"module 'mlet_compress' has no attribute {name!r}")
