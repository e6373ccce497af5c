"""Run directories: files and metrics.json keys, no silent overwrite, eval equality, resume, compare."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from torch import nn

from mlet_compress import QuantConfig, compress_, load_checkpoint, load_model_state, save_checkpoint
from mlet_compress.layers.lowrank import to_low_rank
from mlet_compress.targeting import find_modules, replace_module
from mlet_compress.errors import CheckpointError, ConfigError
from mlet_compress.models import build_model
from mlet_compress.train import (DataSpec, TrainConfig, compare, evaluate_checkpoint, load_data, resume_run,
                                 train)

TINY = {"num_rows": 3000, "num_fields": 4, "min_vocab": 10, "max_vocab": 300, "num_dense": 2}
SPEC = DataSpec(format="synthetic", synthetic=TINY)


@pytest.fixture(scope="module")
def splits():
    return load_data(SPEC)


def cfg(**kw) -> TrainConfig:
    base = dict(model="deepfm", dim=4, inner_dim=8, batch_size=64, device="cpu", data=SPEC, max_steps_per_epoch=8)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def run(tmp_path_factory, splits):
    out = tmp_path_factory.mktemp("run") / "mlet"
    res = train(cfg(keep_factors=True, epochs=2, patience=None), splits, out=out)
    return res, out


def test_run_directory_files_and_metrics_keys(run):
    res, out = run
    for name in ("model.safetensors", "factors.safetensors", "metrics.json", "config.json", "preprocessor.json",
                 "state.pt"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    for path in ("test.auc", "test.logloss", "test.pr_auc", "set_a.pr_auc", "set_b.pr_auc", "set_a.auc",
                 "val.auc", "val.logloss", "params.embedding_training", "params.embedding_inference"):
        node = m
        for part in path.split("."):
            node = node[part]
        assert isinstance(node, (int, float)), path
    assert m["selected_epoch"] in (1, 2) and m["epochs_run"] == 2 and len(m["history"]) == 2
    assert m["params"]["embedding_training"] > m["params"]["embedding_inference"]
    assert m["test"] == pytest.approx(res.metrics["test"])
    saved = json.loads((out / "config.json").read_text())
    assert TrainConfig.from_dict(saved["train_config"]) == res.config


def test_saved_model_is_the_plain_architecture(run):
    res, out = run
    ckpt = load_checkpoint(out / "model.safetensors")
    assert ckpt.model_info["name"] == "deepfm"
    assert {t.kind for t in ckpt.tables.values()} == {"plain"}
    model = build_model(ckpt.model_info["name"], **ckpt.model_info["config"])
    model.load_state_dict(ckpt.tensors, strict=True)
    factors = load_checkpoint(out / "factors.safetensors")
    assert {t.kind for t in factors.tables.values()} == {"mlet", "plain"}  # 1-dim linear tables stay plain
    assert ckpt.extra["preprocessor"] == json.loads((out / "preprocessor.json").read_text())


def test_existing_run_directory_is_not_overwritten(run, splits):
    _, out = run
    before = (out / "metrics.json").read_bytes()
    with pytest.raises(ConfigError, match="not empty"):
        train(cfg(), splits, out=out)
    assert (out / "metrics.json").read_bytes() == before


def test_eval_of_collapsed_checkpoint_equals_training_metrics(run, splits):
    """The collapsed model.safetensors and the factors both reproduce the uncollapsed test metrics."""
    res, out = run
    for name in ("model.safetensors", "factors.safetensors"):
        ev = evaluate_checkpoint(out / name, device="cpu")
        assert ev["rows"] == len(splits.test)
        for key in ("auc", "logloss", "pr_auc"):
            assert ev["test"][key] == pytest.approx(res.metrics["test"][key], abs=1e-6), (name, key)
        for s in ("set_a", "set_b"):
            assert ev[s]["pr_auc"] == pytest.approx(res.metrics[s]["pr_auc"], abs=1e-6), (name, s)


def test_resume_continues_to_the_same_result(tmp_path, splits):
    """2 epochs in one go == 1 epoch, then --resume with epochs=2 (same weights, same metrics)."""
    full = train(cfg(epochs=2, patience=None), splits, out=tmp_path / "full")
    part = tmp_path / "part"
    train(cfg(epochs=1, patience=None), splits, out=part)
    resumed = train(cfg(epochs=2, patience=None), splits, out=part, resume=True)
    assert resumed.metrics["epochs_run"] == 2
    assert resumed.metrics["test"] == full.metrics["test"]
    for (k1, v1), (k2, v2) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    with pytest.raises(ConfigError, match="differ"):
        train(cfg(epochs=3, dim=8), splits, out=part, resume=True)


def test_resume_run_reads_the_saved_config(tmp_path, splits):
    """resume_run(dir, epochs=...) == train(saved config with those epochs, resume=True); bad directories fail clearly."""
    full = train(cfg(epochs=3, patience=None), splits, out=tmp_path / "full")
    part = tmp_path / "part"
    train(cfg(epochs=1, patience=None), splits, out=part)
    resumed = resume_run(part, epochs=3, patience=5)
    assert resumed.config.patience == 5 and resumed.config.epochs == 3
    assert resumed.metrics["epochs_run"] == 3 and resumed.metrics["test"] == full.metrics["test"]
    assert json.loads((part / "config.json").read_text())["train_config"]["epochs"] == 3
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="no train_config"):
        resume_run(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="does not exist"):
        resume_run(tmp_path / "missing")
    with pytest.raises(ConfigError, match="epochs"):
        resume_run(part, epochs=0)


def _as_0_1_0(train_config: dict) -> dict:
    """A 0.1.0 ``train_config``: MLET's k under ``mlet_k``, and a data spec without ``numeric_transform``."""
    old = {("mlet_k" if k == "inner_dim" else k): v for k, v in train_config.items()}
    old["data"] = {k: v for k, v in old["data"].items() if k != "numeric_transform"}
    return old


def test_a_0_1_0_run_directory_still_resumes_and_evaluates(tmp_path, splits):
    """config.json / state.pt written by 0.1.0 (key ``mlet_k``) resume to the same result and evaluate."""
    full = train(cfg(epochs=2, patience=None), splits, out=tmp_path / "full")
    old = tmp_path / "old"
    one = train(cfg(epochs=1, patience=None), splits, out=old)
    run_cfg = json.loads((old / "config.json").read_text())
    run_cfg["train_config"] = _as_0_1_0(run_cfg["train_config"])
    (old / "config.json").write_text(json.dumps(run_cfg))
    state = torch.load(old / "state.pt", weights_only=True)
    state["config"] = json.dumps(_as_0_1_0(json.loads(state["config"])))
    torch.save(state, old / "state.pt")
    assert TrainConfig.from_dict(run_cfg["train_config"]) == one.config
    # a checkpoint without embedded run metadata: eval reads the 0.1.0 config.json beside it
    ckpt = load_checkpoint(old / "model.safetensors")
    model = build_model(ckpt.model_info["name"], **ckpt.model_info["config"])
    model.load_state_dict(ckpt.tensors, strict=True)
    save_checkpoint(model, old / "bare.safetensors", model_info=ckpt.model_info)
    assert evaluate_checkpoint(old / "bare.safetensors", device="cpu")["test"] == pytest.approx(one.metrics["test"])
    resumed = resume_run(old, epochs=2)
    assert resumed.config.inner_dim == 8 and resumed.metrics["inner_dim"] == 8
    assert resumed.metrics["epochs_run"] == 2 and resumed.metrics["test"] == full.metrics["test"]
    with pytest.raises(ConfigError, match="both 'mlet_k'"):
        TrainConfig.from_dict({**one.config.to_dict(), "mlet_k": 8})


def test_compare_with_tuned_baselines(tmp_path, splits):
    res = compare(cfg(model="dlrm", inner_dim=8, max_steps_per_epoch=5), splits, emb_lr_mults=[1, 4], out=tmp_path / "cmp")
    assert [r["variant"] for r in res.rows] == ["single d=4", "single d=4 emb-lr×4", "MLET k=8 d=4"]
    assert [r["role"] for r in res.rows] == ["baseline", "tuned", "mlet"]
    base, _, mlet = res.rows
    assert mlet["emb_params_inference"] == base["emb_params_inference"] < mlet["emb_params_training"]
    assert res.summary["best_variant"] in ("single d=4", "single d=4 emb-lr×4")
    assert res.summary["vs_paper"]["auc"] == pytest.approx(mlet["auc"] - base["auc"])
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["variant"] for r in saved["rows"]] == [r["variant"] for r in res.rows]
    assert all((tmp_path / "cmp" / d / "model.safetensors").is_file() for d in ("single_d4", "single_d4_lr4", "mlet_k8_d4"))


def test_hashed_training_saves_a_hashed_checkpoint(tmp_path, splits):
    res = train(cfg(hash_ratio=0.5, hash_min_rows=100, max_steps_per_epoch=3), splits, out=tmp_path / "h")
    ckpt = load_checkpoint(tmp_path / "h" / "model.safetensors")
    hashed = [t for t in ckpt.tables.values() if t.hash]
    assert hashed and all(t.num_embeddings < t.hash.original_num_embeddings for t in hashed)
    ev = evaluate_checkpoint(tmp_path / "h" / "model.safetensors", device="cpu")
    assert ev["test"]["auc"] == pytest.approx(res.metrics["test"]["auc"], abs=1e-6)


def test_select_logloss_picks_the_lowest_validation_logloss(tmp_path, splits):
    res = train(dataclasses.replace(cfg(epochs=3, patience=None), select="logloss"), splits)
    hist = res.metrics["history"]
    best = min(hist, key=lambda r: r["val"]["logloss"])["epoch"]
    assert res.metrics["selected_epoch"] == best
    assert res.metrics["val"]["logloss"] == hist[best - 1]["val"]["logloss"]


@pytest.mark.parametrize("stage", ["svd", "quantized"])
def test_eval_of_compressed_checkpoints(run, splits, tmp_path, stage):
    """A checkpoint compressed after training (SVD / int8) evaluates on the same test rows; at full rank
    SVD is exact and int8 moves the metrics by little."""
    res, out = run
    ckpt = load_checkpoint(out / "model.safetensors")
    model = build_model(ckpt.model_info["name"], **ckpt.model_info["config"])
    load_model_state(model, ckpt)
    if stage == "svd":  # full rank, below the stage (whose policy skips tables a rank-d fit cannot shrink)
        for found in find_modules(model, (nn.Embedding,)):
            if found.module.embedding_dim > 1:
                replace_module(model, found.names, to_low_rank(found.module, rank=found.module.embedding_dim))
    else:
        compress_(model, QuantConfig(bits=8))
    path = save_checkpoint(model, tmp_path / f"{stage}.safetensors", model_info=ckpt.model_info, extra=ckpt.extra)
    ev = evaluate_checkpoint(path, device="cpu")
    assert ev["rows"] == len(splits.test) and set(ev["tables"]) >= {"lowrank" if stage == "svd" else "quantized"}
    tol = 1e-5 if stage == "svd" else 0.02  # rank 4 = d: exact up to round-off
    assert ev["test"]["auc"] == pytest.approx(res.metrics["test"]["auc"], abs=tol)
