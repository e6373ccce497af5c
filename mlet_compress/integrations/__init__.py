"""Optional integrations with other libraries; each submodule imports its library only when imported itself.

``ebc_tables`` (TorchRec EBC tables for the stage registry and checkpoints) never imports torchrec;
:func:`to_torchrec_quant` imports it when called.
"""

from __future__ import annotations

from typing import Any


def to_torchrec_quant(src: Any, **kwargs: Any) -> Any:
    """A quantized checkpoint (path or ``Checkpoint``) as a ``torchrec.quant.EmbeddingBagCollection``.

    Imports torchrec on the first call (``import mlet_compress`` never does). Keyword arguments and
    result: :func:`mlet_compress.integrations.torchrec_export.to_torchrec_quant` (``tables``, ``is_weighted``,
    ``output_dtype``, ``max_fp16_error``).

    Raises:
        TorchRecUnavailableError: torchrec is not installed (a ``ConfigError`` and an ``ImportError``,
            with the install command).

    Example:
        >>> qebc = to_torchrec_quant("model.q8row.safetensors")  # doctest: +SKIP
    """
    from .torchrec_export import to_torchrec_quant as convert

    return convert(src, **kwargs)


__all__ = ["to_torchrec_quant"]
