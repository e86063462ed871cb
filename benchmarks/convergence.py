"""Convergence of a grid's table attacks: how far each attack's ε* at the grid's settings lies
above the value the same attack reaches with a larger iteration budget.

Reads a finished grid's store (default the demo's: ``advaudio experiment demo --outputs DIR`` first). For each model
of its first column, on the first ``--clips`` evaluation clips (the runner's seeded selection), each table attack
runs through the harness (the grid's budgets, bisection resolution, per-band bounds and seed) at its grid settings
scaled by 1, 2, 4, … ``--max-scale``: every iteration count (``steps``, ``max_iterations``, ``max_iter``,
``max_queries``) times the scale, and C&W's ``binary_search_steps`` plus log₂ of it (one more halving of the
constant's bracket per doubling). Per attack and scale it prints the clips broken, the mean ε* over the clips every
scale broke, the optimality against the best of the attack's own runs (:mod:`evaluation.optimality`: share within
5 % with its Wilson interval, mean excess, clips missed) and the wall time; an attack counts as converged at the
smallest scale below the largest whose mean excess is under 5 % and that misses no clip a larger scale broke
(else it is still improving at the largest).

Usage: ``python -m benchmarks.convergence --outputs DIR [--experiment demo] [--clips 40] [--max-scale 8]
[--device cpu|cuda]``.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Any

import numpy as np
import torch

from benchmarks.attack_speed import timed
from benchmarks.stored_models import StoredModel, store_arguments, stored_models
from defense.grid import Grid
from defense.plan import attack_from
from evaluation.harness import evaluate
from evaluation.optimality import TOLERANCE, optimality

ITERATION_KEYS = ("steps", "max_iterations", "max_iter", "max_queries")


def scaled(cfg: dict[str, Any], scale: int) -> dict[str, Any]:
    """``cfg`` with its iteration counts times ``scale`` and its binary-search steps plus log₂ ``scale``."""
    out = dict(cfg)
    for key in ITERATION_KEYS:
        if isinstance(out.get(key), int):
            out[key] = out[key] * scale
    if isinstance(out.get("binary_search_steps"), int):
        out["binary_search_steps"] = out["binary_search_steps"] + int(math.log2(scale))
    return out


def settings(cfg: dict[str, Any]) -> str:
    keys = (*ITERATION_KEYS, "binary_search_steps")
    return ", ".join(f"{k} {cfg[k]}" for k in keys if isinstance(cfg.get(k), int))


def converged_at(table: Any, scales: list[int]) -> str:  # noqa: ANN401
    """The smallest scale below the largest within :data:`~evaluation.optimality.TOLERANCE` of the attack's own
    best that misses nothing (the largest scale is its own best by construction and confirms nothing)."""
    for scale, row in zip(scales[:-1], table.itertuples()):
        if row.mean_excess < TOLERANCE and row.missed == 0:
            return f"converged at x{scale}"
    return f"still improving at x{scales[-1]}"


def attack_rows(model: StoredModel, grid: Grid, option: str, scales: list[int]) -> list[str]:
    """One attack's runs at every scale on one model, as printed lines."""
    eps, times, described = {}, [], []
    for scale in scales:
        cfg = scaled(grid.attacks[option], scale)
        attack = attack_from(cfg)
        seconds, ev = timed(lambda: evaluate(model.victim, attack, model.waves, model.labels, grid.evaluation,
                                             name=option), model.waves.device)
        eps[f"x{scale}"] = ev.eps_clip().numpy()
        times.append(seconds)
        described.append(settings(cfg))
    table = optimality(eps)
    stars = np.stack(list(eps.values()))
    common = np.isfinite(stars).all(axis=0)
    lines = [f"### {option}: {converged_at(table, scales)} "
             f"({int(common.sum())} clips broken at every scale)",
             "| scale | settings | broken | mean eps* (common) | within 5 % of own best | mean excess | missed | "
             "time s |", "|---|---|---|---|---|---|---|---|"]
    for scale, row, seconds, text, star in zip(scales, table.itertuples(), times, described, stars):
        lines.append(f"| x{scale} | {text} | {row.broken} | {star[common].mean():.3f} | "
                     f"{row.optimal_share:.2f} [{row.optimal_share_ci_low:.2f}, {row.optimal_share_ci_high:.2f}] | "
                     f"{row.mean_excess:.1%} | {row.missed} | {seconds:.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    store_arguments(parser)
    parser.add_argument("--max-scale", type=int, default=8, help="largest factor on iteration counts (power of 2)")
    parser.add_argument("--attacks", nargs="*", help="table attacks to run (default: all of the grid's)")
    args = parser.parse_args()
    if args.max_scale < 1 or args.max_scale & (args.max_scale - 1):
        sys.exit(f"--max-scale must be a power of 2, got {args.max_scale}")
    torch.manual_seed(0)
    scales = [2 ** k for k in range(int(math.log2(args.max_scale)) + 1)]
    grid, models = stored_models(args.outputs, args.experiment, args.clips, args.device)
    table_attacks = [a for a, info in grid.attack_info.items() if info.in_tables]
    unknown = sorted(set(args.attacks or []) - set(table_attacks))
    if unknown:
        sys.exit(f"--attacks names {unknown[0]}, not a table attack of {grid.name} ({', '.join(table_attacks)})")
    for model in models:
        print(f"\n## {model.defense}")
        for option in args.attacks or table_attacks:
            print("\n".join(attack_rows(model, grid, option, scales)), flush=True)


if __name__ == "__main__":
    main()
