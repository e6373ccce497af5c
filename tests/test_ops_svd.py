"""Truncated SVD through the Gram matrix: Eckart–Young errors, rank selection, streaming, validation."""

import math

import pytest
import torch

from mlet_compress.errors import ConfigError, NumericalError
from mlet_compress.ops.svd import (
    gram_matrix,
    iter_projected_rows,
    low_rank_factors,
    plan_low_rank,
    select_rank,
    svd_from_gram,
)


def decaying_table(n=400, d=24, seed=0, dtype=torch.float32):
    """Random table with a spread-out spectrum (σ_i ∝ 0.8^i) so every truncation error is well above round-off."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    s = 10.0 * 0.8 ** torch.arange(d, dtype=torch.float64)
    return ((u * s) @ v.T).to(dtype)


@pytest.mark.parametrize("r", [1, 5, 12, 23])
def test_error_is_sum_of_discarded_sigma_sq_and_optimal(r):
    w = decaying_table()
    s_ref = torch.linalg.svd(w.double(), full_matrices=False).S
    opt_sq = float((s_ref[r:] ** 2).sum())  # Eckart–Young optimum
    res = low_rank_factors(w, rank=r, out_dtype=torch.float64)
    assert res.rank == r and res.A.shape == (400, r) and res.B.shape == (r, 24)
    assert res.error_sq == pytest.approx(opt_sq, rel=1e-6)
    assert res.rel_error == pytest.approx(math.sqrt(opt_sq / float((s_ref**2).sum())), rel=1e-6)
    achieved_sq = float(((w.double() - res.A @ res.B) ** 2).sum())
    assert achieved_sq == pytest.approx(opt_sq, rel=1e-6)
    torch.testing.assert_close(res.sigma, s_ref, rtol=1e-6, atol=1e-9)
    # float32 factors: error within float32 round-off of the optimum (relative on the L2 error)
    res32 = low_rank_factors(w, rank=r)
    assert res32.A.dtype == torch.float32
    achieved = float((w.double() - res32.A.double() @ res32.B.double()).norm())
    assert achieved == pytest.approx(math.sqrt(opt_sq), rel=1e-5)


def test_full_rank_is_exact():
    w = decaying_table(n=100, d=8)
    res = low_rank_factors(w, rank=8, out_dtype=torch.float64)
    assert res.error_sq == pytest.approx(0.0, abs=1e-9 * float((w.double() ** 2).sum()))
    torch.testing.assert_close(res.A @ res.B, w.double(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("energy", [0.05, 0.3, 0.5, 0.9, 0.99, 0.999999])
def test_energy_picks_smallest_sufficient_rank(energy):
    w = decaying_table()
    lam = torch.linalg.svd(w.double(), full_matrices=False).S ** 2
    cums, total = torch.cumsum(lam, 0), float(lam.sum())
    res = low_rank_factors(w, energy=energy)
    r = res.rank
    assert float(cums[r - 1]) >= energy * total * (1 - 1e-9)
    assert r == 1 or float(cums[r - 2]) < energy * total
    assert res.error_sq <= (1 - energy) * total * (1 + 1e-9)


def test_energy_one_gives_full_or_numerical_rank():
    w = decaying_table(n=200, d=16)
    assert select_rank(svd_from_gram(gram_matrix(w))[0], energy=1.0) == 16
    g = torch.Generator().manual_seed(1)  # exactly rank 3 in float64
    low = torch.randn(200, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 16, generator=g, dtype=torch.float64)
    assert select_rank(svd_from_gram(gram_matrix(low))[0], energy=1.0) == 3


def test_chunked_and_reader_gram_equal_full_gram():
    w = decaying_table(n=301, d=9)
    full = w.double().T @ w.double()
    torch.testing.assert_close(gram_matrix(w, chunk_rows=7), full, rtol=1e-12, atol=1e-10)
    reader = gram_matrix(lambda a, b: w[a:b], num_rows=301, dim=9, chunk_rows=50)
    torch.testing.assert_close(reader, full, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(gram_matrix(w.half(), chunk_rows=64), w.half().double().T @ w.half().double())


def test_streaming_projection_matches_in_memory_factors():
    w = decaying_table(n=257, d=12)
    plan = plan_low_rank(lambda a, b: w[a:b], num_rows=257, rank=4, chunk_rows=16)
    chunks = list(iter_projected_rows(lambda a, b: w[a:b], plan, num_rows=257, chunk_rows=100))
    assert [(s, e) for s, e, _ in chunks] == [(0, 100), (100, 200), (200, 257)]
    a = torch.cat([c for _, _, c in chunks])
    res = low_rank_factors(w, rank=4)
    torch.testing.assert_close(a, res.A, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(plan.B(), res.B)
    assert plan.error_sq == pytest.approx(res.error_sq, rel=1e-9)


def test_zero_table():
    res = low_rank_factors(torch.zeros(10, 4), rank=2)
    assert res.error_sq == 0.0 and res.rel_error == 0.0 and not res.A.any()
    assert low_rank_factors(torch.zeros(10, 4), energy=0.5).rank == 1


@pytest.mark.parametrize("rank", [0, 5, -1, True, 2.0])
def test_bad_rank_names_dim(rank):
    with pytest.raises(ConfigError, match="dim 4"):
        low_rank_factors(torch.randn(10, 4), rank=rank)


@pytest.mark.parametrize("energy", [0.0, -0.1, 1.5, float("nan")])
def test_bad_energy(energy):
    with pytest.raises(ConfigError, match="energy"):
        low_rank_factors(torch.randn(10, 4), energy=energy)


def test_bad_tables():
    with pytest.raises(ConfigError, match="exactly one"):
        low_rank_factors(torch.randn(10, 4))
    with pytest.raises(ConfigError, match="exactly one"):
        low_rank_factors(torch.randn(10, 4), rank=1, energy=0.5)
    with pytest.raises(ConfigError, match="not floating point"):
        low_rank_factors(torch.ones(10, 4, dtype=torch.int64), rank=1)
    with pytest.raises(ConfigError, match="0 rows"):
        low_rank_factors(torch.zeros(0, 4), rank=1)
    with pytest.raises(ConfigError, match="2-D"):
        gram_matrix(torch.zeros(4))
    with pytest.raises(ConfigError, match="num_rows"):
        gram_matrix(lambda a, b: torch.zeros(b - a, 3))
    with pytest.raises(ConfigError, match="expected 5 rows"):
        gram_matrix(lambda a, b: torch.zeros(3, 3), num_rows=5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_names_row(bad):
    w = torch.randn(40, 4)
    w[13, 2] = bad
    with pytest.raises(NumericalError, match="row 13"):
        low_rank_factors(w, rank=2, chunk_rows=8)
