"""MLflow tracking: the default embedded SQLite store, a server URI, and run helpers.

Default store: ``sqlite:///<outputs>/mlflow.db`` with artifacts in ``<outputs>/mlartifacts`` (no
server needed). Any tracking URI works the same; an ``http(s)://`` server is checked first, so a
dead server is a one-line error instead of minutes of retries.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from victims.registry import ConfigError

ORIGINAL = "none"
"""The defense name of the original (undefended) model that every ε_r compares with."""
OUTPUTS = Path(os.environ.get("ADVAUDIO_OUTPUTS", "outputs"))
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # reports read one small record per run
# A tracking server that goes away: MLflow's default (7 retries, backoff factor 2) waits ~4 minutes per call;
# 4 retries with factor 1 bound it to ~15 s, then the command stops with one line (defense.cli).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")
"""The user's ``$MLFLOW_TRACKING_URI`` as the process started: ``mlflow.set_tracking_uri`` rewrites the
variable, so reading it later would send a second store's runs to the first one."""


def default_tracking_uri(outputs: Path = OUTPUTS) -> str:
    """The user's ``$MLFLOW_TRACKING_URI`` if set, else the SQLite database under ``outputs``."""
    if USER_TRACKING_URI:
        return USER_TRACKING_URI
    outputs.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(outputs / 'mlflow.db').resolve()}"


def check_server(uri: str, timeout: float = 3.0) -> None:
    """Raise a one-line ConfigError unless the MLflow server at ``uri`` answers ``/health``."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            if resp.status != 200:
                raise ConfigError(f"MLflow server at {uri} answered HTTP {resp.status} on /health")
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ConfigError(f"MLflow server at {uri} is not reachable ({reason})") from None


def server_gone(uri: str | None) -> str | None:
    """Why the tracking server at ``uri`` (an ``http(s)://`` URI, or the user's ``$MLFLOW_TRACKING_URI``) does
    not answer, or ``None`` when it does or the store is not a server."""
    uri = uri or USER_TRACKING_URI
    if not uri or not uri.startswith(("http://", "https://")):
        return None
    try:
        check_server(uri)
    except ConfigError as err:
        return str(err)
    return None


def setup_tracking(experiment: str, uri: str | None = None, outputs: Path = OUTPUTS) -> str:
    """Point MLflow at ``uri`` (default: the SQLite store) and select ``experiment``.

    Returns:
        The experiment id.

    Raises:
        ConfigError: if a tracking server is not reachable.
    """
    uri = uri or default_tracking_uri(outputs)
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        exp_id = found.experiment_id
    else:
        location = None
        if uri.startswith("sqlite:"):
            location = (outputs / "mlartifacts").resolve().as_uri()
        exp_id = mlflow.create_experiment(experiment, artifact_location=location,
                                          tags={"mlflow.experimentKind": "custom_model_development"})
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → ``{"train.lr": "0.001", ...}`` for ``mlflow.log_params`` (values ≤ 500 chars)."""
    out: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.dumps(value)[:500] if not isinstance(value, str) else value[:500]
    return out


TAG_PREFIX = "advaudio."
"""Every tag advaudio writes: coordinates (``dataset``, ``frontend``, ``victim``, ``defense``, ``seed``,
``attack``), an attack's ``domain``/``norm``/``family``/``targeted``/``in_tables``, the run ``kind``
(``train``, ``attack``, ``grid``), resume keys (``run_key``, ``cell_key``, ``grid_key``) and ``status``."""
FINISHED = "finished"


def tag(name: str) -> str:
    """The MLflow tag ``advaudio.<name>``."""
    return TAG_PREFIX + name


def tags(**values: Any) -> dict[str, str]:
    """``{advaudio.<name>: str(value)}`` for each keyword (booleans as ``true``/``false``)."""
    return {tag(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in values.items()}


def mark_finished() -> None:
    """Tag the active run finished: everything it logs is in place, a resume may reuse it."""
    mlflow.set_tag(tag("status"), FINISHED)


def is_finished(run: Run) -> bool:
    """Whether ``run`` was tagged by :func:`mark_finished` (a run killed half-way was not)."""
    return run.data.tags.get(tag("status")) == FINISHED


def find_run(experiment_id: str, key: str, value: str) -> Run | None:
    """The newest run of the experiment whose tag ``key`` equals ``value`` (for resuming)."""
    runs = mlflow.search_runs([experiment_id], filter_string=f"tags.`{key}` = '{value}'",
                              order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    return runs[0] if runs else None


RECORD_ARTIFACT = "evaluation.json"
"""Per-clip record of an attack run (:func:`evaluation.harness.to_record`): intervals, curves, pairwise
sanity checks and reports are rebuilt from it."""


def load_record(run_id: str, client: MlflowClient | None = None) -> dict[str, Any] | None:
    """The per-clip record of an attack run as a dict, or ``None`` if the run logged none."""
    client = client or MlflowClient()
    if RECORD_ARTIFACT not in {a.path for a in client.list_artifacts(run_id)}:
        return None
    return json.loads(Path(client.download_artifacts(run_id, RECORD_ARTIFACT)).read_text())


def iter_runs(experiment_id: str, filter_string: str = "", client: MlflowClient | None = None) -> Iterator[Run]:
    """All runs of an experiment matching ``filter_string`` (pages through the store).

    Args:
        experiment_id: the experiment.
        filter_string: MLflow search filter.
        client: client of a specific store; default: the current tracking URI.
    """
    client = client or MlflowClient()
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


class EpochLogger:
    """Trainer callback that logs each epoch's metrics to the active MLflow run, then calls ``then``."""

    def __init__(self, then: Callable[[dict[str, float], int], None] | None = None) -> None:
        self.then = then

    def __call__(self, metrics: dict[str, float], epoch: int) -> None:
        mlflow.log_metrics(metrics, step=epoch)
        if self.then is not None:
            self.then(metrics, epoch)
