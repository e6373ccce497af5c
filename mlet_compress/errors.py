"""The library's exception hierarchy.

Every error the library raises on bad input derives from :class:`MLETError`, so callers (and the
CLI) can catch one class. Messages name the object, the value and the fix. A fix that is an option of
the call is written ``{option}`` in the message and named by ``option`` (and ``value``): Python callers
read ``force=True``, and the CLI renders the same error with its flag (``--force``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional


def python_option(option: str, value: Any) -> str:
    """How a Python caller spells an option: ``force=True``, ``tables='emb.*'``."""
    return f"{option}={value!r}"


class MLETError(Exception):
    """Base class of every error raised by mlet_compress on bad input or state.

    Args:
        message: the one-line message; ``{option}`` marks where the option that fixes it is named.
        option: the keyword argument the fix refers to (``"force"``, ``"tables"``, ...), or None.
        value: the option's value in the fix (``True`` for a switch, or the value the caller passed).

    Example:
        >>> e = CheckpointError("out.safetensors already exists; pass {option} to overwrite it", option="force")
        >>> str(e)
        'out.safetensors already exists; pass force=True to overwrite it'
        >>> e.render(lambda opt, val: "--" + opt)
        'out.safetensors already exists; pass --force to overwrite it'
    """

    def __init__(self, message: str = "", *, option: Optional[str] = None, value: Any = True):
        super().__init__(message)
        self.message, self.option, self.value = message, option, value

    def render(self, spell: Callable[[str, Any], str] = python_option) -> str:
        """The message with ``{option}`` spelled by ``spell(option, value)``."""
        if self.option is None:
            return self.message
        return self.message.replace("{option}", spell(self.option, self.value))

    def __str__(self) -> str:
        return self.render()


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
