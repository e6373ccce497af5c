"""Training entry points (the library side of ``mlet-compress train`` and ``eval``).

Implementation lives in :mod:`mlet_compress.training`; this module is the stable import path.

Example (trains on the synthetic default and writes a run directory, so it is not run as a doctest):
    >>> from mlet_compress.train import TrainConfig, train, compare
    >>> cfg = TrainConfig(model="dlrm", dim=16, inner_dim=64, epochs=1)   # paper defaults: SGD lr 0.2
    >>> result = train(cfg, out="runs/dlrm-mlet")                       # doctest: +SKIP
    >>> result.metrics["test"]["auc"], result.metrics["params"]["embedding_inference"]  # doctest: +SKIP
"""

from .training import (
    CompareResult,
    DataSpec,
    TrainCallback,
    TrainConfig,
    TrainResult,
    build_optimizer,
    build_training_model,
    compare,
    compare_seeds,
    compare_variants,
    count_parameters,
    evaluate_checkpoint,
    load_data,
    param_groups,
    prepare_model,
    resume_compare,
    resume_run,
    train,
    wrap_deepctr,
)

__all__ = [
    "TrainConfig", "DataSpec", "TrainResult", "TrainCallback", "CompareResult",
    "train", "resume_run", "resume_compare", "compare", "compare_seeds", "compare_variants", "evaluate_checkpoint", "load_data",
    "build_training_model", "prepare_model", "build_optimizer", "param_groups", "count_parameters", "wrap_deepctr",
]
