"""Optimality of attacks against the per-clip best (evaluation.optimality) on hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation import stats
from evaluation.optimality import optimality

pytestmark = pytest.mark.timeout(60)
NAN, INF = math.nan, math.inf


def test_shares_excess_and_misses_by_hand() -> None:
    # clip 0 outside the base set; clip 4 broken by nobody; best per base clip: 1.0, 2.0, 0.5, inf, 3.0
    table = optimality({
        "a": np.array([NAN, 1.0, 2.0, 0.52, INF, INF]),   # within 5 % on clips 1-3, misses clip 5
        "b": np.array([NAN, 1.2, 2.2, 0.5, INF, 3.0]),    # within 5 % on clips 3 and 5
    }).set_index("attack")
    assert table.loc["a", "best_known"] == table.loc["b", "best_known"] == 4
    assert table.loc["a", "broken"] == 3 and table.loc["a", "missed"] == 1
    assert table.loc["a", "optimal_share"] == pytest.approx(3 / 4)
    assert table.loc["b", "optimal_share"] == pytest.approx(2 / 4)
    assert table.loc["a", "mean_excess"] == pytest.approx((0 + 0 + 0.04) / 3)
    assert table.loc["b", "median_excess"] == pytest.approx(0.05)  # median of 0.2, 0.1, 0, 0
    low, high = stats.wilson_interval(0.75, 4)
    assert (table.loc["a", "optimal_share_ci_low"], table.loc["a", "optimal_share_ci_high"]) == pytest.approx((low, high))


def test_tolerance_and_clips_nobody_broke() -> None:
    table = optimality({"a": np.array([1.0, 1.0]), "b": np.array([1.06, INF])}, tolerance=0.05).set_index("attack")
    assert table.loc["b", "optimal_share"] == 0 and table.loc["b", "missed"] == 1
    loose = optimality({"a": np.array([1.0, 1.0]), "b": np.array([1.06, INF])}, tolerance=0.1).set_index("attack")
    assert loose.loc["b", "optimal_share"] == pytest.approx(0.5)
    nobody = optimality({"a": np.array([INF, NAN])}).iloc[0]
    assert nobody["best_known"] == 0 and math.isnan(nobody["optimal_share"]) and math.isnan(nobody["mean_excess"])


def test_attacks_must_share_clips_and_base_set() -> None:
    with pytest.raises(ValueError, match="same clips"):
        optimality({"a": np.array([1.0, NAN]), "b": np.array([1.0, 2.0])})
    with pytest.raises(ValueError, match="same clips"):
        optimality({"a": np.array([1.0]), "b": np.array([1.0, 2.0])})
    with pytest.raises(ValueError, match="at least one"):
        optimality({})
