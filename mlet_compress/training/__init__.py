"""The training package behind ``mlet-compress train`` / ``eval`` (re-exported by :mod:`mlet_compress.train`).

Modules: ``config`` (TrainConfig; DataSpec comes from :mod:`mlet_compress.data`), ``optim`` (param
groups, optimizer, parameter counts), ``loop`` (LoopSettings, FitHooks, ``fit``: epochs, selection, early
stopping), ``predict`` (TensorData, ``predict``), ``ddp`` (torchrun / DistributedDataParallel helpers),
``outputs`` (run-directory files, resume state), ``run`` (``train``, ``resume_run``), ``resume`` (saved
config, resume checks), ``finalize`` (test, collapse, save), ``compare`` (single vs MLET, tuned
baselines), ``evaluate`` (``evaluate_checkpoint``).
"""

from .compare import CompareResult, compare, compare_seeds, compare_variants, resume_compare
from .config import DataSpec, TrainConfig
from .evaluate import evaluate_checkpoint
from .interop import wrap_deepctr
from .loop import TrainCallback
from .optim import build_optimizer, count_parameters, param_groups
from .run import TrainResult, build_training_model, load_data, prepare_model, resume_run, train

__all__ = [
    "TrainConfig", "DataSpec", "TrainResult", "TrainCallback", "CompareResult",
    "train", "resume_run", "resume_compare", "compare", "compare_seeds", "compare_variants", "evaluate_checkpoint", "load_data",
    "build_training_model", "prepare_model", "build_optimizer", "param_groups", "count_parameters", "wrap_deepctr",
]
