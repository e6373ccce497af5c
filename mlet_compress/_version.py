"""The package version (one place; read by the package root and by checkpoint writers)."""

__version__ = "0.2.0"
