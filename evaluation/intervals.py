"""Intervals of one evaluation and of ε_r between two, from per-clip ε* (SPEC "Evaluation", Uncertainty).

Bridges :class:`evaluation.harness.AttackEvaluation` and the array functions of
:mod:`evaluation.stats`: every summary rate and mean gets ``<metric>_ci_low`` / ``<metric>_ci_high``,
and ε_r (seed 004 Eq. 15) its paired-bootstrap interval, the share of undefined and partial draws,
the Wilcoxon signed-rank p-value of original vs defended ε* and the clips in the smaller base set (MLflow
names ``eps_r_ci_low``, ``eps_r_ci_high``, ``eps_r_p``, ``eps_r_n``; below :data:`evaluation.stats.N_MIN`
clips the verdict is undetermined).
"""
from __future__ import annotations

import math

import numpy as np

from evaluation import stats
from evaluation.harness import AttackEvaluation, epsilon_ratio, quality_scores
from evaluation.quality import SCORES

INTERVAL_METRICS = ("fooling_auc", "fr_at_eps_max", "eps_090", "mean_eps_star", "mean_eps_star_within_eps090")
QUALITY_METRICS = ("snr_db", *SCORES, "masked_share")
"""Per-clip scores of the examples whose mean over the clips broken within ``eps_max`` gets an interval."""


def clip_array(ev: AttackEvaluation) -> np.ndarray:
    """``(N,)`` ε* over every evaluated clip, ``nan`` outside the base set (:mod:`evaluation.stats`)."""
    return ev.eps_clip().numpy()


def summary_intervals(ev: AttackEvaluation, *, n_boot: int = 1000, level: float = 0.95,
                      seed: int = 0) -> dict[str, float]:
    """``<metric>_ci_low`` and ``<metric>_ci_high`` for :data:`INTERVAL_METRICS` and, where the evaluation has
    them, :data:`QUALITY_METRICS` (bootstrap over clips; a score's mean runs over the clips broken within
    ``eps_max`` that have it, as the summary's)."""
    found = stats.clip_summary_intervals(clip_array(ev), ev.eps_max, n_boot=n_boot, seed=seed, level=level)
    out: dict[str, float] = {}
    for name in INTERVAL_METRICS:
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = found[name].low, found[name].high
    scored = {name: values for name, values in (("snr_db", ev.snr_db), *quality_scores(ev).items())
              if values is not None}
    for name, values in scored.items():
        scores = values.double().numpy()
        counted = ev.within_eps_max.numpy() & ~np.isnan(scores)
        mean = stats.ratio_of_sums_interval(np.where(counted, scores, 0.0), counted.astype(np.float64),
                                            n_boot=n_boot, seed=seed, level=level)
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = mean.low, mean.high
    return out


def ratio_intervals(defended: AttackEvaluation, original: AttackEvaluation, *, n_boot: int = 1000,
                    level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """ε_r and the ε₀.₉ ratio with paired-bootstrap intervals, the Wilcoxon p-value and the base size ``eps_r_n``.

    Raises:
        ValueError: if the two evaluations did not attack the same clips with the same attack.
    """
    if defended.labels.shape != original.labels.shape or not bool((defended.labels == original.labels).all()):
        raise ValueError("eps_r needs both models evaluated on the same clips")
    if (defended.attack, defended.norm, defended.domain) != (original.attack, original.norm, original.domain):
        raise ValueError(f"eps_r compares one attack: {defended.attack} vs {original.attack}")
    d, o = clip_array(defended), clip_array(original)
    found = stats.clip_ratio_intervals(d, o, n_boot=n_boot, seed=seed, level=level)
    p_value, n_paired = stats.wilcoxon_paired(d, o)
    r, q = found["eps_r"], found["eps090_ratio"]
    return {**epsilon_ratio(defended, original), "eps_r_ci_low": r.low, "eps_r_ci_high": r.high,
            "eps_r_undefined_share": r.undefined_share, "eps_r_partial_share": r.partial_share,
            "eps090_ratio_ci_low": q.low, "eps090_ratio_ci_high": q.high,
            "eps_r_p": p_value, "eps_r_paired_n": float(n_paired), "eps_r_n": float(stats.ratio_base_size(d, o))}


def mean_ratio_interval(pairs: list[tuple[AttackEvaluation, AttackEvaluation]], *, n_boot: int = 1000,
                        level: float = 0.95, seed: int = 0) -> stats.Interval:
    """ε_r averaged over several attacks (Table III's cell), with one paired bootstrap for all of them.

    Every attack saw the same clips, so each draw resamples the clips once and averages that draw's ε_r
    over the attacks (``nan`` if any is undefined on the draw); partial when any of them is.
    """
    if not pairs:
        return stats.Interval(math.nan, math.nan, math.nan, 1.0)
    n = pairs[0][0].labels.numel()
    idx = stats.bootstrap_indices(n, n_boot, seed)
    full = np.arange(n)[None, :]
    per_pair = [(stats.ratio_draws(clip_array(d), clip_array(o), idx),
                 stats.ratio_draws(clip_array(d), clip_array(o), full)) for d, o in pairs]
    draws = np.mean([p[0]["eps_r"] for p in per_pair], axis=0)
    partial = np.any([p[0]["partial"] for p in per_pair], axis=0)
    value = float(np.mean([p[1]["eps_r"][0] for p in per_pair]))
    return stats.percentile_interval(draws, value, level, partial=partial)
