"""MLflow tracking: the default embedded SQLite store, a server URI, and run helpers.

Default store: ``sqlite:///<outputs>/mlflow.db`` with artifacts in ``<outputs>/mlartifacts`` (no
server needed). Any tracking URI works the same; an ``http(s)://`` server is checked first, so a
dead server is a one-line error instead of minutes of retries.

Run identity: a run is named by a key (:func:`stable_key` of what determines it) in a tag, and
:func:`resumable_run` is the one way to produce it: it owns the key (a file lock in ``<outputs>/locks``, one
process at a time, released by the kernel if its holder dies), reuses a finished run, resumes an unfinished
one and marks it finished. Two commands on one store therefore never log a run twice: the second waits,
then reuses (or resumes what a killed holder left).
"""
from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import os
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import urlparse

import mlflow
from mlflow.entities import Metric, Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient
from mlflow.utils.file_utils import local_file_uri_to_path
from mlflow.utils.uri import is_local_uri

from evaluation.locks import exclusive
from evaluation.new_store import start_store
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
LOCKS = "locks"
"""Folder under ``outputs`` with the lock files of run keys and of the store's creation."""
_lock_folder = [OUTPUTS / LOCKS]  # the folder of the store :func:`setup_tracking` selected last


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


STORE_CREATION_LOGGERS = ("mlflow.store.db.utils", "alembic.runtime.migration")
"""Loggers that announce a new SQLite store's schema at INFO level (two lines on stderr per new ``--outputs``)."""


def setup_tracking(experiment: str, uri: str | None = None, outputs: Path = OUTPUTS) -> str:
    """Point MLflow at ``uri`` (default: the SQLite store) and select ``experiment``.

    Run keys are locked from here on in :func:`lock_folder` (:func:`resumable_run`). A SQLite store and its
    experiment are opened under a lock there, so commands started together on a fresh ``--outputs`` do not
    create the schema twice (a new SQLite store starts as a copy of an empty one: :mod:`evaluation.new_store`); an
    experiment another process created first (e.g. through a server) is used.

    Returns:
        The experiment id.

    Raises:
        ConfigError: if a tracking server is not reachable.
    """
    uri = uri or default_tracking_uri(outputs)
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    _lock_folder[0] = lock_folder(uri, outputs)
    location = (outputs / "mlartifacts").resolve().as_uri() if uri.startswith("sqlite:") else None
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:"):
        for name in STORE_CREATION_LOGGERS:  # "Creating initial MLflow database tables..." before every first line
            logging.getLogger(name).setLevel(logging.WARNING)
        with exclusive(_lock_folder[0], "store", f"the MLflow store {uri}"):
            db = local_store_path(uri)
            if db is not None:  # not an in-memory store
                start_store(db)
            exp_id = _experiment_id(experiment, location)
    else:  # a server creates its store when it starts; a file store needs no schema
        exp_id = _experiment_id(experiment, location)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def local_store_path(uri: str) -> Path | None:
    """The file (SQLite) or folder (file store) a local tracking URI names; ``None`` for a server, a remote
    database or an in-memory SQLite store."""
    if uri.startswith("sqlite:"):
        rest = uri[len("sqlite://"):].split("?", 1)[0]
        return Path(rest[1:]) if len(rest) > 1 else None  # sqlite:///rel.db, sqlite:////abs.db; sqlite:// = memory
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(parsed.path)
    return Path(uri) if parsed.scheme == "" else None


def lock_folder(uri: str, outputs: Path = OUTPUTS) -> Path:
    """Where the store at ``uri`` keeps its lock files: ``locks/`` beside a SQLite database (the default store:
    ``<outputs>/locks``), else ``<outputs>/locks`` (commands sharing a server are serialised when they share
    ``--outputs``)."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).resolve().parent / LOCKS
    return outputs.resolve() / LOCKS


def _experiment_id(name: str, location: str | None) -> str:
    """The id of experiment ``name``, created (artifacts in ``location``) if missing."""
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return mlflow.create_experiment(name, artifact_location=location,
                                        tags={"mlflow.experimentKind": "custom_model_development"})
    except MlflowException as err:  # created meanwhile by a process that does not share this lock folder
        found = mlflow.get_experiment_by_name(name)
        if found is None or err.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
        return found.experiment_id


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
(``train``, ``attack``, ``grid``), run keys (``run_key``, ``cell_key``, ``grid_key``, ``study_key``,
``transfer_key``: :func:`resumable_run`) and ``status``."""
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


def stable_key(value: Any) -> str:
    """The 12-hex-digit SHA-256 of ``value`` as canonical JSON (sorted keys, ``str`` of anything else): the
    identity of a run made from ``value`` (a config, or a list of a parent's key and settings)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class KeyedRun:
    """The run of a key inside :func:`resumable_run`.

    Attributes:
        run_id: the run.
        finished: a finished run was found: read it back, log nothing (no run is active).
        resumed: an unfinished run of the key (an interrupted or killed command's) was reopened (it is active).
    """

    run_id: str
    finished: bool
    resumed: bool


@contextmanager
def owned(key: str, what: str, quiet: bool = False) -> Iterator[None]:
    """Hold ``key`` for the ``with`` block: other processes on this store wait, saying once for what and for whom
    unless ``quiet`` (:func:`evaluation.locks.exclusive`)."""
    with exclusive(_lock_folder[0], key, what, quiet=quiet):
        yield


@contextmanager
def resumable_run(experiment_id: str, key_tag: str, key: str, *, run_name: str, tags: Mapping[str, str],
                  what: str, finish: bool = True) -> Iterator[KeyedRun]:
    """The one way to produce a keyed run: own ``key``, find its run, reuse it if finished, else resume or start
    it, and mark it finished when the block ends without an error.

    Args:
        experiment_id: the experiment.
        key_tag: the tag name (without ``advaudio.``) that holds ``key``: ``run_key``, ``cell_key``, ...
        key: the run's identity (:func:`stable_key`).
        run_name: name of a new run.
        tags: tags of the run (set again on a resumed run).
        what: how a waiting command names it (e.g. ``"attack fgsm on .../none"``).
        finish: tag the run finished at the end of the block (``False`` for a parent run that is finished
            by a later step, after its children).

    Yields:
        :class:`KeyedRun`; the run is active unless ``finished``.
    """
    with owned(key, what):
        found = find_run(experiment_id, tag(key_tag), key)
        if found is not None and is_finished(found):
            client = MlflowClient()
            for name, value in tags.items():  # e.g. a new parent: tags are state, set again like a resumed run's
                if found.data.tags.get(name) != value:
                    client.set_tag(found.info.run_id, name, value)
            yield KeyedRun(found.info.run_id, finished=True, resumed=False)
            return
        run_id = found.info.run_id if found is not None else None
        with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment_id,
                              run_name=None if run_id else run_name, tags={**tags, tag(key_tag): key}) as run:
            with _killed_if_interrupted():
                yield KeyedRun(run.info.run_id, finished=False, resumed=run_id is not None)
            if finish:
                mark_finished()


@contextmanager
def reopened_run(run_id: str) -> Iterator[Run]:
    """Log more to an existing run (a model's run gaining its sanity checks, a parent gaining its report), as
    ``mlflow.start_run(run_id=...)`` does, but an interruption ends it ``KILLED`` at once, as :func:`resumable_run`
    does: MLflow's ``with`` block would write ``FAILED`` first, a write that, after a signal inside a store write,
    waits out SQLite's busy timeout before failing."""
    with mlflow.start_run(run_id=run_id) as run, _killed_if_interrupted():
        yield run


@contextmanager
def _killed_if_interrupted() -> Iterator[None]:
    """Inside an active run: an interruption (``KeyboardInterrupt``, a signal's or Ray's cancellation) lets go of
    what it left half-written and ends the run ``KILLED`` before MLflow's ``with`` block can end it ``FAILED``."""
    try:
        yield
    except KeyboardInterrupt as err:
        release_interrupted_writes(err)
        _end_killed()
        raise


def release_interrupted_writes(*errors: BaseException) -> None:
    """Let go of what an interruption left half-written, so the store takes the next write: a signal that lands
    inside one of MLflow's SQLite writes leaves that connection, still in its transaction, referenced only by the
    finished frames of the interruption's traceback, and every later write of this process then waits out SQLite's busy
    timeout (20 s) and fails, leaving the run RUNNING. Clearing the locals of those frames (of ``errors`` and the
    exceptions they were raised in; each keeps its traceback for printing) and collecting closes the connection,
    which rolls the transaction back."""
    seen: set[int] = set()
    for chained in errors:
        while chained is not None and id(chained) not in seen:
            seen.add(id(chained))
            traceback.clear_frames(chained.__traceback__)  # frames still executing are skipped
            chained = chained.__context__
    gc.collect()


def _end_killed() -> None:
    """End the active run ``KILLED`` (MLflow's ``with`` block would end it ``FAILED``): an interruption, whether a
    signal handler's or Ray's cancellation of a task (a ``KeyboardInterrupt`` raised in the worker, no signal seen
    by :mod:`defense.interrupt`), is not a failure, and a rerun resumes the run."""
    try:
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
    except Exception:  # the store went away: the run stays as it is, and a rerun resumes it all the same
        pass


def log_once(run_id: str, metrics: Mapping[str, float]) -> None:
    """Log ``metrics`` on ``run_id`` but those it already holds with the same value: what a model's run gains
    after it finished (ε_r, sanity checks) is logged once however often a grid is rerun, or run twice at once."""
    with owned(f"run-{run_id}", f"logging to run {run_id}", quiet=True):
        held = MlflowClient().get_run(run_id).data.metrics
        new = {k: float(v) for k, v in metrics.items() if not _same(held.get(k), float(v))}
        if new:
            log_metrics(run_id, new)


def log_next(run_id: str, metrics: Mapping[str, float], counter: str) -> int:
    """Log ``metrics`` on ``run_id`` at the step after the last one metric ``counter`` holds (0 for the first):
    what each command measures anew (a grid's wall time) gets a step per command, never two values at one step.

    Returns:
        The step.
    """
    with owned(f"run-{run_id}", f"logging to run {run_id}", quiet=True):
        steps = logged_steps(run_id, counter)
        step = max(steps) + 1 if steps else 0
        log_metrics(run_id, metrics, step)
    return step


def log_metrics(run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """Log ``metrics`` on ``run_id`` at ``step`` in one batch: MLflow's ``mlflow.log_metrics`` first reads the
    whole run back (params, tags, metrics) to link the metrics to logged models, which this package never logs."""
    now = int(time.time() * 1000)
    MlflowClient().log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


def _same(old: float | None, new: float) -> bool:
    return old is not None and (old == new or (math.isnan(old) and math.isnan(new)))


RECORD_ARTIFACT = "evaluation.json"
"""Per-clip record of an attack run (:func:`evaluation.harness.to_record`): intervals, curves, pairwise
sanity checks and reports are rebuilt from it."""
TRANSFER_ARTIFACT = "transfer.json"
"""Artifact of a transfer run (``advaudio.kind = transfer``): a grid group's transfer matrix
(:mod:`defense.grid_transfer`), or Subramanian et al.'s transfer record (:mod:`experiments.subramanian.run`)."""


@contextmanager
def downloaded(run_id: str, path: str, client: MlflowClient | None = None) -> Iterator[Path]:
    """Artifact ``path`` of run ``run_id`` as a local file to read during the block: the one way this package reads
    an artifact back.

    From a store whose artifacts are local files (the default SQLite store's ``mlartifacts``) the file is read
    where it is: no copy (a VGG-16's weights, re-read for every transfer group, are 513 MB). From any other store
    it is downloaded into a temporary folder removed after the block: MLflow's ``download_artifacts`` without a
    destination copies into a new temporary folder that it never removes (for a ``runs:/`` URI, even from a local
    store), which filled 70 GB of ``/tmp`` in one run of the test suite.
    """
    client = client or MlflowClient()
    root = client.get_run(run_id).info.artifact_uri
    local = Path(local_file_uri_to_path(root)) / path if is_local_uri(root) else None
    if local is not None and local.is_file():
        yield local
        return
    with tempfile.TemporaryDirectory(prefix="advaudio-artifact-") as folder:
        yield Path(client.download_artifacts(run_id, path, folder))


def artifact_text(run_id: str, path: str, client: MlflowClient | None = None) -> str:
    """The text of artifact ``path`` of run ``run_id`` (:func:`downloaded`)."""
    with downloaded(run_id, path, client) as local:
        return local.read_text()


def artifact_json(run_id: str, path: str, client: MlflowClient | None = None) -> Any:
    """Artifact ``path`` of run ``run_id`` parsed as JSON (:func:`downloaded`)."""
    return json.loads(artifact_text(run_id, path, client))


def load_record(run_id: str, client: MlflowClient | None = None) -> dict[str, Any] | None:
    """The per-clip record of an attack run as a dict, or ``None`` if the run logged none."""
    client = client or MlflowClient()
    if RECORD_ARTIFACT not in {a.path for a in client.list_artifacts(run_id)}:
        return None
    return artifact_json(run_id, RECORD_ARTIFACT, client)


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
    """Trainer callback that logs each epoch's metrics to the active MLflow run, then calls ``then``.

    Epochs in ``logged`` are not logged again: a run resumed from a checkpoint written just before a kill
    repeats the epoch after it, which the killed command may have logged already (:func:`logged_steps`).
    """

    def __init__(self, then: Callable[[dict[str, float], int], None] | None = None,
                 logged: frozenset[int] = frozenset()) -> None:
        self.then = then
        self.logged = logged

    def __call__(self, metrics: dict[str, float], epoch: int) -> None:
        if epoch not in self.logged:
            log_metrics(mlflow.active_run().info.run_id, metrics, epoch)
        if self.then is not None:
            self.then(metrics, epoch)


def logged_steps(run_id: str, key: str) -> frozenset[int]:
    """The steps at which ``run_id`` logged metric ``key``."""
    return frozenset(m.step for m in MlflowClient().get_metric_history(run_id, key))
