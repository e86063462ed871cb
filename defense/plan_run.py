"""The cost plan in ``advaudio experiment``: ``--plan`` prints it; a run shows its elapsed time against it and,
for a grid, logs its measured time and clip-passes beside it on the grid's MLflow run (:mod:`defense.plan_time`).
"""
from __future__ import annotations

import logging
from typing import Any

from defense.plan import Plan
from defense.plan_time import Estimate, calibrate_plan, estimate, format_plan, hours, log_outcome
from defense.passes import Passes

log = logging.getLogger(__name__)


def make_plan(raw: dict[str, Any], experiment: str, overrides: dict[str, Any]) -> Plan:
    """The plan of an experiment: a ``study:`` config's or a grid's.

    Raises:
        ConfigError: for a bad config, or a data set that is absent and has no documented size.
    """
    if "study" in raw:
        from defense.studies import STUDIES

        return STUDIES.get(str(raw["study"])).plan(raw, overrides)
    from defense.grid import load_grid
    from defense.plan import plan_grid

    return plan_grid(load_grid(experiment, overrides))


def planned(raw: dict[str, Any], experiment: str, overrides: dict[str, Any]) -> Estimate:
    """The calibrated plan of an experiment (see :func:`make_plan`)."""
    plan = make_plan(raw, experiment, overrides)
    return estimate(plan, calibrate_plan(plan))


def print_plan(raw: dict[str, Any], experiment: str, overrides: dict[str, Any]) -> int:
    """``advaudio experiment NAME --plan``: print the plan; nothing is trained or attacked."""
    print(format_plan(planned(raw, experiment, overrides)))
    return 0


def run_plan(raw: dict[str, Any], experiment: str, overrides: dict[str, Any]) -> Estimate | None:
    """The plan a run shows its progress against; ``None`` (logged) when it cannot be made, since a missing plan
    must not stop the run it describes (the run reports its own errors)."""
    try:
        return planned(raw, experiment, overrides)
    except Exception as err:  # noqa: BLE001 — the run goes on without its plan
        log.warning("no cost plan for this run: %s", str(err).splitlines()[0] if str(err) else type(err).__name__)
        return None


def bar_format(est: Estimate | None, steps: bool = True) -> str | None:
    """A tqdm format showing the elapsed time against the planned one (``None``: tqdm's default)."""
    if est is None:
        return None
    plan = f"of ~{hours(est.total.likely_s)} planned (<= {hours(est.total.total_s)})"
    count = "{n_fmt}/{total_fmt}" if steps else "{n_fmt} steps"
    return "{l_bar}{bar}| " + count + " [{elapsed} " + plan + "{postfix}]" if steps else \
        "{desc}: " + count + " [{elapsed} " + plan + "{postfix}]"


def record_outcome(grid: Any, est: Estimate | None, wall_s: float, passes: Passes | None) -> None:
    """Log the plan beside the run's measured wall time and clip-passes on the grid's MLflow run (in the store
    :func:`defense.runner.run_grid` just used)."""
    if est is None:
        return
    import mlflow

    from evaluation.tracking import find_run, stable_key, tag

    experiment = mlflow.get_experiment_by_name(grid.name)
    run = find_run(experiment.experiment_id, tag("grid_key"), stable_key([grid.source])) if experiment else None
    if run is None:  # the key run_grid gives the grid's run (defense.runner.run_grid)
        log.warning("the grid's run was not found: its plan and measured time are not logged")
        return
    log_outcome(run.info.run_id, est, wall_s, passes)
    log.info("measured %s against a plan of ~%s (at most %s)", hours(wall_s), hours(est.total.likely_s),
             hours(est.total.total_s))
