"""Data pipeline: readers, vocabularies, splits, cache and the synthetic CTR generator.

Typical use::

    from mlet_compress.data import DataSpec, load_dataset, sample_log_frequency
    splits = load_dataset(DataSpec(path="train.txt", format="criteo", min_freq=2))
    splits.train.sparse            # int64 [N, 26] ids, 0 = OOV/missing
    log_freq = sample_log_frequency(splits.preprocessor, splits.test.sparse)   # paper §4.2

``pyarrow`` is needed for the file formats; the synthetic generator needs only numpy.
"""

from .core import load_dataset, load_eval_split
from .spec import FORMATS, DataSpec
from .splits import split_indices
from .synthetic import SyntheticConfig, generate_synthetic, iter_synthetic, synthetic_vocab_sizes
from .types import DataSplits, TabularData
from .vocab import Preprocessor, sample_log_frequency

__all__ = [
    "FORMATS", "DataSpec", "DataSplits", "Preprocessor", "SyntheticConfig", "TabularData", "generate_synthetic",
    "iter_synthetic", "load_dataset", "load_eval_split", "sample_log_frequency", "split_indices",
    "synthetic_vocab_sizes",
]
