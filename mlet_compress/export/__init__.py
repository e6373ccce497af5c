"""Export lookup tables or whole trained models out of Python: ONNX (:func:`export_onnx`) and ``torch.export``
programs (:func:`export_program`). docs/export.md describes the graphs, the input signature and the sizes.

Importing this package needs only torch; :func:`export_onnx` needs the ``[export]`` extra (onnx,
onnxruntime to run the result, onnxscript for whole models).

Example:
    >>> import mlet_compress as mc
    >>> res = mc.export_onnx("model.q4row.safetensors")                 # doctest: +SKIP
    >>> res.output, res.inputs                                          # doctest: +SKIP
    (PosixPath('model.q4row.onnx'), {'emb.C1.indices': 'int64[...]', ...})
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence, Union

from ..errors import ConfigError
from .report import ExportResult, check_low_bit
from .sources import resolve_output, resolve_source

DEFAULT_OPSET = 18


def _resolve(src: Any, dst: Any, suffix: str, *, model_config: Any, tables: Any, example_inputs: Any, force: bool):
    source, path = resolve_source(src, model_config=model_config, example_inputs=example_inputs, tables=tables)
    return source, resolve_output(path, dst, suffix, force)


def export_onnx(
    src: Any,
    dst: Optional[Union[str, os.PathLike]] = None,
    *,
    model_config: Union[str, os.PathLike, Mapping[str, Any], None] = None,
    tables: Union[str, Sequence[str], None] = None,
    example_inputs: Optional[tuple] = None,
    per_sample_weights: bool = False,
    low_bit: str = "packed",
    opset: int = DEFAULT_OPSET,
    force: bool = False,
) -> ExportResult:
    """Export a checkpoint's lookup tables, or a whole model, to one ONNX file.

    Args:
        src: a checkpoint path or :class:`~mlet_compress.Checkpoint` (its tables); a ``train`` run directory
            (the whole model, rebuilt from its ``config.json``); a ``{name: lookup module}`` mapping or one
            lookup module (tables); or any ``nn.Module`` with ``example_inputs`` (whole model).
        dst: output path (default: beside ``src``, ``<stem>.onnx``; ``<run dir>/model.onnx``).
        model_config: export the whole model from a checkpoint file: a run's ``config.json`` (or its
            directory) or ``{"name", "config"}``.
        tables: full-match regex or list of table names to export (tables only; default all).
        example_inputs: inputs of a whole ``nn.Module`` (dim 0 of each becomes the dynamic batch).
        per_sample_weights: give ``sum`` bags a ``<table>.per_sample_weights`` float32[N] input.
        low_bit: 2/3/4-bit codes ``"packed"`` (as stored; unpacked after the Gather) or ``"int8"``
            (unpacked at export: 2× / 4× the code bytes, a simpler graph).
        opset: ONNX opset (≥ 18).
        force: overwrite an existing output (never the input).

    Returns:
        :class:`ExportResult`: output, per-table graph forms and bytes, the input/output signature, notes.
        Tables: inputs ``<t>.indices`` int64[N], for bags ``<t>.offsets`` int64[B] (bag starts; B + 1
        values with ``include_last_offset``), outputs ``<t>`` float32[N, d] (plain) or [B, d] (bags).
        Models: the model's inputs (CTR models: ``dense`` float32[batch, num_dense], ``sparse``
        int64[batch, F]) and ``logits``.

    Raises:
        ConfigError: onnx missing, bad options, a table the graph cannot express.
        CheckpointError: unreadable source, or an existing output without ``force``.

    Example:
        >>> mc.export_onnx("runs/demo", force=True).output   # doctest: +SKIP
        PosixPath('runs/demo/model.onnx')
    """
    try:
        from .onnx_export import write_onnx
    except ImportError as exc:
        raise ConfigError(f"ONNX export needs the onnx package ({exc}); pip install 'mlet-compress[export]'") from None
    check_low_bit(low_bit)
    source, out = _resolve(src, dst, "onnx", model_config=model_config, tables=tables,
                           example_inputs=example_inputs, force=force)
    return write_onnx(source, out, per_sample_weights=per_sample_weights, low_bit=low_bit, opset=opset)


def export_program(
    src: Any,
    dst: Optional[Union[str, os.PathLike]] = None,
    *,
    model_config: Union[str, os.PathLike, Mapping[str, Any], None] = None,
    tables: Union[str, Sequence[str], None] = None,
    example_inputs: Optional[tuple] = None,
    per_sample_weights: bool = False,
    force: bool = False,
) -> ExportResult:
    """Export the same lookups or whole model as a ``torch.export`` program (``.pt2``, ``torch.export.load``).

    Tables keep their stored form (packed integer codes + scale). A tables program's ``module()`` takes one
    dict ``{"<t>.indices": int64[N], "<t>.offsets": int64[B], ...}`` (the ONNX input names) and returns ``{"<t>": float32 rows}``; a model program takes the model's inputs.

    Args:
        src, dst, model_config, tables, example_inputs, per_sample_weights, force: as :func:`export_onnx`
            (default output ``<stem>.pt2``).

    Returns:
        :class:`ExportResult`.

    Raises:
        ConfigError / CheckpointError: as :func:`export_onnx`.

    Example:
        >>> res = mc.export_program("model.q8row.safetensors")          # doctest: +SKIP
        >>> prog = torch.export.load(res.output)                        # doctest: +SKIP
        >>> prog.module()({"emb.C1.indices": torch.tensor([3, 4])})     # doctest: +SKIP
    """
    from .program import write_program

    source, out = _resolve(src, dst, "pt2", model_config=model_config, tables=tables,
                           example_inputs=example_inputs, force=force)
    return write_program(source, out, per_sample_weights=per_sample_weights)


__all__ = ["export_onnx", "export_program", "ExportResult", "DEFAULT_OPSET"]
