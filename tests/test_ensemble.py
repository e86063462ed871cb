"""The per-clip worst case over an attack group (issue 18 item 1): hand-made ε* vectors and real harness runs."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from evaluation import metrics as M
from evaluation.ensemble import ENSEMBLE, broke_share, ensemble, found_by_counts, is_weak
from evaluation.harness import evaluate_attack, summarize
from evaluation.intervals import ratio_intervals
from known_eps import MinNorm, Threshold, line_victim, waves_with_thresholds

pytestmark = pytest.mark.timeout(120)
THRESHOLDS = [0.2, 0.4, 0.6, 0.8, 1.0, 1.2]
INF = math.inf


def run(attack, name: str):  # type: ignore[no-untyped-def]
    return evaluate_attack(line_victim(), attack, waves_with_thresholds(THRESHOLDS),
                           torch.zeros(len(THRESHOLDS), dtype=torch.long), eps_max=1.0, search_eps_max=2.0,
                           n_budgets=5, name=name)


def with_eps(ev, eps_star: list[float], name: str):  # type: ignore[no-untyped-def]
    """``ev`` with a hand-made ε* vector (brackets at ε*/2, so each source is recognisable)."""
    star = torch.tensor(eps_star, dtype=torch.float64)
    out = replace(ev, attack=name, eps_star=star, eps_lower=torch.where(torch.isfinite(star), star / 2, ev.search_eps_max))
    out.summary = summarize(out)
    return out


def test_smallest_eps_star_per_clip_and_who_found_it() -> None:
    base = run(Threshold(), "bim")
    a = with_eps(base, [0.3, INF, 1.5, 0.5, INF, 0.9], "bim")
    b = with_eps(base, [0.6, 0.7, INF, 0.5, INF, 0.45], "cw")
    ens, names = ensemble([a, b])
    expected = torch.tensor([0.3, 0.7, 1.5, 0.5, INF, 0.45], dtype=torch.float64)
    assert torch.equal(ens.eps_star, expected)
    assert names == ["bim", "cw", "bim", "bim", "", "cw"]  # a tie goes to the first attack of the group
    assert torch.equal(ens.eps_lower, torch.where(torch.isfinite(expected), expected / 2, torch.tensor(2.0, dtype=torch.float64)))
    assert found_by_counts(names) == {"bim": 3, "cw": 2}
    assert ens.attack == ENSEMBLE and ens.summary["fooling_auc"] == pytest.approx(M.fooling_auc(expected, 1.0))
    # FR(1.0) = 4 of 6 (0.3, 0.7, 0.5, 0.45); eps_090 needs 5.4 clips: never reached (one clip unbroken)
    assert ens.summary["fr_at_eps_max"] == pytest.approx(4 / 6)
    assert ens.summary["eps090_reached"] == 0.0
    assert ens.summary["mean_eps_star"] == pytest.approx((0.3 + 0.7 + 1.5 + 0.5 + 0.45) / 5)
    assert int(ens.total_queries.sum()) == int(a.total_queries.sum() + b.total_queries.sum())


def test_ensemble_of_real_runs_is_the_stronger_attack_and_feeds_eps_r() -> None:
    weak, strong, exact = run(Threshold(scale=0.5), "weak"), run(Threshold(scale=1.0), "strong"), run(MinNorm(), "mn")
    ens, names = ensemble([weak, strong])
    assert torch.equal(ens.eps_star, torch.minimum(weak.eps_star, strong.eps_star))
    assert set(names) <= {"strong", ""} and "strong" in names
    # the stored outputs come from the attack that decided the clip (Threshold encodes its budget as iterations)
    assert torch.equal(ens.iterations, strong.iterations)
    mixed, who = ensemble([strong, exact])  # a minimum-norm member: its eps_lower equals its eps*
    assert torch.equal(mixed.eps_star, torch.minimum(strong.eps_star, exact.eps_star))
    assert not bool(mixed.on_floor.any())
    # eps_r of two ensembles: the same arithmetic as for one attack
    defended, _ = ensemble([with_eps(weak, [2 * float(e) for e in strong.eps_star], ENSEMBLE)])
    original = replace(ens, attack=ENSEMBLE)
    found = ratio_intervals(defended, original, n_boot=200)
    assert found["eps_r"] == pytest.approx(2.0, rel=1e-9)


def test_weak_attacks_are_flagged() -> None:
    base = run(Threshold(), "bim")
    assert broke_share(with_eps(base, [0.3, INF, INF, INF, 0.5, 0.9], "x")) == pytest.approx(0.5)
    assert not is_weak(with_eps(base, [0.3, INF, INF, INF, 0.5, 0.9], "x"))
    assert is_weak(with_eps(base, [0.3, INF, INF, INF, INF, 0.9], "x"))


def test_a_group_takes_one_norm_and_the_same_clips() -> None:
    a = run(Threshold(), "a")
    with pytest.raises(ValueError, match="one domain and norm"):
        ensemble([a, replace(a, norm="linf")])
    with pytest.raises(ValueError, match="same clips"):
        ensemble([a, replace(a, labels=a.labels + 1)])
    with pytest.raises(ValueError, match="at least one"):
        ensemble([])
