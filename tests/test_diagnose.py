"""diagnose: the §3 update formulas against a direct two-step computation, spectra, and the checkpoint command."""

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import mlet_compress as mc
from mlet_compress.cli.app import app
from mlet_compress.diagnose import Diagnosis, diagnose_checkpoint, diagnose_table
from mlet_compress.ops.spectra import (collapsed_singular_values, cross_category_share, lr_amplification,
                                       singular_values, update_terms)


def _factors(n=12, d=3, k=5, seed=4):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, k, generator=g, dtype=torch.float64), torch.randn(d, k, generator=g, dtype=torch.float64),
            torch.randn(n, d, generator=g, dtype=torch.float64))


def test_update_terms_match_one_sgd_step_exactly():
    """An SGD step on (T, P) with dL/dW = G moves W by -eta (local + cross) + eta^2 G P T^T G, exactly."""
    T, P, G = _factors()
    eta = 0.3
    Tv, Pv = T.clone().requires_grad_(True), P.clone().requires_grad_(True)
    (Tv @ Pv.T * G).sum().backward()  # a loss whose gradient w.r.t. W = T P^T is G
    T1, P1 = T - eta * Tv.grad, P - eta * Pv.grad
    dW = T1 @ P1.T - T @ P.T
    local, cross = update_terms(T, P, G)
    assert torch.allclose(dW, -eta * (local + cross) + eta ** 2 * G @ P @ T.T @ G, atol=1e-12, rtol=0)
    # the split: row i's local term uses only g_i; zeroing the other rows' gradients leaves it unchanged
    G_i = torch.zeros_like(G)
    G_i[5] = G[5]
    local_i, cross_i = update_terms(T, P, G_i)
    assert torch.equal(local_i[5], local[5]) and torch.allclose(cross_i[5], torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(cross[5], sum(float(T[5] @ T[j]) * G[j] for j in range(12) if j != 5), atol=1e-12)


def test_spectra_and_lr_amplification():
    T, P, _ = _factors(n=40, d=4, k=9)
    assert torch.allclose(singular_values(P), torch.linalg.svdvals(P), atol=1e-10)
    assert torch.allclose(singular_values(T), torch.linalg.svdvals(T), atol=1e-10)
    assert torch.allclose(collapsed_singular_values(T, P), torch.linalg.svdvals(T @ P.T), atol=1e-9)
    amp = lr_amplification(P)
    ev = torch.linalg.eigvalsh(P @ P.T)  # = the non-zero eigenvalues of P^T P
    nz = torch.linalg.eigvalsh(P.T @ P)[-4:]
    assert torch.allclose(ev, nz, atol=1e-10)
    assert amp["top"] == pytest.approx(float(ev[-1]), rel=1e-10) and amp["min"] == pytest.approx(float(ev[0]), rel=1e-10)
    assert amp["mean"] == pytest.approx(float(P.pow(2).sum()) / 4, rel=1e-10)  # tr(P P^T) / d


def test_cross_category_share_matches_the_dense_computation():
    T, P, _ = _factors(n=50, d=4, k=8, seed=2)
    rows = torch.tensor([1, 7, 20, 33])
    grads = torch.randn(4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    G = torch.zeros(50, 4, dtype=torch.float64)
    G[rows] = grads
    local, cross = update_terms(T, P, G)
    want = float(cross.pow(2).sum() / (local.pow(2).sum() + cross.pow(2).sum()))
    got = cross_category_share(T, P, rows, grads, chunk_rows=7)  # chunks do not change the sums
    assert got["share"] == pytest.approx(want, rel=1e-12)
    want_t = float(cross[rows].pow(2).sum() / (local[rows].pow(2).sum() + cross[rows].pow(2).sum()))
    assert got["touched_share"] == pytest.approx(want_t, rel=1e-12) and got["rows_moved"] == 50
    with pytest.raises(mc.ConfigError, match="distinct"):
        cross_category_share(T, P, torch.tensor([1, 1]), grads[:2])


def test_a_scaled_projection_scales_the_amplification():
    T, P, _ = _factors(n=30, d=4, k=8)
    a, b = diagnose_table("t", T, P, rows=10), diagnose_table("t", T, 2 * P, rows=10)
    assert b.lr_amplification["mean"] == pytest.approx(4 * a.lr_amplification["mean"], rel=1e-12)
    assert b.cross_category["sample_rows"] == 10


def test_diagnose_checkpoint_and_cli(tmp_path):
    torch.manual_seed(0)
    model = nn.ModuleDict({"user": nn.Embedding(200, 4), "tiny": nn.Embedding(5, 1)})
    mc.wrap(model, mc.MLETConfig(inner_dim=16))
    src = mc.save_checkpoint(model, tmp_path / "f.safetensors")
    diag = diagnose_checkpoint(src, rows=32)
    (t,) = diag.tables
    assert (t.name, t.n, t.k, t.d) == ("user", 200, 16, 4) and "tiny" in diag.skipped
    want = torch.linalg.svdvals(model["user"].proj.detach().double())
    assert t.proj_singular_values == pytest.approx(want.tolist(), rel=1e-9)
    res = CliRunner().invoke(app, ["diagnose", str(src), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["tables"][0]["lr_amplification"] == pytest.approx(t.lr_amplification)
    mc.collapse(model)
    flat = mc.save_checkpoint(model, tmp_path / "m.safetensors")
    with pytest.raises(mc.TargetingError, match="keep_factors=True"):
        diagnose_checkpoint(flat)


def test_spectra_plot_is_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="plots need the [plots] extra")
    from mlet_compress.diagnose import plot_spectra

    T, P, _ = _factors(n=30, d=4, k=8)
    diag = Diagnosis("x", [diagnose_table("t", T, P, rows=5)], {})
    png = plot_spectra(diag, tmp_path / "s.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
