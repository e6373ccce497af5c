"""The library's exception hierarchy.

Every error the library raises on bad input derives from :class:`MLETError`, so callers (and the
CLI) can catch one class. Messages name the object, the value and the fix. A fix that is an option of
the call is written ``{option}`` in the message and named by ``option`` (and ``value``), or ``{name}`` for
each entry of ``options``: Python callers read ``force=True``, and the CLI renders the same error with
its flag (``--force``). A value of ``...`` names the option itself (``lr`` / ``--lr``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional


def python_option(option: str, value: Any) -> str:
    """How a Python caller spells an option: ``force=True``, ``tables='emb.*'``, ``lr`` (value ``...``)."""
    return option if value is ... else f"{option}={value!r}"


class MLETError(Exception):
    """Base class of every error raised by mlet_compress on bad input or state.

    Args:
        message: the one-line message; ``{option}`` marks where the option that fixes it is named.
        option: the keyword argument the fix refers to (``"force"``, ``"tables"``, ...), or None.
        value: the option's value in the fix (``True`` for a switch, the value the caller passed, or ``...``).
        options: several options at once, ``{name: value}``, each written ``{name}`` in the message.

    Example:
        >>> e = CheckpointError("out.safetensors already exists; pass {option} to overwrite it", option="force")
        >>> str(e)
        'out.safetensors already exists; pass force=True to overwrite it'
        >>> e.render(lambda opt, val: "--" + opt)
        'out.safetensors already exists; pass --force to overwrite it'
    """

    def __init__(self, message: str = "", *, option: Optional[str] = None, value: Any = True,
                 options: Optional[dict[str, Any]] = None):
        super().__init__(message)
        self.message, self.option, self.value = message, option, value
        self.options = dict(options or {})

    def render(self, spell: Callable[[str, Any], str] = python_option) -> str:
        """The message with each option placeholder spelled by ``spell(option, value)``."""
        text = self.message
        if self.option is not None:
            text = text.replace("{option}", spell(self.option, self.value))
        for name, value in self.options.items():
            text = text.replace("{" + name + "}", spell(name, value))
        return text

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
