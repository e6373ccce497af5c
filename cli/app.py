"""The ``mlet-compress`` Typer application: registers one command per module and maps library errors
to one-line messages.

Library exceptions (:class:`mlet_compress.errors.MLETError`, ``OSError``, ``ValueError``, ``KeyError``)
become a single ``error: ...`` line on stderr and exit code 1; any other exception is reported the same
way, marked "unexpected". Set ``MLET_COMPRESS_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import os
import sys

import typer

from mlet_compress.errors import MLETError

app = typer.Typer(
    name="mlet-compress",
    help="Train recommendation embeddings with MLET, then collapse, compress and inspect safetensors checkpoints.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

# --- command registration (one module per command) -------------------------------------------
from . import benchmark as _benchmark  # noqa: E402
from . import collapse as _collapse  # noqa: E402
from . import convert as _convert  # noqa: E402
from . import inspect_cmd as _inspect  # noqa: E402
from . import stages_cmds as _stages  # noqa: E402
from . import train as _train  # noqa: E402
from . import eval_cmd as _eval  # noqa: E402

app.command("collapse")(_collapse.collapse_cmd)
app.command("inspect")(_inspect.inspect_cmd)
app.command("convert")(_convert.convert_cmd)
app.command("svd")(_stages.svd_cmd)
app.command("quantize")(_stages.quantize_cmd)
app.command("benchmark")(_benchmark.benchmark_cmd)
app.command("train")(_train.train_cmd)
app.command("eval")(_eval.eval_cmd)
# --- end of command registration -------------------------------------------------------------


def debug_enabled() -> bool:
    """True when ``MLET_COMPRESS_DEBUG`` is set to a non-empty, non-zero value."""
    return os.environ.get("MLET_COMPRESS_DEBUG", "") not in ("", "0")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except (MLETError, OSError, ValueError, KeyError) as exc:  # library errors: one line, non-zero exit
        if debug_enabled():
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # anything else is a bug: still one line, the traceback on request
        if debug_enabled():
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"error: unexpected {type(exc).__name__}: {first} (set MLET_COMPRESS_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
