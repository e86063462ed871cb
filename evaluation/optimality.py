"""How close each attack comes to the smallest perturbation known per clip (issue 18 item 3).

AttackBench's idea (Cinà et al. 2024, "AttackBench: evaluating gradient-based attacks for adversarial examples"):
many library attacks stop short of the best-known minimum, so an attack is scored against the per-clip best over
every attack that ran on the same model and clips — long, restarted reference runs included. For one model and one
domain and norm:

- ``best``: per clip, the smallest ε* over the attacks (``inf`` where none broke it);
- ``optimal_share``: of the clips some attack broke, the share where this attack's ε* is within ``tolerance`` (5 %)
  of the best — a clip it never broke counts against it —, with its Wilson interval;
- ``mean_excess`` / ``median_excess``: ε*/best − 1 over the clips this attack broke;
- ``missed``: clips another attack broke and this one did not.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd

from evaluation import stats

TOLERANCE = 0.05
COLUMNS = ["attack", "broken", "best_known", "optimal_share", "optimal_share_ci_low", "optimal_share_ci_high",
           "mean_excess", "median_excess", "missed"]


def optimality(eps_clip: Mapping[str, np.ndarray], tolerance: float = TOLERANCE,
               level: float = 0.95) -> pd.DataFrame:
    """One row per attack (the module docstring's columns, in the order given).

    Args:
        eps_clip: attack → its per-clip ε* on one model and the same clips, one domain and norm (the encoding of
            :mod:`evaluation.stats`: ``nan`` outside the base set, ``inf`` unbroken; e.g.
            :meth:`evaluation.harness.AttackEvaluation.eps_clip`).
        tolerance: relative distance to the best that counts as optimal.
        level: level of the share's Wilson interval.

    Raises:
        ValueError: for no attacks, or arrays of different lengths or base sets.
    """
    if not eps_clip:
        raise ValueError("optimality needs at least one attack")
    arrays = {name: np.asarray(v, dtype=np.float64) for name, v in eps_clip.items()}
    first_name, first = next(iter(arrays.items()))
    for name, values in arrays.items():
        if values.shape != first.shape or not np.array_equal(np.isnan(values), np.isnan(first)):
            raise ValueError(f"optimality compares one model's attacks on the same clips: {name} and {first_name} "
                             "differ in clips or base set")
    base = ~np.isnan(first)
    stars = np.stack([values[base] for values in arrays.values()])  # (attacks, base clips)
    best = stars.min(axis=0)
    known = np.isfinite(best)
    rows = []
    for name, star in zip(arrays, stars):
        broken = np.isfinite(star)
        close = known & broken & (star <= best * (1 + tolerance))
        share = float(close.sum() / known.sum()) if known.any() else math.nan
        low, high = stats.wilson_interval(share, int(known.sum()), level)
        with np.errstate(divide="ignore", invalid="ignore"):  # a best of 0 (a clip broken without a change)
            excess = np.where(star[broken] == best[broken], 0.0, star[broken] / best[broken] - 1)
        rows.append([name, int(broken.sum()), int(known.sum()), share, low, high,
                     float(excess.mean()) if excess.size else math.nan,
                     float(np.median(excess)) if excess.size else math.nan, int((known & ~broken).sum())])
    return pd.DataFrame(rows, columns=COLUMNS)
