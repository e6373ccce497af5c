"""What to export: the lookup tables of a checkpoint, or a whole model rebuilt from a ``train`` run's config.

Sources (``src`` of :func:`~mlet_compress.export.export_onnx` / :func:`~mlet_compress.export.export_program`):

* a checkpoint file (or a loaded :class:`~mlet_compress.Checkpoint`): its tables, as lookup modules;
* a ``train`` run directory: the whole model — ``config.json``'s ``model_info`` rebuilds the architecture,
  ``model.safetensors`` loads into it (compressed tables swap in their lookup modules);
* a checkpoint file with ``model_config`` (a run's ``config.json``, its directory, or ``{"name", "config"}``):
  the whole model, from that checkpoint (e.g. a quantized copy of the run's model);
* in Python, a mapping ``{name: lookup module}`` or one lookup module (tables), or any ``nn.Module`` with
  ``example_inputs`` (whole model).
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ..checkpoint import Checkpoint, load_checkpoint
from ..errors import CheckpointError, ConfigError
from ..lookup import load_lookup_modules, load_model_state
from ..table_modules import table_kind

PathLike = Union[str, os.PathLike]
MODEL_FILE, CONFIG_FILE = "model.safetensors", "config.json"


@dataclass
class ModelSource:
    """A whole model to export: the module, example inputs (batch of 2), their names, the output name."""

    model: nn.Module
    example_inputs: tuple
    input_names: list[str]
    output_names: list[str] = field(default_factory=lambda: ["logits"])


def _read_model_info(cfg: Union[PathLike, Mapping[str, Any]]) -> dict:
    import json

    if isinstance(cfg, Mapping):
        data = dict(cfg)
    else:
        p = Path(cfg)
        p = p / CONFIG_FILE if p.is_dir() else p
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"model config {str(p)!r} does not exist; pass a train run's config.json or its "
                                  "directory as {option}", option="model_config", value=...) from None
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"model config {str(p)!r} is not valid JSON ({exc})") from None
    info = data.get("model_info", data)
    if not isinstance(info, Mapping) or not isinstance(info.get("name"), str) or not isinstance(info.get("config"), Mapping):
        raise CheckpointError("the model config has no model name and constructor config ({'name', 'config'} or a run's "
                              "config.json with 'model_info'); pass a train run's config.json as {option}",
                              option="model_config", value=...)
    return {"name": info["name"], "config": dict(info["config"])}


def model_from_checkpoint(ckpt: Union[PathLike, Checkpoint], model_config: Union[PathLike, Mapping, None]) -> ModelSource:
    """Rebuild a CTR model from its config and load ``ckpt`` into it (compressed tables become lookup modules).

    Raises:
        CheckpointError: unreadable checkpoint/config, or a checkpoint that does not fit the model.
    """
    from ..models import build_model

    ck = ckpt if isinstance(ckpt, Checkpoint) else load_checkpoint(ckpt)
    info = _read_model_info(model_config) if model_config is not None else ck.model_info
    if not info:
        raise CheckpointError("the checkpoint carries no model name/config; pass a train run's config.json as {option}",
                              option="model_config", value=...)
    info = _read_model_info(info)
    model = load_model_state(build_model(info["name"], **info["config"]), ck).eval()
    num_dense = int(getattr(model, "num_dense", 0))
    num_fields = len(info["config"].get("vocab_sizes", []))
    example = (torch.zeros(2, num_dense), torch.zeros(2, num_fields, dtype=torch.int64))
    return ModelSource(model, example, ["dense", "sparse"])


def model_tables(model: nn.Module) -> dict[str, list[str]]:
    """The embedding tables of ``model``: first name → every name it is registered under."""
    seen: dict[int, str] = {}
    out: dict[str, list[str]] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        if name and table_kind(mod) is not None:
            first = seen.setdefault(id(mod), name)
            out.setdefault(first, []).append(name)
    return out


def swap_tables(model: nn.Module, make) -> tuple[nn.Module, dict[str, nn.Module]]:
    """A copy of ``model`` with each table replaced by ``make(name, table)``; returns ``(copy, originals)``.

    ``model`` is left as it is, and its tables are never copied (the deep copy meets their replacements
    in its memo), so the copy costs the dense layers only.
    """
    originals = {first: model.get_submodule(first) for first in model_tables(model)}
    memo = {id(table): make(first, table) for first, table in originals.items()}
    return copy.deepcopy(model, memo), originals


def select_tables(modules: Mapping[str, nn.Module], tables: Union[str, Sequence[str], None]) -> dict[str, nn.Module]:
    """The tables named by ``tables`` (a full-match regex or a list of names); all when None.

    Raises:
        ConfigError: a bad regex, or nothing selected.
    """
    if tables is None:
        chosen = dict(modules)
    elif isinstance(tables, str):
        try:
            pat = re.compile(tables)
        except re.error as exc:
            raise ConfigError(f"tables={tables!r} is not a valid regex ({exc})") from None
        chosen = {k: m for k, m in modules.items() if pat.fullmatch(k)}
    else:
        missing = [t for t in tables if t not in modules]
        if missing:
            raise ConfigError(f"tables {missing} are not in the source; it has {sorted(modules)[:10]}")
        chosen = {k: modules[k] for k in tables}
    if not chosen:
        raise ConfigError(f"no table to export (tables={tables!r}; the source has {sorted(modules)[:10]}); "
                          "fix {option}", option="tables", value=...)
    return chosen


def resolve_source(src: Any, *, model_config: Any = None, example_inputs: Optional[tuple] = None,
                   tables: Any = None) -> tuple[Union[dict[str, nn.Module], ModelSource], Optional[Path]]:
    """``(tables or ModelSource, path of the source)`` for any accepted ``src`` (see the module docstring).

    Raises:
        CheckpointError: a missing file or run directory without its files.
        ConfigError: an ``nn.Module`` model without ``example_inputs``, or a bad table selection.
    """
    if isinstance(src, nn.Module):
        if table_kind(src) is not None:
            return select_tables({"table": src}, tables), None
        if example_inputs is None:
            raise ConfigError(f"exporting a whole {type(src).__name__} needs example inputs; pass {{option}}",
                              option="example_inputs", value=...)
        names = [f"input_{i}" for i in range(len(example_inputs))]
        return ModelSource(src.eval(), tuple(example_inputs), names, ["output"]), None
    if isinstance(src, Mapping):
        return select_tables(dict(src), tables), None
    path = None if isinstance(src, Checkpoint) else Path(src)
    if path is not None and path.is_dir():
        if not (path / MODEL_FILE).is_file():
            raise CheckpointError(f"{str(path)!r} is a directory without {MODEL_FILE}; pass a train run directory "
                                  "or a checkpoint file")
        cfg = model_config if model_config is not None else path
        return model_from_checkpoint(path / MODEL_FILE, cfg), path
    if path is not None and not path.is_file():
        raise CheckpointError(f"{str(path)!r}: no such file or run directory")
    if model_config is not None:
        return model_from_checkpoint(src, model_config), path
    ck = src if isinstance(src, Checkpoint) else load_checkpoint(path)
    return select_tables(load_lookup_modules(ck), tables), path if path is not None else ck.path


def resolve_output(src_path: Optional[Path], dst: Optional[PathLike], suffix: str, force: bool) -> Path:
    """Default output beside the source (``<stem>.<suffix>``, ``<run dir>/model.<suffix>``); never the input.

    Raises:
        ConfigError: no ``dst`` for an in-memory source. CheckpointError: the output exists (without
            ``force``), is the input, or is a directory.
    """
    if dst is None:
        if src_path is None:
            raise ConfigError("an in-memory source has no default output path; pass {option}", option="dst", value=...)
        base = src_path / "model" if src_path.is_dir() else src_path.with_name(src_path.name.split(".safetensors")[0])
        dst = base.with_name(base.name + "." + suffix)
    dst = Path(dst)
    if src_path is not None and dst.exists() and dst.resolve() == Path(src_path).resolve():
        raise CheckpointError(f"output {dst} is the input; choose another {{option}}", option="dst", value=...)
    if dst.is_dir():
        raise CheckpointError(f"output {dst} is a directory; name a file as {{option}}", option="dst", value=...)
    if dst.exists() and not force:
        raise CheckpointError(f"output {dst} already exists; pass {{option}} to overwrite it", option="force")
    return dst


__all__ = ["ModelSource", "model_from_checkpoint", "model_tables", "swap_tables", "select_tables", "resolve_source",
           "resolve_output"]
