"""Run directories: files and metrics.json keys, no silent overwrite, eval equality, resume, compare."""

from __future__ import annotations

import dataclasses
import importlib
import json

import pytest
import torch


from mlet_compress import LowRankConfig, QuantConfig, compress_, load_checkpoint, load_model_state, save_checkpoint
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
    assert res.summary["best_variant"] == max(res.rows[:2], key=lambda r: r["val_score"])["variant"]
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


#: How far each post-training stage may move this model's test AUC. Measured: int8 per table 1.1e-4, SVD to
#: rank 3 of d = 4: 4.0e-4; a stage that zeroes every deep embedding table (the broken case below): 1.7e-2.
AUC_TOL = {"svd": 2e-3, "quantized": 1e-3}


def _compressed_auc_change(run, tmp_path, stage):
    """Compress the trained model with ``stage``, save, evaluate the checkpoint: (eval result, ΔAUC, report)."""
    res, out = run
    ckpt = load_checkpoint(out / "model.safetensors")
    model = build_model(ckpt.model_info["name"], **ckpt.model_info["config"])
    load_model_state(model, ckpt)
    if stage == "broken":  # a "stage" that loses every deep embedding table
        with torch.no_grad():
            for mod in model.modules():
                if isinstance(mod, (torch.nn.Embedding, torch.nn.EmbeddingBag)) and mod.embedding_dim > 1:
                    mod.weight.zero_()
        rep = None
    else:
        rep = compress_(model, LowRankConfig(rank=3) if stage == "svd" else QuantConfig(bits=8))
    path = save_checkpoint(model, tmp_path / f"{stage}.safetensors", model_info=ckpt.model_info, extra=ckpt.extra)
    ev = evaluate_checkpoint(path, device="cpu")
    return ev, ev["test"]["auc"] - res.metrics["test"]["auc"], rep


@pytest.mark.parametrize("stage", ["svd", "quantized"])
def test_eval_of_compressed_checkpoints(run, splits, tmp_path, stage):
    """A checkpoint compressed after training (truncated SVD / int8) evaluates on the same test rows and
    moves the test AUC by no more than that stage can (AUC_TOL)."""
    ev, delta, rep = _compressed_auc_change(run, tmp_path, stage)
    assert ev["rows"] == len(splits.test) and set(ev["tables"]) >= {"lowrank" if stage == "svd" else "quantized"}
    if stage == "svd":  # truncated: rank < d, and the tables really lost something
        assert rep and all(r["rank"] == 3 < r["dim"] for r in rep.values())
        assert max(r["rel_error"] for r in rep.values()) > 0.01
    assert abs(delta) <= AUC_TOL[stage], delta


def test_a_broken_stage_fails_the_compressed_eval_check(run, tmp_path):
    """The tolerances above can fail: zeroing every deep embedding table moves the AUC far past them."""
    _, delta, _ = _compressed_auc_change(run, tmp_path, "broken")
    assert abs(delta) > 5 * max(AUC_TOL.values()), delta


def _fake_train(val_auc: dict, val_logloss: dict):
    """A stand-in for ``train`` returning fixed metrics per (variant, seed): the selection rules are then known."""
    from mlet_compress.training.run import TrainResult

    def fake(vcfg, splits, work_dir=None, info=None, *, resume=False, callback=None, **kw):
        key = (vcfg.variant, vcfg.seed)
        auc, ll = val_auc[key], val_logloss[key]
        test = {"auc": 0.6 if auc is None else auc - 0.01, "logloss": 0.6 if ll is None else ll + 0.01, "pr_auc": 0.5}
        m = {"variant": vcfg.variant, "test": test, "set_a": {"pr_auc": 0.4, "auc": 0.6}, "set_b": {"pr_auc": 0.3, "auc": 0.6},
             "val": {} if auc is None else {"auc": auc, "logloss": ll}, "selected_epoch": 1,
             "params": {"embedding_training": 10, "embedding_inference": 5}}
        return TrainResult(config=vcfg, metrics=m, model=torch.nn.Module())
    return fake


VARIANTS = ("single d=4", "single d=4 emb-lr×4", "single d=4 emb-lr×10", "MLET k=8 d=4")


@pytest.mark.parametrize("select", ["auc", "logloss"])
def test_compare_picks_the_best_baseline_on_validation(monkeypatch, select):
    """A known winner: ×10 has the best validation AUC, ×4 the best validation logloss; MLET is never a baseline."""
    cmp = importlib.import_module("mlet_compress.training.compare")  # the package re-exports a function of that name

    auc = {(VARIANTS[0], 0): 0.70, (VARIANTS[1], 0): 0.72, (VARIANTS[2], 0): 0.74, (VARIANTS[3], 0): 0.99}
    ll = {(VARIANTS[0], 0): 0.50, (VARIANTS[1], 0): 0.45, (VARIANTS[2], 0): 0.47, (VARIANTS[3], 0): 0.01}
    monkeypatch.setattr(cmp, "train_in", _fake_train(auc, ll))
    res = cmp.compare(dataclasses.replace(cfg(model="dlrm", inner_dim=8), select=select, seed=0), splits=object(),
                      emb_lr_mults=[1, 4, 10])
    assert [r["variant"] for r in res.rows] == list(VARIANTS)
    assert res.summary["best_variant"] == (VARIANTS[2] if select == "auc" else VARIANTS[1])
    best = next(r for r in res.rows if r["variant"] == res.summary["best_variant"])
    assert res.summary["vs_best"]["auc"] == pytest.approx(res.rows[3]["auc"] - best["auc"])


@pytest.mark.parametrize("select", ["auc", "logloss"])
def test_compare_seeds_averages_and_picks_the_best_mean(monkeypatch, select):
    """Means and population stds over seeds; the best baseline by mean validation score (not by one seed);
    a baseline without a validation score is never best."""
    cmp = importlib.import_module("mlet_compress.training.compare")  # the package re-exports a function of that name

    auc = {(VARIANTS[0], 1): 0.70, (VARIANTS[0], 2): 0.72, (VARIANTS[1], 1): 0.80, (VARIANTS[1], 2): 0.60,
           (VARIANTS[2], 1): None, (VARIANTS[2], 2): None, (VARIANTS[3], 1): 0.75, (VARIANTS[3], 2): 0.77}
    ll = {(VARIANTS[0], 1): 0.52, (VARIANTS[0], 2): 0.50, (VARIANTS[1], 1): 0.40, (VARIANTS[1], 2): 0.70,
          (VARIANTS[2], 1): None, (VARIANTS[2], 2): None, (VARIANTS[3], 1): 0.45, (VARIANTS[3], 2): 0.47}
    monkeypatch.setattr(cmp, "train_in", _fake_train(auc, ll))
    out = cmp.compare_seeds(dataclasses.replace(cfg(model="dlrm", inner_dim=8), select=select), [1, 2],
                            splits=object(), emb_lr_mults=[1, 4, 10])
    rows = {r["variant"]: r for r in out["rows"]}
    assert out["seeds"] == [1, 2] and list(rows) == list(VARIANTS)
    assert rows[VARIANTS[0]]["val_score"] == pytest.approx(0.71 if select == "auc" else 0.51)
    assert rows[VARIANTS[0]]["auc_std"] == pytest.approx(0.01)  # population std of 0.69, 0.71
    assert rows[VARIANTS[2]]["val_score"] is None
    # ×4 wins one seed by far but loses on the mean: baseline ×1 is best by mean (0.71 > 0.70; 0.51 < 0.55)
    assert out["summary"]["best_variant"] == VARIANTS[0]
    assert out["summary"]["vs_best"]["auc"] == pytest.approx(rows[VARIANTS[3]]["auc"] - rows[VARIANTS[0]]["auc"])
