"""The result of an export: where it went, what each table became, the signature, sizes and notes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .tables import TableSpec

LOW_BIT_FORMS = ("packed", "int8")


@dataclass
class ExportResult:
    """What :func:`~mlet_compress.export.export_onnx` / :func:`~mlet_compress.export.export_program` wrote.

    Attributes:
        output: the written file. format: ``"onnx"`` or ``"pt2"``. what: ``"tables"`` or ``"model"``.
        bytes: size of the written file(s) (an ONNX external-data file included).
        tables: per table ``{"layout", "graph", "bytes_source", "bytes_export"}``: the table as described by
            the source, the ops it became, and its stored bytes before and in the export.
        inputs / outputs: name → ``"int64[N]"``-style signature.
        notes: what the export changed or could not keep (unpacked codes, dtype conversions, ...).
    """

    output: Path
    format: str
    what: str
    bytes: int = 0
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add_notes(self, notes: dict[str, list[str]]) -> None:
        """Append grouped notes: each text once, followed by the tables it is about."""
        for text, names in notes.items():
            shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
            self.notes.append(f"{text} ({shown})" if names else text)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (paths as strings)."""
        return {"output": str(self.output), "format": self.format, "what": self.what, "bytes": self.bytes,
                "tables": self.tables, "inputs": self.inputs, "outputs": self.outputs, "notes": list(self.notes)}


def check_low_bit(low_bit: str) -> str:
    """Validate the 2/3/4-bit code form.

    Raises:
        ConfigError: not one of ``LOW_BIT_FORMS``.
    """
    from ..errors import ConfigError

    if low_bit not in LOW_BIT_FORMS:
        raise ConfigError(f"low_bit={low_bit!r} is not one of {list(LOW_BIT_FORMS)}; fix {{option}}",
                          option="low_bit", value=...)
    return low_bit


def export_bytes(spec: TableSpec, low_bit: str) -> int:
    """Bytes the exported table stores: the packed codes, or int8 rows when low-bit codes are unpacked."""
    if spec.codes is None or spec.container_bits == 8 or low_bit == "packed":
        return spec.stored_bytes()
    return spec.stored_bytes() - spec.codes.numel() + spec.num_rows * spec.row_dim


def graph_form(spec: TableSpec, low_bit: str, fmt: str = "onnx") -> str:
    """The ops a table's lookup becomes, e.g. ``Mod → Gather(int8) → DequantizeLinear(row) → ScatterND(add)``."""
    steps = ["Mod"] if spec.num_buckets is not None else []
    if spec.codes is None:
        steps.append(f"Gather({str(spec.weight.dtype).replace('torch.', '')})")
    else:
        deq = f"DequantizeLinear({spec.granularity} scale)" if fmt == "onnx" else f"× {spec.granularity} scale"
        if spec.container_bits < 8 and (low_bit == "packed" or fmt == "pt2"):
            unpack = "BitwiseXor/BitShift/BitwiseAnd" if fmt == "onnx" else "shift/mask"
            steps += [f"Gather(uint8, {8 // spec.container_bits} codes/byte)", unpack, deq]
        else:
            steps += ["Gather(int8)", deq]
    if spec.bag:
        red = {"sum": "add", "mean": "add, / count", "max": "max"}[spec.mode]
        steps.append(f"ScatterND({red}) over offsets" if fmt == "onnx" else f"index_add/scatter_reduce ({spec.mode})")
    if spec.project is not None:
        steps.append(f"MatMul({spec.row_dim}×{spec.embedding_dim})")
    return " → ".join(steps)


def collect_notes(specs: list[TableSpec], low_bit: str, fmt: str = "onnx") -> dict[str, list[str]]:
    """What the report says beyond the ops, grouped: note text → the tables it applies to (dtype changes,
    packed or unpacked low-bit codes and what unpacking costs)."""
    notes: dict[str, list[str]] = {}
    extra = 0
    for spec in specs:
        for text in spec.notes:
            notes.setdefault(text, [])
        if spec.codes is None or spec.container_bits == 8 or fmt != "onnx":
            continue
        per = 8 // spec.container_bits
        if low_bit == "int8":
            extra += export_bytes(spec, low_bit) - spec.stored_bytes()
            notes.setdefault(f"{spec.bits}-bit codes unpacked to int8 at export, {per}× the packed code bytes",
                             []).append(spec.name)
        else:
            notes.setdefault(f"{spec.bits}-bit codes stay packed ({per} per byte, as in the checkpoint) and are unpacked "
                             "after the Gather, because ONNX Gather takes no int4/int2 type", []).append(spec.name)
    if extra:
        notes[f"unpacking low-bit codes to int8 costs +{extra:,} bytes in all"] = []
    return notes


def signature(dtype: str, dims: Optional[list]) -> str:
    """``int64[N]``, or ``int64[...]`` for any shape."""
    return f"{dtype}[...]" if dims is None else f"{dtype}[{', '.join(str(d) for d in dims)}]"


__all__ = ["ExportResult", "LOW_BIT_FORMS", "check_low_bit", "export_bytes", "graph_form", "collect_notes", "signature"]
