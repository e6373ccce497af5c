"""Converters between the checkpoints people have and the mlet-compress format (see ``docs/converters.md``).

Inputs: plain safetensors state dicts (``safetensors.torch.save_file`` / ``save_model``, Hugging Face
``model.safetensors``, sharded ``model.safetensors.index.json``, or a model folder holding them),
``torch.save`` pickles (``.pt``/``.pth``/``.bin``, read with ``weights_only=True`` only) and
mlet-compress checkpoints. Outputs (``to``):

- ``"mlet"``: an mlet-compress checkpoint: every tensor carried unchanged, the embedding tables
  described by the schema (chosen by a ``tables`` regex or detected by name, see :mod:`.detect`), so
  ``collapse`` / ``svd`` / ``quantize`` / ``benchmark`` / ``eval`` work on it;
- ``"safetensors-plain"`` / ``"pt"``: a plain state dict with the original key names, loadable with
  ``model.load_state_dict(..., strict=True)``: MLET factors collapsed, low-rank factors multiplied out,
  quantized tables dequantized (their values are the quantized ones; the report says so).

Plain → mlet → plain is bit-exact for every tensor no stage touched.

Example:
    >>> rep = convert_checkpoint("bert/model.safetensors")                     # doctest: +SKIP
    >>> sorted(rep.tables)                                                      # doctest: +SKIP
    ['bert.embeddings.position_embeddings', 'bert.embeddings.token_type_embeddings', 'bert.embeddings.word_embeddings']
    >>> convert_checkpoint("bert/model.mlet.q8.safetensors", to="safetensors-plain").output  # doctest: +SKIP
    PosixPath('bert/model.mlet.q8.plain.safetensors')
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from ..atomic import resolve_output
from ..checkpoint import load_header
from ..errors import ConfigError
from .detect import Detection, detect_tables, looks_like_embedding
from .sources import PICKLE_SUFFIXES, Source, TensorMeta, load_pickle_state_dict, open_source, resolve_input
from .write import ConvertReport, write_mlet, write_plain

#: Output formats of :func:`convert_checkpoint`.
TARGETS = ("mlet", "safetensors-plain", "pt")
_SAME = {"mlet": "mlet-compress", "safetensors-plain": "safetensors", "pt": "torch"}


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".safetensors.index.json", ".bin.index.json", ".index.json", ".safetensors", *PICKLE_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def default_target(source_format: str, dst: Optional[Union[str, Path]]) -> str:
    """The output format when ``to`` is not given: from ``dst``'s suffix, else ``pt`` for mlet-compress
    inputs (0.1.0's behaviour) and ``mlet`` for everything else."""
    if dst is not None and str(dst).lower().endswith(PICKLE_SUFFIXES):
        return "pt"
    if source_format == "mlet-compress":
        return "safetensors-plain" if dst is not None else "pt"
    return "mlet"


def default_output(src: Path, to: str) -> Path:
    """``<stem>.safetensors`` (from a pickle) or ``<stem>.mlet.safetensors``; ``<stem>.plain.safetensors``;
    ``<stem>.pt`` — beside the input (beside the folder for a model folder)."""
    base = src.parent / src.name if src.is_dir() else src
    stem = _stem(base)
    if to == "pt":
        return base.with_name(stem + ".pt")
    if to == "safetensors-plain":
        return base.with_name(stem + ".plain.safetensors")
    is_pickle = base.name.lower().endswith(PICKLE_SUFFIXES)
    return base.with_name(stem + (".safetensors" if is_pickle else ".mlet.safetensors"))


def _check_options(source: Source, to: str, tables: Optional[str], bag_mode: Optional[str]) -> None:
    if to not in TARGETS:
        raise ConfigError(f"{{option}} must be one of {TARGETS}, got {to!r}", option="to", value=to)
    if source.format == _SAME[to]:
        raise ConfigError(f"{source.path} is already a {source.format} checkpoint; nothing to convert "
                          f"(choose another {{option}})", option="to", value=...)
    if to != "mlet" and (tables is not None or bag_mode is not None):
        raise ConfigError("{tables} and {bag_mode} describe tables of an mlet-compress output; they do not apply "
                          f"to {to!r}", options={"tables": ..., "bag_mode": ...})


def convert_checkpoint(
    src: Union[str, Path],
    dst: Optional[Union[str, Path]] = None,
    *,
    to: Optional[str] = None,
    tables: Optional[str] = None,
    bag_mode: Optional[str] = None,
    force: bool = False,
) -> ConvertReport:
    """Convert a checkpoint between plain state dicts and the mlet-compress format (module docstring).

    Args:
        src: a plain ``.safetensors`` file, a shard index (``*.index.json``), a Hugging Face model folder,
            a ``.pt``/``.pth``/``.bin`` pickle, or an mlet-compress checkpoint.
        dst: output path (default: :func:`default_output` beside the input).
        to: ``"mlet"``, ``"safetensors-plain"`` or ``"pt"`` (default: :func:`default_target`).
        tables: regex (full match on module names) of the embedding tables; None detects them by name.
        bag_mode: ``"sum"`` / ``"mean"`` to record the tables as ``nn.EmbeddingBag`` (default ``nn.Embedding``).
        force: overwrite ``dst`` (never ``src``).

    Returns:
        A :class:`ConvertReport` (tables with bytes before/after and why each was taken, the 2-D weights
        that were not, notes, file sizes).

    Raises:
        CheckpointError: unreadable input, a pickle carrying code, an existing ``dst`` without ``force``.
        ConfigError: bad ``to``/``tables``/``bag_mode``, a conversion to the input's own format.
    """
    path = resolve_input(src)
    with open_source(path) as source:
        to = to or default_target(source.format, dst)
        _check_options(source, to, tables, bag_mode)
        out = resolve_output(path, Path(dst) if dst is not None else default_output(Path(src), to), "", force)
        report = ConvertReport(str(src), source.format, target=to, file_bytes_before=source.file_bytes)
        if to == "mlet":
            write_mlet(source, out, detect_tables(source.metas, tables, bag_mode=bag_mode), report)
        else:
            write_plain(source, out, report, as_torch=to == "pt")
    report.output = out
    report.file_bytes_after = out.stat().st_size
    return report


def convert_to_safetensors(src: Union[str, Path], dst: Optional[Union[str, Path]] = None, *,
                           tables: Optional[str] = None, force: bool = False):
    """0.1.0's pickle → mlet-compress conversion: ``(output path, table entries)``.

    Same as ``convert_checkpoint(src, dst, to="mlet", tables=tables, force=force)``.
    """
    rep = convert_checkpoint(src, dst, to="mlet", tables=tables, force=force)
    return rep.output, dict(load_header(rep.output)[0].tables)


def convert_to_torch(src: Union[str, Path], dst: Optional[Union[str, Path]] = None, *, force: bool = False) -> Path:
    """An mlet-compress checkpoint → a plain ``torch.save`` state dict (``convert_checkpoint(..., to="pt")``)."""
    return convert_checkpoint(src, dst, to="pt", force=force).output


__all__ = ["TARGETS", "ConvertReport", "Detection", "Source", "TensorMeta", "convert_checkpoint", "detect_tables",
           "looks_like_embedding", "open_source", "default_output", "default_target", "load_pickle_state_dict",
           "convert_to_safetensors", "convert_to_torch", "PICKLE_SUFFIXES"]
