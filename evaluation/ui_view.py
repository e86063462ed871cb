"""A saved MLflow UI view that opens the runs table on what a researcher compares: each trained model with
its ε_r, fooling AUC and their intervals as columns, no clicks needed.

MLflow's experiment page loads a shared view from the experiment tag ``mlflow.sharedViewState.<key>`` (JSON
of its search facets and UI state) when the URL carries ``?viewStateShareKey=<key>``; the experiment tag
``mlflow.experimentKind = custom_model_development`` makes MLflow 3 open model-training pages instead of its
GenAI overview. Both are set here after a grid finishes (and by ``advaudio ui`` for older stores).
"""
from __future__ import annotations

import json
import re

from mlflow.tracking import MlflowClient

from evaluation.ensemble import is_ensemble
from evaluation.tracking import iter_runs, tag

VIEW_KEY = "advaudio"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
KIND_TAG = "mlflow.experimentKind"
PER_ATTACK = ("eps_r", "eps_r_ci_low", "eps_r_ci_high", "verdict", "eps_r_n", "eps_r_p", "broke_share", "fooling_auc")
"""Per-attack metrics of a model's run shown as columns, in this order for each attack."""
COLUMN_METRICS = re.compile(rf"^({'|'.join(PER_ATTACK)})\.|^test_accuracy(_ci_low|_ci_high)?$")
"""Metrics of a training run shown as columns: per-attack ε_r (with interval, verdict, the clips it rests on and
p-value), the share of the base set the attack broke, fooling AUC, and the test accuracy with its Wilson interval."""
COORDINATES = ("dataset", "frontend", "victim", "defense", "seed")
MODELS_FILTER = f"tags.`{tag('run_key')}` LIKE '%'"
"""Runs of a model: trained ones and trained ones wrapped in an input transform (``advaudio.kind`` ``train`` or
``defend``; MLflow's search has no ``IN`` for tags, and only model runs carry ``advaudio.run_key``)."""


def view_state(metric_keys: list[str]) -> dict[str, object]:
    """The shared-view JSON: model runs only (:data:`MODELS_FILTER`), newest first, the coordinate tags and ``metric_keys`` as
    columns. Training runs are top-level runs (a grid links them by the tag ``advaudio.grid_run``, not as
    children: MLflow keeps nested runs collapsed and does not share their expansion), so they show as rows;
    each one's attack runs are nested under it."""
    columns = [f"tags.`{tag(c)}`" for c in COORDINATES] + [f"metrics.`{k}`" for k in metric_keys]
    return {"searchFilter": MODELS_FILTER, "orderByKey": "attributes.start_time",
            "orderByAsc": False, "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [],
            "modelVersionFilter": "All Runs", "selectedColumns": columns, "runsExpanded": {}, "viewMaximized": False}


def save_runs_view(experiment_id: str, client: MlflowClient | None = None) -> list[str]:
    """Tag the experiment with the model-training kind and the advaudio view over its training runs' ε_r
    metrics; returns the metric columns (sorted: ε_r and intervals per attack, then fooling AUC)."""
    client = client or MlflowClient()
    keys: set[str] = set()
    for run in iter_runs(experiment_id, MODELS_FILTER, client):
        keys.update(k for k in run.data.metrics if COLUMN_METRICS.match(k))
    ordered = sorted(keys, key=_column_rank)
    client.set_experiment_tag(experiment_id, KIND_TAG, "custom_model_development")
    client.set_experiment_tag(experiment_id, VIEW_TAG, json.dumps(view_state(ordered)))
    return ordered


def _column_rank(key: str) -> tuple[int, str, int]:
    """Columns left to right: the worst case over each attack group (the headline), the test accuracy, then each
    attack's ε_r, interval, verdict, p-value, broken share and fooling AUC."""
    metric, _, attack = key.partition(".")
    if not attack:
        return 1, "", ("test_accuracy", "test_accuracy_ci_low", "test_accuracy_ci_high").index(metric)
    return (0 if is_ensemble(attack) else 2), attack, PER_ATTACK.index(metric)


def view_url(base: str, experiment_id: str) -> str:
    """The address of the saved view on a UI served at ``base`` (e.g. ``http://127.0.0.1:5000``)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}"
