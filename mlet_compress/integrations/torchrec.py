"""TorchRec engine for MLET: one import for the whole integration (needs ``pip install mlet-compress[torchrec]``).

* :class:`MLETEmbeddingBagCollection` — drop-in for ``torchrec.EmbeddingBagCollection``: an inner k-dim
  EBC plus one k→d projection per table applied after pooling (exact for SUM, MEAN and weighted bags);
  :func:`wrap_ebc` / :func:`collapse_ebc` convert from / back to a plain d-dim EBC (:mod:`.torchrec_ebc`).
* :func:`find_ebcs`, :func:`replace_ebc`, :func:`wrap_ebcs_`, :func:`collapse_ebcs_`, :func:`describe_tables`
  — whole-model helpers with per-table ``select(table)`` and k lookups (:mod:`.torchrec_model`).
* :func:`shard_model`, :func:`ebc_sharder`, :func:`gather_state_dict` — ``DistributedModelParallel`` with the
  stock sharder and a fused row-wise Adagrad, and the unsharded state back for collapse (:mod:`.torchrec_shard`).
* :func:`save_sharded_checkpoint`, :func:`meta_copy` — the collapsed checkpoint of a DMP model, gathered,
  collapsed and streamed to rank 0 one table at a time (:mod:`.torchrec_save`).
* :func:`to_torchrec_quant` — a quantized checkpoint's tables (or :class:`QuantTable` s) as a
  ``torchrec.quant.EmbeddingBagCollection`` in FBGEMM's fused row layout (:mod:`.torchrec_quant`);
  :func:`export_torchrec_quant` / :func:`load_torchrec_quant` write it to a file and rebuild it
  (:mod:`.torchrec_export`, the ``export-torchrec`` command).
* ``mc.wrap`` / ``mc.collapse`` / ``mc.save_checkpoint`` / ``mc.load_model_state`` handle EBCs anywhere in a
  model through :mod:`.ebc_tables` (no import of this module needed).

State-dict keys (``<p>`` = the module's prefix, e.g. ``sparse_arch.embedding_bag_collection.``):

=====================  ===========================================  =======
table                  key                                          shape
=====================  ===========================================  =======
MLET table ``t``       ``<p>inner.embedding_bags.<t>.weight``       n×k
                       ``<p>projs.<t>``                             d×k
single-layer table     ``<p>inner.embedding_bags.<t>.weight``       n×d
after collapse         ``<p>embedding_bags.<t>.weight``             n×d
=====================  ===========================================  =======

The collapsed keys are exactly the original EBC's, so a collapsed state dict loads into the unwrapped
TorchRec model with ``strict=True``. Importing ``mlet_compress`` never imports torchrec; importing this
module does, and raises :class:`TorchRecUnavailableError` (an ``ImportError`` and a ``ConfigError``) with
the install hint when it is missing.
"""

from .torchrec_ebc import (INSTALL_HINT, EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, KeyedTensor,
                           MLETEmbeddingBagCollection, PoolingType, TorchRecUnavailableError, collapse_ebc,
                           factor_from_weight, resolve_inner_dim, wrap_ebc)
from .torchrec_model import collapse_ebcs_, describe_tables, find_ebcs, replace_ebc, wrap_ebcs_
from .torchrec_export import ExportResult, export_torchrec_quant, load_torchrec_quant, to_torchrec_quant
from .torchrec_quant import QuantEmbeddingBagCollection, QuantTable, fbgemm_rows, fp16_scale_error
from .torchrec_shard import OPTIMIZERS, ebc_sharder, gather_state_dict, shard_model, sharding_constraints
from .torchrec_save import meta_copy, save_sharded_checkpoint

__all__ = [
    "INSTALL_HINT", "TorchRecUnavailableError", "MLETEmbeddingBagCollection", "wrap_ebc", "collapse_ebc",
    "factor_from_weight", "resolve_inner_dim", "find_ebcs", "replace_ebc", "wrap_ebcs_", "collapse_ebcs_",
    "describe_tables", "QuantTable", "fbgemm_rows", "fp16_scale_error", "to_torchrec_quant", "export_torchrec_quant",
    "load_torchrec_quant", "ExportResult", "OPTIMIZERS",
    "ebc_sharder", "sharding_constraints", "shard_model", "gather_state_dict", "save_sharded_checkpoint", "meta_copy",
    # torchrec types, re-exported for convenience
    "EmbeddingBagCollection", "EmbeddingBagConfig", "PoolingType", "KeyedJaggedTensor", "KeyedTensor",
    "QuantEmbeddingBagCollection",
]
