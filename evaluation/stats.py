"""Uncertainty of the robustness metrics: bootstrap intervals, a paired test, intervals across seeds.

SPEC "Evaluation", Uncertainty: every rate, mean and ratio carries a 95 % bootstrap interval over
evaluation examples, paired where two models see the same clips. The point estimates are those of
:mod:`evaluation.metrics` on the full sample.

- Percentile bootstrap (Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, Ch. 13): the
  interval is the (1−level)/2 and (1+level)/2 empirical quantiles of the statistic over ``n_boot``
  draws of the clips with replacement (the B·α-th ordered value, no interpolation, so ∞ is kept).
- ε_r (seed 004, Eq. 15), paired bootstrap in SPEC's words: "draw evaluation clips with replacement
  (the same draw for the original and the defended model), recompute each model's base set, ε₀.₉ and
  mean ε* within it on the draw, take the ratio; the 2.5/97.5 percentiles of ≥ 1,000 draws are the
  interval (a draw where a model has an empty base set or never reaches FR 0.9 is counted, and their
  share reported)". A ``nan`` draw counts in ``undefined_share``; a partial one (ε₀.₉ = ∞ on a side,
  see :func:`evaluation.metrics.epsilon_ratio`) stays in the percentiles and counts in ``partial_share``.
- Paired test: Wilcoxon signed-rank (Wilcoxon 1945) on the clips in both base sets, ε* = ∞ ranked
  above every finite value, clips unbroken on both models left out.
- Across training seeds: the Student-t interval of the mean.

Per-clip encoding (every ``*_clip`` argument): ``(N,)`` float64 over all evaluated clips, ``nan`` =
not in the base set (misclassified on clean input), ``inf`` = in the base set but never broken within
the search range, finite = that clip's ε*.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats

_CHUNK_ELEMENTS = 1 << 21  # draws × clips handled at once (16 MiB per float64 array)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval.

    ``undefined_share``: share of draws whose statistic is ``nan`` (left out of the percentiles).
    ``partial_share``: share of all draws that are defined but partial (a lower-bound ratio, kept).
    """

    value: float
    low: float
    high: float
    undefined_share: float
    partial_share: float = 0.0


def bootstrap_indices(n: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """``(n_boot, n)`` int64 clip indices drawn with replacement by ``numpy.random.default_rng(seed)``."""
    if n == 0:
        return np.zeros((n_boot, 0), dtype=np.int64)
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n), dtype=np.int64)


def percentile_interval(draws: np.ndarray, value: float, level: float = 0.95,
                        partial: np.ndarray | None = None) -> Interval:
    """Percentile interval of the non-``nan`` ``draws`` (``inf`` allowed) around ``value``.

    When more than ``1 − level`` of the draws are undefined, the defined ones cannot bound the statistic
    at ``level`` (they are a biased subset, e.g. draws that happened to include a broken clip): the
    bounds are then ``nan`` ("undetermined") and ``undefined_share`` says why.
    """
    draws = np.asarray(draws, dtype=np.float64)
    defined = ~np.isnan(draws)
    undefined = float(np.mean(~defined)) if draws.size else 1.0
    partial_share = 0.0
    if partial is not None and draws.size:
        partial_share = float(np.mean(np.asarray(partial, dtype=bool) & defined))
    if not defined.any() or undefined > 1 - level:
        return Interval(float(value), math.nan, math.nan, undefined, partial_share)
    ordered = np.sort(draws[defined])
    low, high = (_order_statistic(ordered, q) for q in ((1 - level) / 2, (1 + level) / 2))
    return Interval(float(value), low, high, undefined, partial_share)


def _order_statistic(ordered: np.ndarray, q: float) -> float:
    """The ⌈q·B⌉-th of ``B`` ordered draws (q·B rounded first so that 0.025·1000 gives the 25th)."""
    k = min(len(ordered), max(1, math.ceil(round(q * len(ordered), 9))))
    return float(ordered[k - 1])


def _rank_table(n: int, rate: float) -> np.ndarray:
    """``k[m] = max(1, ⌈rate·m⌉)`` for base sizes ``m = 0..n``, rounded as :func:`metrics.eps_at_rate`."""
    if not 0 < rate <= 1:
        raise ValueError(f"rate must lie in (0, 1], got {rate}")
    return np.array([max(1, math.ceil(round(rate * m, 9))) for m in range(n + 1)], dtype=np.int64)


def _masked_mean(vals: np.ndarray, mask: np.ndarray) -> np.ndarray:
    count = mask.sum(axis=1)
    total = np.where(mask, vals, 0.0).sum(axis=1)
    return np.divide(total, count, out=np.full(len(vals), math.nan), where=count > 0)


def _base_stats(vals: np.ndarray, ranks: np.ndarray) -> dict[str, np.ndarray]:
    """Base size, ε₀.₉ and the mean ε* (all broken / broken within ε₀.₉) of each row of ``(B, n)`` ε*."""
    in_base = ~np.isnan(vals)
    base_size = in_base.sum(axis=1)
    ordered = np.sort(vals, axis=1)  # nan last, after inf
    kth = ordered[np.arange(len(vals)), ranks[base_size] - 1]  # k ≤ max(1, base size) ≤ n
    eps_090 = np.where(base_size > 0, kth, math.nan)
    broken = np.isfinite(vals)
    return {"base_size": base_size, "eps_090": eps_090, "mean_eps_star": _masked_mean(vals, broken),
            "mean_eps_star_within_eps090": _masked_mean(vals, broken & (vals <= eps_090[:, None]))}


def _over_chunks(fn: Callable[[np.ndarray], dict[str, np.ndarray]], idx: np.ndarray) -> dict[str, np.ndarray]:
    rows = max(1, _CHUNK_ELEMENTS // max(1, idx.shape[1]))
    parts = [fn(idx[start:start + rows]) for start in range(0, len(idx), rows)]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _clip_values(eps_clip: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``eps_clip[idx]``, with one ``nan`` column (outside every base set) when there are no clips."""
    vals = np.asarray(eps_clip, dtype=np.float64)[idx]
    return vals if vals.shape[1] else np.full((len(vals), 1), math.nan)


def model_draws(eps_clip: np.ndarray, idx: np.ndarray, eps_max: float, rate: float = 0.9) -> dict[str, np.ndarray]:
    """One model's metrics on each bootstrap draw ``idx`` (``(B, n)``), as :mod:`evaluation.metrics`.

    Returns ``(B,)`` arrays ``fooling_auc``, ``fr_at_eps_max``, ``eps_090`` (``inf`` if FR never
    reaches ``rate``), ``mean_eps_star`` (over every broken clip), ``mean_eps_star_within_eps090`` and
    ``base_size``; all but ``base_size`` are ``nan`` for an empty base set.
    """
    if eps_max <= 0:
        raise ValueError(f"eps_max must be > 0, got {eps_max}")
    idx = np.asarray(idx, dtype=np.int64)
    ranks = _rank_table(idx.shape[1], rate)

    def block(rows: np.ndarray) -> dict[str, np.ndarray]:
        vals = _clip_values(eps_clip, rows)
        in_base = ~np.isnan(vals)
        out = _base_stats(vals, ranks)
        area = np.clip(eps_max - vals, 0.0, None) / eps_max  # nan outside the base set, 0 for ∞
        out["fooling_auc"] = _masked_mean(area, in_base)
        out["fr_at_eps_max"] = _masked_mean((vals <= eps_max).astype(np.float64), in_base)
        return out

    return _over_chunks(block, idx)


def clip_summary_intervals(eps_clip: np.ndarray, eps_max: float, *, n_boot: int = 1000, seed: int = 0,
                           level: float = 0.95, rate: float = 0.9) -> dict[str, Interval]:
    """Bootstrap intervals of ``fooling_auc``, ``fr_at_eps_max``, ``eps_090``, ``mean_eps_star`` and
    ``mean_eps_star_within_eps090`` of one model from its per-clip ε* array
    (:func:`evaluation.intervals.summary_intervals` takes the evaluation)."""
    n = len(eps_clip)
    point = model_draws(eps_clip, np.arange(n)[None, :], eps_max, rate)
    draws = model_draws(eps_clip, bootstrap_indices(n, n_boot, seed), eps_max, rate)
    keys = ("fooling_auc", "fr_at_eps_max", "eps_090", "mean_eps_star", "mean_eps_star_within_eps090")
    return {k: percentile_interval(draws[k], float(point[k][0]), level) for k in keys}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, ``nan`` where a side is ``nan``, ``den = 0`` or both are ∞ (as metrics._ratio)."""
    undefined = np.isnan(num) | np.isnan(den) | (den == 0) | (np.isinf(num) & np.isinf(den))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(undefined, math.nan, num / den)


def ratio_draws(defended_clip: np.ndarray, original_clip: np.ndarray, idx: np.ndarray,
                rate: float = 0.9) -> dict[str, np.ndarray]:
    """Paired draws of ε_r and the ε₀.₉ ratio (defended ÷ original), as :func:`metrics.epsilon_ratio`.

    Returns ``(B,)`` arrays ``eps_r``, ``eps090_ratio`` and bool ``partial`` (either model's ε₀.₉ is
    ∞ or undefined on the draw; its mean then runs over every broken clip).
    """
    if len(defended_clip) != len(original_clip):
        raise ValueError(f"the models saw {len(defended_clip)} and {len(original_clip)} clips")
    idx = np.asarray(idx, dtype=np.int64)
    ranks = _rank_table(idx.shape[1], rate)

    def block(rows: np.ndarray) -> dict[str, np.ndarray]:
        d = _base_stats(_clip_values(defended_clip, rows), ranks)
        o = _base_stats(_clip_values(original_clip, rows), ranks)
        within = "mean_eps_star_within_eps090"
        return {"eps_r": _ratio(d[within], o[within]), "eps090_ratio": _ratio(d["eps_090"], o["eps_090"]),
                "partial": ~(np.isfinite(d["eps_090"]) & np.isfinite(o["eps_090"]))}

    return _over_chunks(block, idx)


def clip_ratio_intervals(defended_clip: np.ndarray, original_clip: np.ndarray, *, n_boot: int = 1000,
                         seed: int = 0, level: float = 0.95, rate: float = 0.9) -> dict[str, Interval]:
    """Paired bootstrap intervals of ``eps_r`` and ``eps090_ratio`` (``partial_share`` filled) from two per-clip
    ε* arrays (:func:`evaluation.intervals.ratio_intervals` takes the two evaluations)."""
    n = len(defended_clip)
    point = ratio_draws(defended_clip, original_clip, np.arange(n)[None, :], rate)
    draws = ratio_draws(defended_clip, original_clip, bootstrap_indices(n, n_boot, seed), rate)
    return {k: percentile_interval(draws[k], float(point[k][0]), level, draws["partial"])
            for k in ("eps_r", "eps090_ratio")}


def wilcoxon_paired(defended_clip: np.ndarray, original_clip: np.ndarray) -> tuple[float, int]:
    """Two-sided Wilcoxon signed-rank p-value of defended − original ε*, and the clips it used.

    Clips in both base sets, not unbroken on both; ∞ becomes ``M = 3·max|finite| + 1``, so a difference
    against ∞ exceeds every finite difference (ranks are exact). Zero differences are dropped (scipy's
    ``zero_method="wilcox"``) and not counted; ``(nan, 0)`` when no clip is left.
    """
    d, o = np.asarray(defended_clip, dtype=np.float64), np.asarray(original_clip, dtype=np.float64)
    keep = ~np.isnan(d) & ~np.isnan(o) & ~(np.isinf(d) & np.isinf(o))
    d, o = d[keep], o[keep]
    finite = np.concatenate([d[np.isfinite(d)], o[np.isfinite(o)]])
    big = 3 * float(np.abs(finite).max(initial=0.0)) + 1
    diff = np.where(np.isinf(d), big, d) - np.where(np.isinf(o), big, o)
    diff = diff[diff != 0]
    if diff.size == 0:
        return math.nan, 0
    return float(stats.wilcoxon(diff, zero_method="wilcox").pvalue), int(diff.size)


def wilson_interval(rate: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson 1927): a rate's uncertainty from the number of
    examples alone (a test accuracy, a success rate); ``nan`` for an empty split."""
    if n <= 0:
        return math.nan, math.nan
    z = float(stats.norm.ppf((1 + level) / 2))
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def seed_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean across training seeds with the Student-t interval ``mean ± t_{(1+level)/2, n−1}·s/√n``.

    Non-finite values are left out and counted in ``undefined_share``; one value gives ``nan`` bounds.
    """
    x = np.asarray(values, dtype=np.float64)
    ok = x[np.isfinite(x)]
    undefined = float(np.mean(~np.isfinite(x))) if x.size else 1.0
    mean = float(ok.mean()) if ok.size else math.nan
    if ok.size < 2:
        return Interval(mean, math.nan, math.nan, undefined)
    half = float(stats.t.ppf((1 + level) / 2, ok.size - 1) * ok.std(ddof=1) / math.sqrt(ok.size))
    return Interval(mean, mean - half, mean + half, undefined)


N_MIN = 11
"""Smallest base set (clips, the smaller of the two models') on which an ε_r verdict is drawn.

Measured coverage of the 95 % paired percentile interval of ε_r (``tests/test_small_samples.py``: scale
families with a known ratio, exponential / correlated log-normal ε*, 20 % of clips outside each base set,
5 % of base clips never broken; 1,000 draws per interval; R = 1,000 experiments per cell, 2,000 at n = 8-15):
0.873 / 0.887 at n = 5, 0.872 / 0.871 at 7, 0.908 / 0.913 at 8, 0.904 / 0.933 at 9, 0.922 / 0.947 at 10,
0.941 / 0.952 at 11, 0.936 / 0.951 at 15, 0.942 / 0.970 at 20, 0.954 / 0.970 at 30 (exp / log-normal). N_MIN is the
smallest n from which every measured family and size reaches 0.93, the nominal level less the 2 points the
n = 100 coverage test grants the percentile method (below it each tail misses 4-7 % of the time, nominal
2.5 %). Neither a BCa interval (0.85-0.92 at n = 5-30) nor a log-scale jackknife-t interval (0.94-0.99: holds
at n = 5 but mostly over-covers from n = 10, widening every larger table's intervals) replaces the percentile one.
"""
UNDETERMINED = "?"
"""Verdict of a ratio whose base set holds fewer than :data:`N_MIN` clips, whatever its interval."""


def verdict(low: float, high: float, n: float | None = None) -> str:
    """``↑`` if the interval lies above 1, ``↓`` if below 1, ``≈`` if it contains 1 or a bound is ``nan``;
    :data:`UNDETERMINED` when ``n`` (the clips the interval rests on, :func:`ratio_base_size`; ``None`` or
    ``nan``: not known) is below :data:`N_MIN`."""
    if n is not None and n < N_MIN:
        return UNDETERMINED
    if math.isnan(low) or math.isnan(high):
        return "≈"
    if low > 1:
        return "↑"
    if high < 1:
        return "↓"
    return "≈"


def ratio_base_size(defended_clip: np.ndarray, original_clip: np.ndarray) -> int:
    """Clips in the smaller of the two models' base sets: the sample an ε_r and its verdict rest on."""
    return int(min(np.count_nonzero(~np.isnan(np.asarray(c, dtype=np.float64))) for c in (defended_clip, original_clip)))


def ratio_of_sums_draws(num: np.ndarray, den: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``Σ num[draw] / Σ den[draw]`` for each row of clip indices ``idx`` (``(B, n)``); ``nan`` where the
    denominator sums to 0."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    top, bottom = num[idx].sum(axis=1), den[idx].sum(axis=1)
    return np.divide(top, bottom, out=np.full(len(idx), math.nan), where=bottom > 0)


def ratio_of_sums_interval(num: Sequence[float] | np.ndarray, den: Sequence[float] | np.ndarray, *,
                           n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Interval:
    """``Σ num / Σ den`` with its percentile-bootstrap interval over clips (the units ``i``).

    Every rate and mean of a study is this statistic with per-clip sums: a success rate (``num_i`` =
    successes on clip ``i``, ``den_i`` = attempts), a mean over successful examples (``num_i`` = their
    summed values, ``den_i`` = their count), pooled over models or targets that share the clip, which
    keeps a clip's attempts together in every draw (the paired resampling of SPEC "Uncertainty").
    Fewer than two clips with ``den_i > 0`` give no interval (``nan`` bounds).
    """
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError(f"num and den must be equal (n,) arrays, got {num.shape} and {den.shape}")
    value = float(ratio_of_sums_draws(num, den, np.arange(len(num))[None, :])[0]) if len(num) else math.nan
    if int((den > 0).sum()) < 2:
        return Interval(value, math.nan, math.nan, 1.0 if math.isnan(value) else 0.0)
    draws = ratio_of_sums_draws(num, den, bootstrap_indices(len(num), n_boot, seed))
    return percentile_interval(draws, value, level)
