"""Training library: config, parameter groups, parameter counts, the epoch loop, every model, learning,
determinism."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from mlet_compress import MLETConfig, collapse, wrap
from mlet_compress.errors import ConfigError, NumericalError
from mlet_compress.models import MODELS, build_model
from mlet_compress.train import (DataSpec, TrainConfig, build_training_model, count_parameters, load_data,
                                 param_groups, train)
from mlet_compress.training.ddp import DistInfo, shard_indices
from mlet_compress.training.loop import FitHooks, LoopSettings, TensorData, TrainCallback, epoch_order, fit

TINY = {"num_rows": 3000, "num_fields": 4, "min_vocab": 10, "max_vocab": 300, "num_dense": 2}


@pytest.fixture(scope="module")
def tiny_splits():
    return load_data(DataSpec(format="synthetic", synthetic=TINY))


def tiny_cfg(**kw) -> TrainConfig:
    base = dict(dim=4, inner_dim=8, batch_size=64, save_state=False, device="cpu",
                data=DataSpec(format="synthetic", synthetic=TINY))
    base.update(kw)
    return TrainConfig(**base)


# ----------------------------------------------------------------------------------------- config
def test_config_defaults_follow_the_paper():
    dlrm = TrainConfig(model="dlrm").resolved()
    assert (dlrm.optimizer, dlrm.lr, dlrm.init_std, dlrm.epochs) == ("sgd", 0.2, 0.25, 1)
    for name in ("wdl", "deepfm", "xdeepfm", "dcn", "autoint", "nfm"):
        c = TrainConfig(model=name).resolved()
        assert (c.optimizer, c.lr, c.init_std) == ("adagrad", 0.02, 0.5)
    explicit = TrainConfig(model="dlrm", optimizer="adagrad", lr=0.05, init_std=0.1).resolved()
    assert (explicit.optimizer, explicit.lr, explicit.init_std) == ("adagrad", 0.05, 0.1)


@pytest.mark.parametrize("bad", [dict(dim=0), dict(inner_dim=-1), dict(optimizer="adam"), dict(lr=0.0),
                                 dict(emb_lr_mult=0), dict(select="acc"), dict(epochs=0), dict(patience=0),
                                 dict(hash_ratio=1.5), dict(batch_size=0)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**bad)


def test_config_json_round_trip_and_unknown_keys():
    cfg = tiny_cfg(emb_lr_mult=4.0, model_kwargs={"top_mlp": [8]})
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again == cfg and isinstance(again.data, DataSpec)
    with pytest.raises(ConfigError, match="unknown option"):
        TrainConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ConfigError, match="needs a data path"):
        DataSpec(format="criteo")


# ------------------------------------------------------------------------------- parameter groups
def _tiny_dlrm(sparse: bool, k: int = 0) -> nn.Module:
    torch.manual_seed(0)
    m = build_model("dlrm", vocab_sizes=[50, 30, 20], num_dense=2, embed_dim=4, sparse=sparse,
                    bottom_mlp=[8], top_mlp=[8])
    if k:
        wrap(m, MLETConfig(inner_dim=k))
    return m


def test_param_groups_split_sparse_tables_projections_and_dense():
    m = _tiny_dlrm(sparse=True, k=8)
    groups = {g["name"]: g for g in param_groups(m, lr=0.1, emb_lr_mult=4.0)}
    assert set(groups) == {"embedding_sparse", "embedding_dense", "dense"}
    assert all(p.shape[1] == 8 and p.shape[0] in (50, 30, 20) for p in groups["embedding_sparse"]["params"])
    assert [tuple(p.shape) for p in groups["embedding_dense"]["params"]] == [(4, 8)] * 3  # the projections
    assert groups["embedding_sparse"]["lr"] == pytest.approx(0.4) and groups["embedding_dense"]["lr"] == pytest.approx(0.4)
    assert groups["dense"]["lr"] == pytest.approx(0.1)
    n_all = sum(p.numel() for p in m.parameters())
    assert sum(p.numel() for g in groups.values() for p in g["params"]) == n_all
    # dense tables (sparse=False) go to the dense embedding group
    names = [g["name"] for g in param_groups(_tiny_dlrm(sparse=False), lr=0.1)]
    assert names == ["embedding_dense", "dense"]


def test_sparse_gradients_on_tables_dense_on_projections():
    m = _tiny_dlrm(sparse=True, k=8)
    out = m(torch.zeros(5, 2), torch.randint(0, 20, (5, 3)))
    out.sum().backward()
    tables = [mod for mod in m.modules() if hasattr(mod, "proj")]
    assert tables and all(t.table.grad.is_sparse and not t.proj.grad.is_sparse for t in tables)


def test_count_parameters_training_vs_inference():
    m = _tiny_dlrm(sparse=False, k=8)
    counts = count_parameters(m)
    assert counts["embedding"] == (50 + 30 + 20) * 8 + 3 * 4 * 8
    collapse(m)
    assert count_parameters(m)["embedding"] == (50 + 30 + 20) * 4


# ----------------------------------------------------------------------------------------- loop
def test_fit_selects_best_epoch_and_stops_early(tiny_splits):
    """Scripted validation AUCs 0.6, 0.7, 0.65, 0.64: patience 2 stops after epoch 4, keeps epoch 2."""
    torch.manual_seed(0)
    model = build_model("dlrm", vocab_sizes=tiny_splits.preprocessor.vocab_sizes, num_dense=2, embed_dim=4,
                        bottom_mlp=[8], top_mlp=[8])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scores = iter([0.6, 0.7, 0.65, 0.64, 0.9])
    snapshots = []

    def scripted(labels, probs):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"auc": next(scores), "logloss": 0.5, "pr_auc": 0.5}

    settings = LoopSettings(epochs=6, batch_size=256, seed=0, select="auc", patience=2, max_steps_per_epoch=2)
    st = fit(model, opt, TensorData.from_tabular(tiny_splits.train), TensorData.from_tabular(tiny_splits.val),
             settings, device=torch.device("cpu"), evaluate_fn=scripted)
    assert (st.epoch, st.best_epoch, st.stopped_early) == (4, 2, True)
    assert [r["val"]["auc"] for r in st.history] == [0.6, 0.7, 0.65, 0.64]
    for k, v in st.best_state.items():
        assert torch.equal(v, snapshots[1][k])


def test_loop_settings_validate_and_mirror_the_train_config():
    cfg = tiny_cfg(epochs=3, patience=None, select="logloss", max_steps_per_epoch=7, eval_batch_size=99, log_every=2)
    s = LoopSettings.from_config(cfg)
    assert s == LoopSettings(epochs=3, batch_size=64, seed=0, select="logloss", patience=None, max_steps_per_epoch=7,
                             eval_batch_size=99, log_every=2)
    for bad in (dict(epochs=0), dict(batch_size=0), dict(select="acc"), dict(patience=0), dict(max_steps_per_epoch=0),
                dict(eval_batch_size=0), dict(log_every=0), dict(epochs=1.5)):
        with pytest.raises(ConfigError, match="LoopSettings"):
            LoopSettings(**{"epochs": 1, "batch_size": 8, **bad})


def test_epoch_order_is_seeded_per_epoch_and_sharded():
    a = epoch_order(10, seed=3, epoch=2, info=DistInfo())
    assert torch.equal(a, epoch_order(10, seed=3, epoch=2, info=DistInfo()))
    assert not torch.equal(a, epoch_order(10, seed=3, epoch=3, info=DistInfo()))
    assert torch.equal(epoch_order(10, seed=3, epoch=2, info=DistInfo(rank=1, world_size=2)), a[1::2])


def test_fit_hooks_are_called(tiny_splits):
    torch.manual_seed(0)
    model = build_model("dlrm", vocab_sizes=tiny_splits.preprocessor.vocab_sizes, num_dense=2, embed_dim=4,
                        bottom_mlp=[8], top_mlp=[8])
    calls = {"backward": 0, "epochs": [], "steps": []}

    class Progress(TrainCallback):
        def on_step(self, step, loss, samples_per_s):
            calls["steps"].append(step)

    hooks = FitHooks(callback=Progress(), on_epoch_end=lambda st: calls["epochs"].append(st.epoch),
                     after_backward=lambda: calls.__setitem__("backward", calls["backward"] + 1))
    st = fit(model, torch.optim.SGD(model.parameters(), lr=0.1), TensorData.from_tabular(tiny_splits.train), None,
             LoopSettings(epochs=2, batch_size=64, max_steps_per_epoch=5, log_every=2), device=torch.device("cpu"),
             hooks=hooks)
    assert calls == {"backward": 10, "epochs": [1, 2], "steps": [2, 4, 5, 7, 9, 10]}
    assert (st.step, st.best_epoch) == (10, 2)  # no validation: the last epoch is kept


def test_shard_indices_cover_every_row_once_per_rank_set():
    perm = torch.randperm(11, generator=torch.Generator().manual_seed(0))
    shards = [shard_indices(perm, DistInfo(rank=r, world_size=3)) for r in range(3)]
    assert all(len(s) == 4 for s in shards)
    assert set(torch.cat(shards).tolist()) == set(range(11))


# ------------------------------------------------------------------------------------ all models
@pytest.mark.parametrize("k", [0, 8])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_trains_with_and_without_mlet(tiny_splits, name, k):
    torch.manual_seed(0)
    res = train(tiny_cfg(model=name, inner_dim=k, max_steps_per_epoch=4, log_every=1), tiny_splits)
    m = res.metrics
    assert m["history"][0]["steps"] == 4 and math.isfinite(m["history"][0]["train_loss"])
    assert 0.0 <= m["test"]["auc"] <= 1.0 and math.isfinite(m["test"]["logloss"])
    vocab = sum(tiny_splits.preprocessor.vocab_sizes)
    assert m["params"]["embedding_training"] - m["params"]["embedding_inference"] == (
        (vocab * 8 + len(tiny_splits.preprocessor.vocab_sizes) * 4 * 8) - vocab * 4 if k else 0)
    if k:  # collapsed to the plain architecture, and it predicts like the factors did
        assert not any(hasattr(mod, "proj") for mod in res.model.modules())
        assert m["collapse_max_abs_prob_diff"] < 1e-5
        state = res.model.state_dict()
        plain = build_model(name, **res.model.config)
        plain.load_state_dict(state, strict=True)


def test_mlet_updates_every_row_single_layer_only_looked_up_rows(tiny_splits):
    """Paper §3.1: one step moves every row of W = T Pᵀ under MLET, only the batch's rows otherwise."""
    sp = tiny_splits
    for k, expect_all in ((0, False), (8, True)):
        torch.manual_seed(0)
        model = build_model("dlrm", vocab_sizes=sp.preprocessor.vocab_sizes, num_dense=2, embed_dim=4, sparse=True)
        if k:
            wrap(model, MLETConfig(inner_dim=k))
        mod = [m for m in model.modules() if isinstance(m, nn.Embedding) or hasattr(m, "proj")][-1]

        def weight():
            return (mod.table @ mod.proj.T if k else mod.weight).detach().clone()

        before = weight()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        nn.functional.binary_cross_entropy_with_logits(
            model(torch.from_numpy(sp.train.dense[:8]), torch.from_numpy(sp.train.sparse[:8])),
            torch.from_numpy(sp.train.labels[:8])).backward()
        opt.step()
        moved = (weight() != before).any(dim=1)
        assert bool(moved.all()) is expect_all
        if not k:
            assert moved.sum() <= 8


# --------------------------------------------------------------------------- learning, determinism
@pytest.mark.parametrize("k", [0, 32])
def test_training_learns_on_synthetic_data(k):
    """250 steps on the synthetic generator (Bayes-optimal AUC 0.85) reach a clearly learned AUC."""
    spec = DataSpec(format="synthetic", synthetic={"num_rows": 40000, "num_fields": 6, "min_vocab": 5,
                                                   "max_vocab": 500, "target_auc": 0.85, "num_dense": 2})
    cfg = TrainConfig(model="deepfm", dim=8, inner_dim=k, batch_size=128, max_steps_per_epoch=250, save_state=False,
                      device="cpu", data=spec)
    res = train(cfg)
    assert res.metrics["test"]["auc"] > 0.7
    assert res.metrics["history"][0]["steps"] == 250


def test_same_seed_same_metrics_different_seed_different(tiny_splits):
    cfg = tiny_cfg(model="deepfm", epochs=2, max_steps_per_epoch=10, patience=None)
    a, b = train(cfg, tiny_splits), train(cfg, tiny_splits)
    for key in ("test", "set_a", "set_b", "val"):
        assert a.metrics[key] == b.metrics[key]
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    c = train(dataclasses.replace(cfg, seed=1), tiny_splits)
    assert c.metrics["test"]["logloss"] != a.metrics["test"]["logloss"]


def test_emb_lr_mult_scales_only_the_embedding_step(tiny_splits):
    """First SGD step: tables move emb_lr_mult times further, every other parameter moves identically."""
    base = tiny_cfg(model="dlrm", inner_dim=0, max_steps_per_epoch=1, optimizer="sgd")
    torch.manual_seed(base.seed)
    init = build_training_model(base.resolved(), tiny_splits, True).state_dict()
    a = train(base, tiny_splits).model.state_dict()
    b = train(dataclasses.replace(base, emb_lr_mult=4.0), tiny_splits).model.state_dict()
    n_tables = 0
    for key, v0 in init.items():
        da, db = a[key] - v0, b[key] - v0
        if key.startswith("embedding.tables."):
            n_tables += 1
            assert torch.allclose(db, 4.0 * da, rtol=1e-4, atol=1e-6) and da.abs().max() > 1e-4
        else:
            assert torch.allclose(da, db, atol=1e-7)
    assert n_tables == len(tiny_splits.preprocessor.vocab_sizes)


def test_divergence_is_a_numerical_error(tiny_splits):
    with pytest.raises(NumericalError, match="lower lr or init_std") as exc:
        train(tiny_cfg(optimizer="sgd", lr=1e30, max_steps_per_epoch=10), tiny_splits)
    from mlet_compress.cli.app import error_line

    assert "lower --lr or --init-std" in error_line(exc.value)  # the CLI names its own flags
