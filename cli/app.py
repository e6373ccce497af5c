"""The ``mlet-compress`` Typer application: registers one command per module and maps library errors
to one-line messages.

The library's own exceptions (:class:`mlet_compress.errors.MLETError` and its subclasses) become a single
``error: ...`` line on stderr and exit code 1, with the fix spelled as a command-line flag (``--force``
where the library says ``force=True``). Any other exception is a bug: it prints as one line that says so,
exit code 1. Set ``MLET_COMPRESS_DEBUG=1`` to see the traceback of either.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

from mlet_compress._version import __version__
from mlet_compress.errors import MLETError

app = typer.Typer(
    name="mlet-compress",
    help="Train recommendation embeddings with MLET, then collapse, compress and inspect safetensors checkpoints.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

def _version(value: bool) -> None:
    if value:
        print(f"mlet-compress {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Train recommendation embeddings with MLET, then collapse, compress and inspect safetensors checkpoints."""


# --- command registration (one module per command) -------------------------------------------
from . import benchmark as _benchmark  # noqa: E402
from . import cache_cmd as _cache  # noqa: E402
from . import collapse as _collapse  # noqa: E402
from . import convert as _convert  # noqa: E402
from . import inspect_cmd as _inspect  # noqa: E402
from . import stages_cmds as _stages  # noqa: E402
from . import train as _train  # noqa: E402
from . import eval_cmd as _eval  # noqa: E402
from . import export_cmd as _export  # noqa: E402
from . import export_torchrec as _export_torchrec  # noqa: E402
from . import sweep as _sweep  # noqa: E402
from . import diagnose as _diagnose  # noqa: E402

app.command("collapse")(_collapse.collapse_cmd)
app.command("inspect")(_inspect.inspect_cmd)
app.command("convert")(_convert.convert_cmd)
app.command("svd")(_stages.svd_cmd)
app.command("quantize")(_stages.quantize_cmd)
app.command("benchmark")(_benchmark.benchmark_cmd)
app.command("train")(_train.train_cmd)
app.command("eval")(_eval.eval_cmd)
app.command("export")(_export.export_cmd)
app.command("cache")(_cache.cache_cmd)
app.command("export-torchrec")(_export_torchrec.export_torchrec_cmd)
app.command("sweep")(_sweep.sweep_cmd)
app.command("diagnose")(_diagnose.diagnose_cmd)
# --- end of command registration -------------------------------------------------------------


def debug_enabled() -> bool:
    """True when ``MLET_COMPRESS_DEBUG`` is set to a non-empty, non-zero value."""
    return os.environ.get("MLET_COMPRESS_DEBUG", "") not in ("", "0")


#: Library options whose command-line flag is not ``--<option with dashes>``.
FLAG_NAMES = {"inner_dim": "--mlet-k", "out": "--out", "dst": "--output"}


def cli_option(option: str, value: Any) -> str:
    """How the CLI spells an option named in a library error: ``--force``, ``--tables 'emb.*'``."""
    flag = FLAG_NAMES.get(option, "--" + option.replace("_", "-"))
    return flag if value is True or value is ... else f"{flag} {value!r}"


def error_line(exc: BaseException) -> str:
    """The one line printed for ``exc``: the library's message, or a bug report for anything else."""
    if isinstance(exc, MLETError):
        text = exc.render(cli_option).strip()
        return "error: " + (text.splitlines()[0] if text else type(exc).__name__)
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return (f"error: unexpected {type(exc).__name__}: {first} — this is a bug in mlet-compress, please report it "
            "(set MLET_COMPRESS_DEBUG=1 for the traceback)")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - every failure ends as one line; tracebacks on request
        if debug_enabled():
            raise
        print(error_line(exc), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
