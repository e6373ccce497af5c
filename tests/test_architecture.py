"""The layering rules of docs/architecture.md, checked on the source so a change that breaks them goes red."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "mlet_compress"
CLI = Path(__file__).resolve().parents[1] / "cli"


def _imports(path: Path) -> set[str]:
    """Absolute names of the mlet_compress modules ``path`` imports (relative imports resolved)."""
    rel = path.relative_to(PKG.parent).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                out.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("mlet_compress")}


@pytest.mark.parametrize("path", sorted((PKG / "ops").rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_ops_is_the_bottom_layer(path):
    allowed = ("mlet_compress.ops", "mlet_compress.errors")
    bad = [m for m in _imports(path) if not m.startswith(allowed)]
    assert not bad, f"{path.name} imports {bad}; ops/ may import only ops/ and errors"


@pytest.mark.parametrize("path", sorted((PKG / "layers").rglob("*.py")), ids=lambda p: p.name)
def test_layers_build_on_ops_only(path):
    allowed = ("mlet_compress.ops", "mlet_compress.errors", "mlet_compress.layers")
    bad = [m for m in _imports(path) if not m.startswith(allowed)]
    assert not bad, f"layers/{path.name} imports {bad}"


def test_library_never_imports_the_cli():
    for path in PKG.rglob("*.py"):
        bad = [m for m in _imports(path) if m.startswith("mlet_compress.cli")]
        assert not bad, f"{path} imports the CLI: {bad}"


def _raw_schema_subscripts(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and \
                node.slice.value in ("kind", "factors", "stages"):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", sorted(p for root in (PKG, CLI) for p in root.rglob("*.py")),
                         ids=lambda p: str(p.relative_to(PKG.parent)))
def test_only_schema_reads_the_raw_metadata(path):
    if path == PKG / "schema.py":
        return
    assert not _raw_schema_subscripts(path), f"{path} subscripts 'kind'/'factors'/'stages' at lines {_raw_schema_subscripts(path)}; use TableEntry"
