"""Checkpoint conversion (0.1.0's module name); the implementation lives in :mod:`mlet_compress.converters`."""

from __future__ import annotations

from .converters import (  # noqa: F401  (re-exported)
    PICKLE_SUFFIXES, TARGETS, ConvertReport, convert_checkpoint, convert_to_safetensors, convert_to_torch,
    detect_tables, load_pickle_state_dict, open_source,
)

__all__ = ["PICKLE_SUFFIXES", "TARGETS", "ConvertReport", "convert_checkpoint", "convert_to_safetensors",
           "convert_to_torch", "detect_tables", "load_pickle_state_dict", "open_source"]
