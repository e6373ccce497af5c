"""The library's exception hierarchy.

Every error the library raises on bad input derives from :class:`MLETError`, so callers (and the
CLI) can catch one class. Messages name the object, the value and the fix.
"""

from __future__ import annotations


class MLETError(Exception):
    """Base class of every error raised by mlet_compress on bad input or state."""


class ConfigError(MLETError, ValueError):
    """A configuration value is invalid (bad dimension, bits, rank, regex, ...)."""


class TargetingError(MLETError, ValueError):
    """No module matched a target pattern, or a module cannot be wrapped as requested."""


class CheckpointError(MLETError):
    """A checkpoint file is missing, malformed, truncated or of an unsupported schema version."""


class NumericalError(MLETError, ValueError):
    """A tensor holds NaN/Inf, or a collapse equivalence check failed."""


class DataError(MLETError, ValueError):
    """A data file is malformed (wrong column count, non-numeric field, ...)."""


__all__ = ["MLETError", "ConfigError", "TargetingError", "CheckpointError", "NumericalError", "DataError"]
