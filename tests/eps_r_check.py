"""The oracle for logged ε_r: every defended attack run's ε_r, its interval, p-value and base size, and the model
run's ``eps_r.<attack>`` columns, recomputed from the two models' stored per-clip records (``evaluation.json``)."""
from __future__ import annotations

import math
from typing import Any

from mlflow.entities import Run

from evaluation import metrics as M
from evaluation.config import EvalConfig
from evaluation.harness import from_record
from evaluation.intervals import ratio_intervals
from evaluation.tracking import load_record

LEARNS = {"train.batch_size": 2, "train.epochs": 4}
"""Overrides of the tiny grids (``tests/tiny_configs.py``'s TINY) giving the tiny ResNet enough optimiser steps for its
batch-norm statistics to settle: with one step per epoch the deployed model predicts one class, nothing is broken
within the search range and every ε_r is undefined, so a check of logged ε_r would compare ``nan`` with ``nan``."""
_FLOAT_MAX = 1.7976931348623157e308  # MLflow stores inf as the largest float64


def _read(value: float) -> float:
    return math.inf if value >= _FLOAT_MAX else -math.inf if value <= -_FLOAT_MAX else value


def same(logged: float, expected: float, rel: float = 1e-12) -> bool:
    """``logged`` equals ``expected``; ``nan`` only where ``expected`` is ``nan``."""
    logged = _read(logged)
    if math.isnan(expected) or math.isnan(logged):
        return math.isnan(expected) and math.isnan(logged)
    return logged == expected or math.isclose(logged, expected, rel_tol=rel)


def recomputed_ratios(attacks: list[Run], ev_cfg: EvalConfig) -> dict[str, dict[str, float]]:
    """``{run_id: expected metrics}`` for every attack run of a defended model: ε_r and the ε₀.₉ ratio from the
    per-clip ε* (``evaluation.metrics.epsilon_ratio``, not the logged summaries), the bootstrap interval, p-value
    and base size from the two records (``evaluation.intervals.ratio_intervals`` with the grid's settings)."""
    def key(run: Run) -> tuple[str, ...]:
        t = run.data.tags
        return tuple(t[f"advaudio.{k}"] for k in ("attack", "dataset", "frontend", "victim", "seed"))

    original = {key(r): r for r in attacks if r.data.tags["advaudio.defense"] == "none"}
    out: dict[str, dict[str, float]] = {}
    for run in attacks:
        if run.data.tags["advaudio.defense"] == "none":
            continue
        d, o = (from_record(load_record(r.info.run_id)) for r in (run, original[key(run)]))
        expected = ratio_intervals(d, o, n_boot=ev_cfg.n_boot, level=ev_cfg.confidence, seed=ev_cfg.seed)
        expected.update(M.epsilon_ratio(d.eps_star, o.eps_star))
        out[run.info.run_id] = expected
    return out


def check_logged_eps_r(attacks: list[Run], models: list[Run], ev_cfg: EvalConfig) -> dict[str, dict[str, float]]:
    """Assert every defended attack run logs the recomputed ε_r, ``eps090_ratio``, ``eps_r_ci_low/high``, ``eps_r_p``
    and ``eps_r_n`` (``nan`` exactly where the recomputation is), a determined interval holds ε_r (too few clips
    leave it ``nan``, :func:`evaluation.stats.percentile_interval`), and the model
    run's ``eps_r.<attack>`` / ``eps_r_ci_*.<attack>`` columns show them to four significant digits.

    Returns:
        the recomputation per attack run id.
    """
    expected_all = recomputed_ratios(attacks, ev_cfg)
    by_id = {r.info.run_id: r for r in models}
    for run in attacks:
        if run.info.run_id not in expected_all:
            continue
        expected, logged = expected_all[run.info.run_id], run.data.metrics
        where = f"{run.data.tags['advaudio.defense']}/{run.data.tags['advaudio.attack']}"
        for name in ("eps_r", "eps090_ratio", "eps_r_ci_low", "eps_r_ci_high", "eps_r_p", "eps_r_n"):
            assert same(logged[name], expected[name]), (where, name, logged[name], expected[name])
        if all(math.isfinite(expected[k]) for k in ("eps_r", "eps_r_ci_low", "eps_r_ci_high")):
            assert expected["eps_r_ci_low"] <= expected["eps_r"] <= expected["eps_r_ci_high"], (where, expected)
        model: Any = by_id[run.data.tags["mlflow.parentRunId"]]
        attack = run.data.tags["advaudio.attack"] + (".adaptive" if run.data.tags.get("advaudio.mode") == "adaptive"
                                                     else "")
        for name in ("eps_r", "eps_r_ci_low", "eps_r_ci_high"):
            shown = float(f"{expected[name]:.4g}") if math.isfinite(expected[name]) else expected[name]
            assert same(model.data.metrics[f"{name}.{attack}"], shown), (where, name)
    return expected_all
