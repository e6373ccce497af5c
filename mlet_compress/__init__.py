"""mlet-compress: multi-layer embedding training (MLET) and embedding-table compression.

Train each embedding table as an n×k table times a k→d projection (:func:`wrap`), then
:func:`collapse` it to one n×d table so inference runs the original architecture; compose with low-rank,
quantization and hashing stages; store everything as safetensors checkpoints with a versioned schema.

Example:
    >>> import torch
    >>> from torch import nn
    >>> import mlet_compress as mc
    >>> model = nn.Sequential(nn.Embedding(1000, 16))
    >>> mc.wrap(model, mc.MLETConfig(inner_dim=64))      # train as 1000×64 @ 64→16
    Sequential(...)
"""

__version__ = "0.1.0"

from .checkpoint import Checkpoint, describe_model, load_checkpoint, save_checkpoint
from .ckpt_collapse import collapse_checkpoint
from .config import HashConfig, LowRankConfig, MLETConfig, QuantConfig
from .errors import CheckpointError, ConfigError, DataError, MLETError, NumericalError, TargetingError
from .inspection import inspect_checkpoint
from .ckpt_stages import quantize_checkpoint, svd_checkpoint
from .layers.hashed import HashedEmbedding, HashedEmbeddingBag
from .layers.lowrank import LowRankEmbedding, LowRankEmbeddingBag
from .layers.mlet import MLETEmbedding, MLETEmbeddingBag
from .layers.quantized import QuantizedEmbedding, QuantizedEmbeddingBag
from .lookup import load_lookup_modules, load_model_state, reconstruct
from .stages import compress_
from .wrap import collapse, wrap

__all__ = [
    "__version__",
    "MLETConfig", "LowRankConfig", "QuantConfig", "HashConfig",
    "wrap", "collapse", "compress_",
    "save_checkpoint", "load_checkpoint", "Checkpoint", "describe_model", "inspect_checkpoint",
    "collapse_checkpoint", "svd_checkpoint", "quantize_checkpoint",
    "reconstruct", "load_lookup_modules", "load_model_state",
    "MLETEmbedding", "MLETEmbeddingBag", "HashedEmbedding", "HashedEmbeddingBag",
    "LowRankEmbedding", "LowRankEmbeddingBag", "QuantizedEmbedding", "QuantizedEmbeddingBag",
    "MLETError", "ConfigError", "TargetingError", "CheckpointError", "NumericalError", "DataError",
]
