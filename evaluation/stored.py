"""Reading an experiment that a store already holds, creating nothing on the way (``advaudio report``).

:func:`evaluation.tracking.setup_tracking` is for commands that log: it creates the outputs folder, the SQLite
store and the experiment. A report only reads, so a missing store, an unknown experiment or an experiment
without runs is a one-line :class:`ConfigError` here, and no folder, store file or experiment is left behind.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import mlflow
from mlflow.entities import Experiment
from mlflow.tracking import MlflowClient

from evaluation.tracking import USER_TRACKING_URI, check_server, local_store_path, tag
from victims.registry import ConfigError

LISTED = 8
"""Experiments named in the error for an unknown one (the rest are counted)."""


def store_uri(tracking_uri: str | None, outputs: Path) -> str:
    """The store a report reads: ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else the SQLite database under
    ``outputs`` (:func:`evaluation.tracking.default_tracking_uri` without creating ``outputs``)."""
    return tracking_uri or USER_TRACKING_URI or f"sqlite:///{(Path(outputs) / 'mlflow.db').resolve()}"


def open_experiment(experiment: str, tracking_uri: str | None, outputs: Path,
                    kinds: Sequence[str] | None = None) -> Experiment:
    """The experiment ``experiment`` of an existing store, with MLflow pointed at that store.

    Args:
        experiment: MLflow experiment name.
        tracking_uri: the store (default: ``$MLFLOW_TRACKING_URI``, else SQLite under ``outputs``).
        outputs: the outputs folder of the default store.
        kinds: run kinds (tag ``advaudio.kind``) of which at least one run must exist; ``None``: any run.

    Raises:
        ConfigError: naming the store and the experiment, if the store does not exist (or its server does not
            answer), holds no such experiment, or the experiment has no run of ``kinds``.
    """
    uri = store_uri(tracking_uri, outputs)
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    path = local_store_path(uri)
    if path is not None and not path.exists():
        raise ConfigError(f"no MLflow store at {path}: nothing to report for '{experiment}' (give the --outputs or "
                          "--tracking-uri it ran with)")
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None or found.lifecycle_stage != "active":
        names = [e.name for e in client.search_experiments() if e.name != "Default"]
        held = ", ".join(names[:LISTED]) + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")
        raise ConfigError(f"no experiment '{experiment}' in the MLflow store {uri}: nothing to report (it holds "
                          f"{held or 'no experiment'})")
    filters = [f"tags.`{tag('kind')}` = '{kind}'" for kind in kinds] if kinds else [""]
    if not any(client.search_runs([found.experiment_id], f, max_results=1) for f in filters):
        what = f"{' or '.join(kinds)} runs" if kinds else "runs"
        raise ConfigError(f"experiment '{experiment}' in the MLflow store {uri} has no {what}: nothing to report "
                          f"(run `advaudio experiment {experiment}` first)")
    mlflow.set_tracking_uri(uri)
    return found
