"""Coverage of the bootstrap intervals at small base sets (n = 5-30 clips) and the verdict's minimum n.

Known distributions, each a scale family so that the true value is exact at every n:

- ``exp``: defended ε* ~ Exp(mean r), original ε* ~ Exp(mean 1), independent per clip;
- ``lognormal``: log ε* = log r·[defended] + 0.8·(√0.7·Z_clip + √0.3·E_model), a clip effect shared by both
  models (correlation 0.7, as a hard clip is hard for both), heavy right tail.

Each model's base set holds exactly ``n`` clips (the others ``nan``, chosen independently per model, 20 % of
the clips), and each base clip is never broken (``inf``) with probability 5 %. ε₀.₉ and the mean ε* within it
scale with the scale, so the true ε_r is ``r``; the one-model mean ε* over broken clips is 1 (exp) or
``exp(0.8²/2)`` (lognormal). An interval with ``nan`` bounds (too many undefined draws) makes no claim and
counts as covering; its share is reported.

``python tests/test_small_samples.py`` prints the full study (R = 1,000 experiments per cell).
"""
from __future__ import annotations

import math
import sys
from typing import Callable

import numpy as np
import pytest
from scipy import stats as sps

from evaluation import stats as S

NAN = math.nan
R_TRUE, SIGMA, RHO, P_NAN, P_INF, LEVEL = 1.5, 0.8, 0.7, 0.2, 0.05, 0.95
SIZES = (5, 7, 10, 15, 20, 30)


def _pair(rng: np.random.Generator, n: int, family: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-clip ε* of a defended and an original model, each with a base set of exactly ``n`` clips."""
    total = math.ceil(n / (1 - P_NAN))
    if family == "exp":
        d, o = R_TRUE * rng.exponential(1.0, total), rng.exponential(1.0, total)
    else:
        shared = math.sqrt(RHO) * rng.standard_normal(total)
        d = R_TRUE * np.exp(SIGMA * (shared + math.sqrt(1 - RHO) * rng.standard_normal(total)))
        o = np.exp(SIGMA * (shared + math.sqrt(1 - RHO) * rng.standard_normal(total)))
    for eps in (d, o):
        eps[rng.random(total) < P_INF] = math.inf
        eps[rng.permutation(total)[:total - n]] = math.nan
    return d, o


def _mean_truth(family: str) -> float:
    return 1.0 if family == "exp" else math.exp(SIGMA ** 2 / 2)


def _jackknife(stat: Callable[[np.ndarray], np.ndarray], n: int) -> np.ndarray:
    """The statistic on each leave-one-clip-out sample (``(n,)``)."""
    idx = np.array([np.delete(np.arange(n), i) for i in range(n)], dtype=np.int64)
    return stat(idx)


def _bca(draws: np.ndarray, value: float, jack: np.ndarray) -> tuple[float, float]:
    """BCa interval (Efron 1987) from bootstrap ``draws`` and the jackknife values ``jack``."""
    ok, jack = draws[np.isfinite(draws)], jack[np.isfinite(jack)]
    if ok.size < 0.95 * draws.size or jack.size < 2 or not math.isfinite(value):
        return math.nan, math.nan
    below = (np.sum(ok < value) + 0.5 * np.sum(ok == value)) / ok.size
    z0 = sps.norm.ppf(np.clip(below, 1e-6, 1 - 1e-6))
    dev = jack.mean() - jack
    den = 6 * np.sum(dev ** 2) ** 1.5
    a = np.sum(dev ** 3) / den if den > 0 else 0.0
    out = []
    for q in ((1 - LEVEL) / 2, (1 + LEVEL) / 2):
        z = sps.norm.ppf(q)
        out.append(float(np.quantile(ok, sps.norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z))))))
    return out[0], out[1]


def _log_t(value: float, jack: np.ndarray) -> tuple[float, float]:
    """``log value ± t_{m−1}·se_jack(log)`` with the jackknife standard error of the log statistic."""
    logs = np.log(jack[np.isfinite(jack) & (jack > 0)])
    m = logs.size
    if m < 2 or not (math.isfinite(value) and value > 0):
        return math.nan, math.nan
    se = math.sqrt((m - 1) / m * np.sum((logs - logs.mean()) ** 2))
    half = sps.t.ppf((1 + LEVEL) / 2, m - 1) * se
    return math.exp(math.log(value) - half), math.exp(math.log(value) + half)


def _intervals(stat: Callable[[np.ndarray], np.ndarray], total: int, n_boot: int, seed: int, methods: tuple[str, ...]
               ) -> dict[str, tuple[float, float]]:
    """The production percentile interval and, where asked, the BCa and the log-scale jackknife-t ones."""
    value = float(stat(np.arange(total)[None, :])[0])
    draws = stat(S.bootstrap_indices(total, n_boot, seed))
    pct = S.percentile_interval(draws, value, LEVEL)
    out = {"percentile": (pct.low, pct.high)}
    if len(methods) > 1:
        jack = _jackknife(stat, total)
        out.update(bca=_bca(draws, value, jack), log_t=_log_t(value, jack))
    return {m: out[m] for m in methods}


def coverage(family: str, n: int, statistic: str, experiments: int, n_boot: int, seed: int = 0,
             methods: tuple[str, ...] = ("percentile",)) -> dict[str, dict[str, float]]:
    """Per interval method: ``cover`` (share of experiments whose interval holds the truth, ``nan`` bounds
    counting as covering), ``low_miss`` / ``high_miss`` (truth below / above the interval) and ``none``
    (share with ``nan`` bounds), of ``statistic`` = ``"eps_r"`` or ``"mean_eps_star"`` (the defended model)."""
    rng = np.random.default_rng([seed, n, len(family), len(statistic)])
    truth = R_TRUE if statistic == "eps_r" else R_TRUE * _mean_truth(family)
    counts: dict[str, np.ndarray] = {}
    for r in range(experiments):
        d, o = _pair(rng, n, family)
        if statistic == "eps_r":
            def stat(idx: np.ndarray) -> np.ndarray:
                return S.ratio_draws(d, o, idx)["eps_r"]
        else:
            def stat(idx: np.ndarray) -> np.ndarray:
                return S.model_draws(d, idx, eps_max=1.0)["mean_eps_star"]
        for name, (low, high) in _intervals(stat, len(d), n_boot, r, methods).items():
            none = math.isnan(low) or math.isnan(high)
            row = counts.setdefault(name, np.zeros(3))
            row += (none, not none and truth < low, not none and truth > high)
    return {name: {"cover": 1 - (c[1] + c[2]) / experiments, "low_miss": c[1] / experiments,
                   "high_miss": c[2] / experiments, "none": c[0] / experiments} for name, c in counts.items()}


def _study(experiments: int, n_boot: int, sizes: tuple[int, ...], methods: tuple[str, ...]) -> None:
    for statistic in ("eps_r", "mean_eps_star"):
        for family in ("exp", "lognormal"):
            for n in sizes:
                found = coverage(family, n, statistic, experiments, n_boot, methods=methods)
                cells = "  ".join(f"{m} {v['cover']:.3f} (miss {v['low_miss']:.3f}/{v['high_miss']:.3f}, "
                                  f"none {v['none']:.3f})" for m, v in found.items())
                print(f"{statistic:13s} {family:9s} n={n:2d}  {cells}", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    _study(int(args[0]) if args else 1000, int(args[1]) if len(args) > 1 else 1000,
           tuple(int(a) for a in args[2].split(",")) if len(args) > 2 else SIZES,
           tuple(args[3].split(",")) if len(args) > 3 else ("percentile", "bca", "log_t"))


# The suite's study: R = 300 experiments per (family, n), 1,000 draws each. Pooled over both families, the
# covering count at n = 5 and 7 (1,200 experiments) has s.d. √(0.9·0.1/1,200) ≈ 0.009 and at n ≥ N_MIN
# (11, 15, 20, 30: 2,400 experiments) ≈ 0.005; 0.93 is the nominal 0.95 less the 2 points the n = 100 band of
# test_stats.py grants the percentile method. Measured with R = 1,000-2,000 (stats.N_MIN's docstring): ~0.88
# below 10 clips, ≥ 0.936 from 11.
EXPERIMENTS, SMALL, ENOUGH = 300, (5, 7), (S.N_MIN, 15, 20, 30)


def _pooled(sizes: tuple[int, ...]) -> tuple[float, int]:
    found = [coverage(f, n, "eps_r", EXPERIMENTS, 1000)["percentile"]["cover"] for f in ("exp", "lognormal")
             for n in sizes]
    return float(np.mean(found)), EXPERIMENTS * len(found)


@pytest.mark.timeout(60)
def test_percentile_eps_r_undercovers_below_n_min_and_holds_from_it() -> None:
    small, r_small = _pooled(SMALL)
    enough, r_enough = _pooled(ENOUGH)
    assert small < 0.93 - 3 * math.sqrt(0.93 * 0.07 / r_small), small  # why a minimum n is needed
    assert enough >= 0.93 - 3 * math.sqrt(0.93 * 0.07 / r_enough), enough  # and that N_MIN suffices


@pytest.mark.parametrize(("low", "high", "n", "want"), [
    (1.05, 4.06, 7, "?"), (0.2, 0.9, S.N_MIN - 1, "?"), (0.9, 1.1, 5, "?"), (NAN, NAN, 3, "?"),
    (1.05, 4.06, S.N_MIN, "↑"), (0.2, 0.9, 140, "↓"), (0.9, 1.1, 30, "≈"), (NAN, NAN, 30, "≈"),
    (1.05, 4.06, None, "↑"), (1.05, 4.06, NAN, "↑")])
def test_verdict_is_undetermined_below_n_min(low: float, high: float, n: float | None, want: str) -> None:
    assert S.verdict(low, high, n) == want


def test_ratio_base_size_is_the_smaller_base_set() -> None:
    defended = np.array([1.0, NAN, math.inf, NAN, 2.0])  # base set 3
    original = np.array([0.5, 0.7, NAN, 0.1, 0.2])  # base set 4
    assert S.ratio_base_size(defended, original) == 3 and S.ratio_base_size(original, original) == 4


@pytest.mark.parametrize(("args", "want"), [
    ((2.213, 1.052, 4.062, 3, 1, True, 7.0), "2.213 [1.052, 4.062] ? n=7"),
    ((1.31, 1.25, 1.37, 3, 1, True, 140.0), "1.310 [1.250, 1.370] ↑ n=140"),
    ((1.31, 1.25, 1.37, 3, 1, True, NAN), "1.310 [1.250, 1.370] ↑"),  # an older store: n not logged
    ((1.31, 1.25, 1.37, 3, 2, True, 7.0), "1.310 [1.250, 1.370] ↑ (n=2)"),  # across seeds: the t-interval's n
    ((1.31, 1.25, 1.37, 3, 1, False, 7.0), "1.310 [1.250, 1.370]")])
def test_table_cell_shows_n_beside_the_verdict(args: tuple, want: str) -> None:
    from evaluation.report_tables import with_interval

    assert with_interval(*args) == want
