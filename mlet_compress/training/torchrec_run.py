"""``train(cfg)`` with ``cfg.engine == "torchrec"``: DLRM on TorchRec's ``EmbeddingBagCollection``, sharded by DMP.

The same run as the torch engine — same data and splits (:func:`~.run.load_data`), same batches (the loop
of :mod:`.loop`: every rank takes its part of each seeded global batch), validation, epoch selection,
test metrics, run-directory files and staging — with a different model and distribution:

* the model is :class:`~mlet_compress.integrations.torchrec_dlrm.TorchRecDLRM` (TorchRec's DLRM; with
  ``inner_dim > 0`` its EBC is ``mc.wrap``-ped into an ``MLETEmbeddingBagCollection``: inner k-dim tables,
  projection after pooling);
* ``DistributedModelParallel`` shards the tables (``cfg.sharding`` for every table) over the ranks of the
  ``torchrun`` job, or over a one-rank gloo group it creates itself in a plain process; the planner's plan is
  reported through ``callback.on_info`` and stored in ``metrics.json`` / ``config.json``;
* the tables train with FBGEMM's fused optimizer of the same name as ``cfg.optimizer`` (``sgd`` → EXACT_SGD,
  ``adagrad`` → EXACT_ADAGRAD, ``rowwise_adagrad`` → EXACT_ROWWISE_ADAGRAD; lr ``lr × emb_lr_mult``, eps
  1e-10 as the torch engine's), the projections and MLPs with the torch optimizer of the torch engine
  (projections at ``lr × emb_lr_mult``, per-element Adagrad for both Adagrads);
* ``model.safetensors`` (and ``factors.safetensors``) are written by
  :func:`~mlet_compress.integrations.torchrec_save.save_sharded_checkpoint`: one table at a time on rank 0.

Not supported: other models, ``hash_ratio``, ``--resume`` (no ``state.pt`` is saved), ``build_fn``.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist

from .. import MLETConfig, load_model_state, wrap
from ..errors import ConfigError
from ..integrations.torchrec_dlrm import TorchRecDLRM, plan_lines, plan_summary
from ..integrations.torchrec_model import describe_tables
from ..integrations.torchrec_save import meta_copy, save_sharded_checkpoint
from ..integrations.torchrec_shard import shard_model
from . import outputs as out_files
from .config import TrainConfig
from .ddp import DistInfo, barrier, resolve_device
from .finalize import calibration_of, checkpoint_extra, model_info, run_metrics, test_metrics
from .loop import FitHooks, LoopSettings, TrainCallback, fit, steps_per_epoch
from .optim import RowWiseAdagrad, count_parameters, memory_bytes
from .predict import TensorData, predict
from .run import TrainResult, _add_run_totals, load_data, model_kwargs

EPS = 1e-10  # torch Adagrad's and RowWiseAdagrad's default, so both engines run the same update


def check_config(cfg: TrainConfig) -> None:
    """Refuse what the TorchRec engine does not run (one line each, naming the flag).

    Raises:
        ConfigError: a model other than DLRM, or ``hash_ratio``.
    """
    if cfg.model != "dlrm":
        raise ConfigError(f"{{engine}} trains DLRM only, got model {cfg.model!r}; use {{model}} (other models train "
                          "with the default torch engine)", options={"engine": "torchrec", "model": "dlrm"})
    if cfg.hash_ratio:
        raise ConfigError("{option} is not available with the TorchRec engine; drop it or use the torch engine",
                          option="hash_ratio", value=...)


def _dense_optimizer(dmp: torch.nn.Module, cfg: TrainConfig, plan: dict[str, dict]) -> torch.optim.Optimizer:
    """The torch optimizer of everything FBGEMM's fused optimizer does not update: the projections (at
    ``lr × emb_lr_mult``), the MLPs (at ``lr``) and the tables of a data-parallel plan (compute kernel
    ``dense``: replicated, gradients all-reduced by DDP; at ``lr × emb_lr_mult``, row-wise for
    ``rowwise_adagrad``) — the torch engine's optimizer of the same name."""
    dense_tables = {t for t, p in plan.items() if p["compute_kernel"] == "dense"}
    tables, proj, rest = [], [], []
    for name, p in dmp.named_parameters():
        if not p.requires_grad:
            continue
        if "embedding_bags" in name:
            if any(f"embedding_bags.{t}." in name for t in dense_tables):
                tables.append(p)
            continue  # a sharded table: FBGEMM's fused optimizer updates it in backward()
        (proj if ".projs." in name else rest).append(p)
    lr = float(cfg.lr)
    groups = [{"params": tables, "lr": lr * cfg.emb_lr_mult, "rowwise": True},
              {"params": proj, "lr": lr * cfg.emb_lr_mult, "rowwise": False}, {"params": rest, "lr": lr, "rowwise": False}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "rowwise_adagrad":
        return RowWiseAdagrad(groups, lr=lr, eps=EPS)  # row-wise on dense tables, per-element elsewhere
    for g in groups:
        del g["rowwise"]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    return torch.optim.Adagrad(groups, lr=lr, eps=EPS)


def _memory(skel: torch.nn.Module, dmp: torch.nn.Module, dense_opt: torch.optim.Optimizer, cfg: TrainConfig) -> dict[str, int]:
    """Training bytes of the embedding parameters and their optimizer state, over all ranks (tables are
    split across ranks, not replicated): fused table state n floats (row-wise) or n×k (Adagrad), plus the
    projections' torch optimizer state."""
    params = 4 * _embedding_params(skel)
    state = 0
    for t in describe_tables(skel).values():
        width = t["inner_dim"] or t["embedding_dim"]
        state += {"sgd": 0, "rowwise_adagrad": t["num_embeddings"], "adagrad": t["num_embeddings"] * width}[cfg.optimizer] * 4
    for name, p in dmp.named_parameters():
        if ".projs." in name:
            state += sum(v.numel() * v.element_size() for v in dense_opt.state.get(p, {}).values()
                         if isinstance(v, torch.Tensor))
    return {"embedding_params": params, "embedding_optimizer_state": state}


def _embedding_params(skel: torch.nn.Module) -> int:
    """Table and projection elements of the (MLET-)EBC: n·k + d·k per MLET table, n·d per single-layer one
    (``count_parameters`` counts an MLET-EBC's inner tables only)."""
    n = 0
    for t in describe_tables(skel).values():
        k = t["inner_dim"]
        n += t["num_embeddings"] * (k or t["embedding_dim"]) + (t["embedding_dim"] * k if k else 0)
    return n


def _restore(dmp: torch.nn.Module, best: dict[str, Any]) -> None:
    """Copy the selected epoch's snapshot (``loop.update_selection``: local shards of sharded tables) back."""
    with torch.no_grad():
        for key, value in dmp.state_dict().items():
            saved = best[key]
            if isinstance(saved, list):
                for shard, t in zip(value.local_shards(), saved):
                    shard.tensor.copy_(t)
            else:
                value.copy_(saved)


def train_in_torchrec(cfg: TrainConfig, splits: Any, work_dir: Any, info: DistInfo, *,
                      callback: Optional[TrainCallback] = None) -> TrainResult:
    """One TorchRec-engine run written into ``work_dir`` (rank 0 writes; :func:`~.run.train` stages it).

    Args:
        cfg: a resolved :class:`TrainConfig` with ``engine="torchrec"``. splits: ``DataSplits`` or None.
        work_dir: where the files go (None: nothing written). info: the torchrun placement (world size 1
            in a plain process: a private one-rank gloo group is created for DMP and destroyed after).
        callback: progress hooks (rank 0); ``on_info`` gets the sharding plan, one line per table.

    Returns:
        The :class:`~.run.TrainResult`; ``model`` is the collapsed, unwrapped :class:`TorchRecDLRM` loaded
        from ``model.safetensors`` on rank 0 (None on the other ranks), the metrics are the same on every rank.

    Raises:
        ConfigError: see :func:`check_config`; a sharding type the planner cannot place (row-wise on CPU).
    """
    check_config(cfg)
    own_group = not dist.is_initialized()
    if own_group:  # DMP needs a process group, also for one process
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        return _run(cfg, splits, work_dir, info, callback or TrainCallback())
    finally:
        gc.collect()  # DMP modules hold the group: free them before it goes (docs/torchrec.md, gloo threads)
        if own_group:
            dist.destroy_process_group()
            gc.collect()


def _shard(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    widths = [c.embedding_dim for c in model.sparse_arch.embedding_bag_collection.embedding_bag_configs()]
    if cfg.is_mlet:
        widths = [cfg.inner_dim]
    min_partition = 4 if cfg.sharding == "column_wise" and all(w % 4 == 0 for w in widths) else None
    try:
        return shard_model(model, cfg.sharding, cfg.optimizer, float(cfg.lr) * cfg.emb_lr_mult, EPS, device=device,
                           min_partition=min_partition)
    except RuntimeError as exc:  # the planner's refusal, e.g. row_wise without CUDA
        reason = (str(exc).strip().splitlines() or ["no plan"])[0]
        raise ConfigError(f"{{option}} cannot be planned on {device.type}: {reason} (on CPU use table_wise, "
                          "column_wise or data_parallel)", option="sharding", value=cfg.sharding) from None


def _run(cfg: TrainConfig, splits: Any, work_dir: Any, info: DistInfo, cb: TrainCallback) -> TrainResult:
    device = resolve_device(cfg.device, info)
    if work_dir is not None and info.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
    splits = load_data(cfg.data) if splits is None else splits
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    kwargs = model_kwargs(cfg, splits, False)
    model = TorchRecDLRM(**kwargs)
    minfo = model_info(model)
    if cfg.is_mlet:
        wrap(model, MLETConfig(inner_dim=cfg.inner_dim, init_std=float(cfg.init_std), **cfg.mlet_kwargs))
    skel = meta_copy(model)  # the structure save_sharded_checkpoint writes from (DMP swaps the EBC in place)
    params_train = {"embedding": _embedding_params(skel), "total": count_parameters(skel)["total"]}
    dmp = _shard(model, cfg, device)
    plan = plan_summary(dmp)
    if info.is_main:
        for line in plan_lines(plan):
            cb.on_info(line)
    dense_opt = _dense_optimizer(dmp, cfg, plan)
    pre_dict = splits.preprocessor.to_dict()
    main_dir = work_dir if info.is_main else None
    if main_dir is not None:
        out_files.write_json(main_dir / out_files.PREPROCESSOR_FILE, pre_dict)
        out_files.write_json(main_dir / out_files.CONFIG_FILE, {
            "train_config": cfg.to_dict(), "model_info": minfo, "data_info": splits.info,
            "world_size": info.world_size, "engine": "torchrec", "sharding_plan": plan,
        })
    train_t, val_t = TensorData.from_tabular(splits.train), TensorData.from_tabular(splits.val)
    if info.is_main:
        cb.on_run_start(cfg.variant, steps_per_epoch(len(train_t), cfg.batch_size, info, cfg.max_steps_per_epoch) * cfg.epochs)
    t0 = time.perf_counter()
    st = fit(dmp, dense_opt, train_t, val_t, LoopSettings.from_config(cfg), device=device, info=info,
             hooks=FitHooks(callback=cb))
    if st.best_state is not None and st.best_epoch != st.epoch:
        _restore(dmp, st.best_state)
    st.best_state = None
    mem_train = _memory(skel, dmp, dense_opt, cfg)
    tm, probs, test_t = test_metrics(dmp, cfg, splits, device)  # every rank runs the same batches (DMP is collective)
    cal = calibration_of(dmp, cfg, splits, test_t, device) if cfg.calibrate else None
    extra = checkpoint_extra(cfg, splits, pre_dict)
    if cal is not None:
        extra["calibration"] = {k: cal[k] for k in ("temperature", "val_logloss_raw", "val_logloss")}
    if work_dir is not None and cfg.keep_factors and cfg.is_mlet:
        save_sharded_checkpoint(dmp, work_dir / out_files.FACTORS_FILE, skel, collapse_mlet=False, model_info=minfo,
                                extra=extra)
    ckpt = work_dir / out_files.MODEL_FILE if work_dir is not None else None
    if ckpt is None:  # no run directory: the collapsed model still comes back, through a temporary file
        import tempfile

        tmp = tempfile.TemporaryDirectory(prefix="mlet-torchrec-") if info.is_main else None
        ckpt = (tmp.name if tmp else ".") + "/" + out_files.MODEL_FILE
    save_sharded_checkpoint(dmp, ckpt, skel, model_info=minfo, extra=extra)
    del dmp, dense_opt, model
    gc.collect()
    inference, payload = None, None
    if info.is_main:  # the collapsed checkpoint, in the unwrapped model: what `eval` will rebuild
        inference = load_model_state(TorchRecDLRM(**kwargs), ckpt)
        inference.eval()
        diff = float(np.max(np.abs(predict(inference, test_t, cfg.eval_batch_size, device) - probs), initial=0.0))
        metrics = run_metrics(cfg, st, tm, diff if cfg.is_mlet else None, cal)
        _add_run_totals(metrics, params_train, count_parameters(inference), mem_train, memory_bytes(inference), st,
                        time.perf_counter() - t0, len(splits.train), info)
        metrics.update(engine="torchrec", sharding=cfg.sharding, sharding_plan=plan)
        if main_dir is not None:
            out_files.write_json(main_dir / out_files.METRICS_FILE, metrics)
        payload = [metrics]
    else:
        payload = [None]
    if info.world_size > 1:
        dist.broadcast_object_list(payload, src=0)
    barrier(info)
    if info.is_main:
        cb.on_run_end(cfg.variant, payload[0])
    return TrainResult(cfg, payload[0], inference, work_dir, list(st.history))


__all__ = ["train_in_torchrec", "check_config"]
