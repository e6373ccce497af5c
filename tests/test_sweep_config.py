"""Sweep options: stage strings, the grid of cells, roles and ids, and the option fingerprint."""

import pytest

from mlet_compress import ConfigError, LowRankConfig, QuantConfig
from mlet_compress.sweep import SweepConfig, parse_stage
from mlet_compress.sweep.cells import Cell


@pytest.mark.parametrize("text, expected", [
    ("q8", [QuantConfig(bits=8)]),
    ("q4", [QuantConfig(bits=4)]),
    ("q8row", [QuantConfig(bits=8, granularity="row")]),
    ("svd:energy=0.95", [LowRankConfig(energy=0.95)]),
    ("svd:rank=2", [LowRankConfig(rank=2)]),
    ("svd:rank=2+q8", [LowRankConfig(rank=2), QuantConfig(bits=8)]),
])
def test_stage_strings_parse_into_library_configs(text, expected):
    assert parse_stage(text) == expected


@pytest.mark.parametrize("text, token", [
    ("q9", "q9"), ("q8col", "q8col"), ("svd:rnk=2", "svd:rnk=2"), ("svd:rank=two", "svd:rank=two"),
    ("svd:rank=2+q3x", "q3x"), ("svd:energy=1.5", "svd:energy=1.5"), ("svd:rank=0", "svd:rank=0"), ("hash0.5", "hash0.5"),
])
def test_malformed_stage_is_one_line_config_error_naming_the_token(text, token):
    with pytest.raises(ConfigError) as e:
        parse_stage(text)
    msg = str(e.value)
    assert f"'{token}'" in msg and "\n" not in msg


def test_chain_with_quantization_before_svd_and_empty_tokens_are_refused():
    with pytest.raises(ConfigError, match="last token"):
        parse_stage("q8+svd:rank=2")
    with pytest.raises(ConfigError, match="empty token"):
        parse_stage("svd:rank=2++q8")
    with pytest.raises(ConfigError, match="stage 'q9'"):
        SweepConfig(stages=("q8", "q9"))


def test_grid_cells_roles_and_ids():
    cfg = SweepConfig(dims=(4, 8), ks=(32,), seeds=(0, 1), tune_baseline=True, stages=("q8",), hash_ratios=(0.5,))
    cells = cfg.cells()
    # 2 dims x 2 seeds x 2 hash settings x (single + MLET) x 3 multipliers
    assert len(cells) == 48 and len({c.cell_id for c in cells}) == 48
    assert {c.role for c in cells} == {"baseline", "tuned", "mlet", "mlet-tuned"}
    c = Cell("dlrm", 8, 0, 10.0, 0.5, 2)
    assert (c.cell_id, c.role, c.variant) == ("dlrm-d8-single-lr10-h0.5-s2", "tuned", "single d=8 emb-lr×10 hash×0.5")
    tc = Cell("dlrm", 8, 32, 4.0, None, 1).train_config(cfg)
    assert (tc.inner_dim, tc.emb_lr_mult, tc.seed, tc.dim, tc.save_state) == (32, 4.0, 1, 8, False)
    # without tuning every arm trains at the paper's learning rate only
    assert {c.emb_lr_mult for c in SweepConfig(dims=(4,), ks=(32,), seeds=(0,)).cells()} == {1.0}


def test_bad_grid_options():
    for kwargs, match in [({"dims": (4, 4)}, "repeats"), ({"dims": (0,)}, "dims"), ({"models": ("nope",)}, "unknown"),
                          ({"tune_baseline": True, "emb_lr_mults": (4.0, 10.0)}, "must include 1"),
                          ({"hash_ratios": (1.5,)}, "hash_ratios"), ({"stages": ("q8", "q8")}, "repeat")]:
        with pytest.raises(ConfigError, match=match):
            SweepConfig(**kwargs)


def test_fingerprint_holds_the_options_that_change_results_but_not_the_grid():
    a = SweepConfig(dims=(4,), seeds=(0,))
    assert a.fingerprint() == SweepConfig(dims=(4, 8), seeds=(0, 1), ks=(32,)).fingerprint()
    assert a.fingerprint() != SweepConfig(dims=(4,), seeds=(0,), epochs=2).fingerprint()
    assert a.fingerprint() != SweepConfig(dims=(4,), seeds=(0,), stages=("q8",)).fingerprint()
    assert SweepConfig.from_dict(a.to_dict()) == a
