"""A grid's figures and report: each defended model's fooling-rate curves against the original's, and, on the
grid's parent run, Tables I-III, the ε_r heat maps, seed 004's Fig. 1 and the saved MLflow runs view.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow

from defense.grid import Grid
from evaluation import plots, report
from evaluation.report_data import collect
from evaluation.report_tables import table_3_matrices
from evaluation.examples import write_example_figures
from evaluation.harness import AttackEvaluation
from evaluation.tracking import ORIGINAL, mark_finished, reopened_run
from evaluation.ui_view import save_runs_view


def log_curves(grid: Grid, evals: dict[str, dict[str, AttackEvaluation]], run_ids: dict[str, str]) -> None:
    """Fooling-rate curves with bootstrap bands, original solid and defended dashed, one figure per norm and
    domain, on each defended model's run (budgets of different norms never share an axis)."""
    for defense, run_id in run_ids.items():
        if defense == ORIGINAL or not evals[defense]:
            continue
        groups: dict[tuple[str, str], list[str]] = {}
        for name, ev in evals[defense].items():
            groups.setdefault((ev.domain, ev.norm), []).append(name)
        with reopened_run(run_id):
            for (domain, norm), names in sorted(groups.items()):
                eps_max = evals[defense][names[0]].eps_max
                fig = plots.fooling_rate_curves({k: evals[ORIGINAL][k].eps_star for k in names}, eps_max,
                                                {k: evals[defense][k].eps_star for k in names}, norm=norm,
                                                title=f"original vs {defense}, {domain} {norm}",
                                                n_boot=grid.evaluation.n_boot, level=grid.evaluation.confidence)
                mlflow.log_figure(fig, f"plots/fooling_rate_curves_{domain}_{norm}.png")


def log_grid_report(grid: Grid, parent_id: str, uri: str) -> None:
    """Tables I-III, the ε_r heat maps and seed 004's Fig. 1 (``plots/fig1_*.png``) as artifacts of the grid's
    parent run."""
    data = collect(grid.name, uri, n_boot=grid.evaluation.n_boot, level=grid.evaluation.confidence)
    save_runs_view(mlflow.get_run(parent_id).info.experiment_id)
    with reopened_run(parent_id), tempfile.TemporaryDirectory() as tmp:
        report.write_tables(data, Path(tmp))
        mlflow.log_artifacts(tmp, "tables")
        if grid.evaluation.fig1 and write_example_figures(data, Path(tmp) / "fig1", uri):
            mlflow.log_artifacts(str(Path(tmp) / "fig1"), "plots")
        for defense in grid.axes["defense"]:
            if defense == ORIGINAL:
                continue
            found = table_3_matrices(data, defense)
            mlflow.log_figure(plots.epsilon_ratio_heatmap(found["value"], partial=found["partial"], low=found["low"],
                                                          high=found["high"], n=found["n"], title=f"eps_r ({defense})"),
                              f"plots/eps_r_{defense}.png")
        mark_finished()
