"""Post-hoc temperature scaling: the fit, an over-confident model, and train -> checkpoint -> eval."""

import numpy as np
import pytest
import torch
from torch import nn

from mlet_compress import DataError, load_checkpoint
from mlet_compress.metrics import log_loss, roc_auc
from mlet_compress.train import DataSpec, TrainConfig, evaluate_checkpoint, load_data, train
from mlet_compress.training.calibration import calibrate, fit_temperature, predict_logits, scaled_probs
from mlet_compress.training.predict import TensorData


def _data(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(-1.0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.float64)
    return z, y


def test_fit_is_the_loss_minimum():
    z, y = _data()
    t = fit_temperature(3 * z, y)
    grid = np.linspace(0.5, 6, 2201)
    losses = [log_loss(y, scaled_probs(3 * z, g)) for g in grid]
    best = grid[int(np.argmin(losses))]
    assert abs(t - best) <= 0.0025 + 1e-12  # the grid step is 0.0025
    assert log_loss(y, scaled_probs(3 * z, t)) <= min(losses) + 1e-12
    assert t == pytest.approx(3.0, abs=0.15)  # the logits are 3x over-confident
    assert fit_temperature(z, y) == pytest.approx(1.0, abs=0.05)  # already calibrated: T stays near 1
    assert fit_temperature(-z, y) == 1e3  # anti-correlated logits: the largest temperature (p -> 0.5)


def test_fit_rejects_bad_input():
    for z, y in (([], []), ([0.0, np.nan], [0, 1]), ([0.0, 1.0], [0, 2]), ([0.0], [0, 1])):
        with pytest.raises(DataError):
            fit_temperature(z, y)


class _Overconfident(nn.Module):
    """A 'model' whose logit is 4x the true logit carried in the first dense feature."""

    def forward(self, dense, sparse):
        return 4.0 * dense[:, 0]


def test_calibration_lowers_val_logloss_and_keeps_auc_on_an_overconfident_model():
    z, y = _data(8000, seed=1)
    val = TensorData(torch.tensor(z, dtype=torch.float32)[:, None], torch.zeros(len(z), 1, dtype=torch.int64),
                     torch.tensor(y, dtype=torch.float32))
    model = _Overconfident()
    cal = calibrate(model, val, 1024, torch.device("cpu"))
    assert cal["temperature"] == pytest.approx(4.0, rel=0.08)
    assert cal["val_logloss"] < cal["val_logloss_raw"] - 0.05
    logits = predict_logits(model, val, 1024, torch.device("cpu"))
    assert roc_auc(y, scaled_probs(logits, cal["temperature"])) == roc_auc(y, scaled_probs(logits, 1.0))


def test_train_stores_the_temperature_and_eval_applies_it(tmp_path):
    spec = DataSpec(synthetic={"num_rows": 3000})
    splits = load_data(spec)
    cfg = TrainConfig(dim=4, inner_dim=8, epochs=1, max_steps_per_epoch=8, batch_size=64, calibrate=True, data=spec,
                      save_state=False)
    res = train(cfg, splits, out=tmp_path / "run")
    cal = res.metrics["calibration"]
    stored = load_checkpoint(tmp_path / "run" / "model.safetensors").extra["calibration"]
    assert stored["temperature"] == cal["temperature"] and cal["val_logloss"] <= cal["val_logloss_raw"]
    ev = evaluate_checkpoint(tmp_path / "run" / "model.safetensors")
    z = predict_logits(res.model, TensorData.from_tabular(splits.test), 4096, torch.device("cpu"))
    y = splits.test.labels.astype(np.float64)
    assert ev["calibration"]["temperature"] == cal["temperature"]
    assert ev["test"]["logloss"] == pytest.approx(log_loss(y, scaled_probs(z, cal["temperature"])), abs=1e-6)
    assert ev["calibration"]["logloss_raw"] == pytest.approx(log_loss(y, scaled_probs(z, 1.0)), abs=1e-6)
    assert ev["test"]["logloss"] == pytest.approx(cal["test_logloss"], abs=1e-6)
    assert ev["test"]["auc"] == pytest.approx(roc_auc(y, scaled_probs(z, 1.0)), abs=1e-9)
    assert abs(cal["temperature"] - 1.0) > 1e-3  # otherwise "applied" could not be told from "ignored"
    # an uncalibrated run has no temperature and eval reports the raw LogLoss
    plain = train(TrainConfig(dim=4, inner_dim=0, epochs=1, max_steps_per_epoch=8, batch_size=64, data=spec,
                              save_state=False), splits, out=tmp_path / "plain")
    ev = evaluate_checkpoint(tmp_path / "plain" / "model.safetensors")
    assert ev["calibration"] is None and plain.metrics["calibration"] is None
    assert ev["test"]["logloss"] == pytest.approx(plain.metrics["test"]["logloss"], abs=1e-6)
