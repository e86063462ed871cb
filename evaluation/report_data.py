"""The runs of one MLflow experiment as a tidy table (:class:`ReportData`), read by :func:`collect`: what
:mod:`evaluation.report_tables` computes Tables I-III from and :mod:`evaluation.report` renders.

train`` with metric ``test_accuracy``; attack runs tagged ``advaudio.kind = attack``,
``advaudio.attack``, ``advaudio.norm``, ``advaudio.domain``, ``advaudio.in_tables`` with the
:func:`evaluation.harness.summarize` metrics, plus ``eps_r``, ``eps090_ratio``, ``eps_r_partial`` and
their intervals on the defended model's runs. Both carry the coordinate tags ``advaudio.dataset``,
``advaudio.frontend``, ``advaudio.victim``, ``advaudio.defense`` (``none`` = the original model) and
``advaudio.seed``. Missing cells render as empty strings.
"""
from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypeVar

import mlflow
import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from evaluation.ensemble import broke_share, is_ensemble
from evaluation.harness import AttackEvaluation, from_record
from evaluation.tracking import (ORIGINAL, TAG_PREFIX, TRANSFER_ARTIFACT, artifact_json, check_server,
                                 default_tracking_uri, is_finished, iter_runs, load_record)
from evaluation.transfer import TransferRecord
from victims.registry import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")

COORDS = ("kind", "dataset", "frontend", "victim", "defense", "attack", "seed", "mode")
SIBLINGS = [c for c in COORDS if c != "mode"]
"""Coordinates shared by an inference-time defense's naive and adaptive run of one attack."""
MODEL_KINDS = ("train", "defend")
"""Runs of a model: trained, or a trained model wrapped in an input transform (:mod:`defense.inference`)."""
ATTACK_TAGS = ("norm", "domain", "in_tables")
ROWS = ["dataset", "representation", "attacks"]
WORST_CASE = ", worst case"
"""Row label suffix of a group's ensemble row (each clip's smallest ε* over the group's attacks)."""


@dataclass
class ReportData:
    """The runs of one MLflow experiment as a tidy table.

    Attributes:
        experiment: MLflow experiment name.
        runs: one row per run (the newest finished run per coordinate): ``run_id``,
            ``parent_run_id``, ``status``, ``start_time``, the coordinates :data:`COORDS` and
            :data:`ATTACK_TAGS` (tags without the ``advaudio.`` prefix; ``""`` where absent, seed ``"0"``),
            the table row ``attacks`` of attack runs, and one column per metric (``NaN`` where not logged;
            ±∞ restored from MLflow's ±largest-float).
        records: attack run id → its per-clip evaluation (for bootstrap intervals), where logged.
        n_boot, level: bootstrap resamples and interval level.

    An inference-time defense (input transform, smoothing) is attacked twice, tag ``advaudio.mode`` =
    ``naive`` and ``adaptive``; ``runs`` keeps the stronger of the two (larger fooling AUC: the honest number
    for Tables I-III), ``all_runs`` keeps both (:meth:`view` picks one mode).

    The data is read once and not changed afterwards: what the tables derive from it (views, per-seed cells) is
    computed once per instance (:meth:`memo`) and shared by every table that needs it.
    """

    experiment: str
    runs: pd.DataFrame
    records: dict[str, AttackEvaluation] = field(default_factory=dict)
    n_boot: int = 1000
    level: float = 0.95
    transfers: list[tuple[dict[str, str], TransferRecord]] = field(default_factory=list)

    all_runs: pd.DataFrame | None = None
    _memo: dict[tuple[Any, ...], Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in (*COORDS, *ATTACK_TAGS, "attacks"):
            column = self.runs[name] if name in self.runs else pd.Series("", index=self.runs.index, dtype=object)
            self.runs[name] = column.where(column.map(lambda v: isinstance(v, str)), "")
        self.runs.loc[self.runs["seed"] == "", "seed"] = "0"
        if self.all_runs is None:
            self.all_runs = self.runs
            self.runs = _strongest(self.runs)

    def memo(self, key: tuple[Any, ...], compute: Callable[[], T]) -> T:
        """``compute()``, run once per ``key`` for this data: Tables II and III and the defense comparison ask for
        the same per-seed cells, and a report is written and printed from one read. The result is shared: callers
        must not modify it."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def view(self, mode: str) -> ReportData:
        """The same data with the attack runs of inference-time defenses of one ``mode`` (``naive`` or
        ``adaptive``; a defense without an adaptive variant keeps its naive runs in both views)."""
        return self.memo(("view", mode), lambda: self._view(mode))

    def _view(self, mode: str) -> ReportData:
        runs = self.all_runs if self.all_runs is not None else self.runs
        if mode == "naive":
            kept = runs[runs["mode"] != "adaptive"]
        else:  # a naive run stands in for the adaptive one where it has none (NES, noise)
            adaptive = set(map(tuple, runs.loc[runs["mode"] == "adaptive", SIBLINGS].to_numpy().tolist()))
            kept = runs[~((runs["mode"] == "naive") & runs[SIBLINGS].apply(lambda r: tuple(r) in adaptive, axis=1))]
        return ReportData(self.experiment, kept.reset_index(drop=True), self.records, self.n_boot, self.level,
                          self.transfers, all_runs=runs)

    def of_kind(self, kind: str, defense: str | None = None) -> pd.DataFrame:
        """Runs of ``kind`` (``"train"``: every model, :data:`MODEL_KINDS`; or ``"attack"``), optionally of
        one defense."""
        out = self.runs[self.runs["kind"].isin(MODEL_KINDS if kind == "train" else (kind,))]
        return out if defense is None else out[out["defense"] == defense]

    @property
    def defenses(self) -> list[str]:
        """Names of the adversarial-training defenses present (every defense but ``none``)."""
        return sorted(set(self.runs["defense"]) - {ORIGINAL, ""})

    @property
    def victims(self) -> list[str]:
        return sorted(set(self.runs["victim"]) - {""})

    @property
    def seeds(self) -> list[str]:
        return sorted(set(self.runs["seed"]), key=lambda v: (len(v), v))

    @property
    def rows(self) -> pd.MultiIndex:
        """``(dataset, representation)`` pairs present in any run, sorted."""
        pairs = sorted({(d, f) for d, f in zip(self.runs["dataset"], self.runs["frontend"]) if d and f})
        return pd.MultiIndex.from_tuples(pairs, names=ROWS[:2])

    def table_rows(self, attacks: Sequence[str] | None = None) -> pd.MultiIndex:
        """``(dataset, representation, attacks)`` rows of Tables II-III: per attack group its worst case
        (ensemble), its mean over attacks (seed 004's row) and each of its attacks; then the baselines."""
        runs = self.table_runs(attacks)
        keys = sorted({(d, f, g) for d, f, g in zip(runs["dataset"], runs["frontend"], runs["attacks"]) if d and f},
                      key=lambda k: (k[0], k[1], *_row_rank(k[2])))
        return pd.MultiIndex.from_tuples(keys, names=ROWS)

    def table_runs(self, attacks: Sequence[str] | None = None) -> pd.DataFrame:
        """The attack runs of the tables: each run under its group's label, and each table attack once more under
        its own row label ``<group>: <attack>`` (when its group holds more than one attack)."""
        return self.memo(("table_runs", attack_names(attacks)), lambda: self._table_runs(attacks))

    def _table_runs(self, attacks: Sequence[str] | None) -> pd.DataFrame:
        runs = self.attack_runs(attacks)
        members = runs[(runs["in_tables"] == "true") & ~runs["attack"].map(is_ensemble)]
        several = members.groupby("attacks")["attack"].transform("nunique") > 1
        own = members[several].assign(attacks=lambda f: f["attacks"] + ": " + f["attack"])
        return pd.concat([runs, own], ignore_index=True)

    def attack_runs(self, attacks: Sequence[str] | None) -> pd.DataFrame:
        runs = self.of_kind("attack")
        return runs if attacks is None else runs[runs["attack"].isin(list(attacks))]

    def resolve(self, defense: str | None) -> str | None:
        """``defense`` checked against the data; ``None`` picks the only defended one (or none)."""
        if defense is None:
            if len(self.defenses) > 1:
                raise ConfigError(f"several defenses in '{self.experiment}' ({', '.join(self.defenses)}): name one")
            return self.defenses[0] if self.defenses else None
        if defense not in self.defenses:
            known = ", ".join(self.defenses) or "none"
            raise ConfigError(f"defense '{defense}' has no runs in '{self.experiment}'; defended models: {known}")
        return defense


def attack_names(attacks: Sequence[str] | None) -> tuple[str, ...] | None:
    """``attacks`` as a key of :meth:`ReportData.memo` (``None``: every attack)."""
    return None if attacks is None else tuple(attacks)


def collect(experiment: str, tracking_uri: str | None = None, *, n_boot: int = 1000,
            level: float = 0.95) -> ReportData:
    """Read every training and attack run of ``experiment`` (and the attack runs' per-clip records).

    Args:
        experiment: MLflow experiment name (the experiment config's name).
        tracking_uri: MLflow URI; default: the one MLflow is pointed at (by
            :func:`evaluation.tracking.setup_tracking` or ``$MLFLOW_TRACKING_URI``), else the
            project's SQLite store under ``outputs/``.
        n_boot, level: bootstrap resamples and level of the intervals.

    Raises:
        ConfigError: if the server is not reachable or the experiment does not exist.
    """
    uri = tracking_uri or (mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else default_tracking_uri())
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ConfigError(f"no MLflow experiment named '{experiment}' at {uri}")
    rows = [_row(run) for run in iter_runs(exp.experiment_id, client=client)]
    rows = [r for r in rows if r["kind"] in (*MODEL_KINDS, "attack")]
    if not rows:
        log.warning("experiment '%s' has no training or attack runs", experiment)
    base = ["run_id", "parent_run_id", "status", "start_time", "finished_tag", *COORDS, *ATTACK_TAGS, "attacks"]
    frame = pd.DataFrame(rows)
    frame = frame.reindex(columns=base + sorted(set(frame.columns) - set(base)))
    runs = _newest(frame)
    return ReportData(experiment, runs, _records(client, runs), n_boot, level, _transfers(client, exp.experiment_id))


def _records(client: MlflowClient, runs: pd.DataFrame) -> dict[str, AttackEvaluation]:
    """Per-clip records of the attack runs that logged one."""
    out = {}
    for run_id in runs.loc[runs["kind"] == "attack", "run_id"] if not runs.empty else []:
        record = load_record(run_id, client)
        if record is not None:
            out[run_id] = from_record(record)
    return out


def _restore(value: float) -> float:
    """MLflow's SQL store saves ±∞ as ±largest float64: map it back."""
    return math.copysign(math.inf, value) if abs(value) >= sys.float_info.max else value


def _row(run: Run) -> dict[str, Any]:
    tags = run.data.tags
    row: dict[str, Any] = {"run_id": run.info.run_id, "parent_run_id": tags.get("mlflow.parentRunId", ""),
                           "status": run.info.status, "start_time": run.info.start_time or 0,
                           "finished_tag": is_finished(run)}
    row.update({c: tags.get(TAG_PREFIX + c, "") for c in (*COORDS, *ATTACK_TAGS)})
    row["seed"] = row["seed"] or "0"
    row["attacks"] = _group(row)
    row.update({k: _restore(float(v)) for k, v in run.data.metrics.items()})
    return row


def _threat(row: dict[str, Any] | pd.Series) -> str:
    return " ".join(p for p in (row["domain"] if row["domain"] == "waveform" else "", row["norm"]) if p) or "all"


def _group(row: dict[str, Any]) -> str:
    """Table row label of an attack run: its domain and norm (the group's mean row), the group's worst case for
    the ensemble (:mod:`evaluation.ensemble`), or the attack itself when it is a baseline."""
    if row["kind"] != "attack":
        return ""
    if is_ensemble(row["attack"]):
        return f"{_threat(row)}{WORST_CASE}"
    if row["in_tables"] == "false":
        threat = _threat(row)
        return f"{row['attack']} ({'baseline' if threat == 'all' else threat})"
    return _threat(row)


def _row_rank(label: str) -> tuple[bool, int, str]:
    """Order of a cell's rows: the worst case first, then seed 004's mean over the group, then each attack of the
    group, then the baselines."""
    return "(" in label, 0 if label.endswith(WORST_CASE) else (2 if ": " in label else 1), label


def broke_share_of(data: ReportData, run: pd.Series) -> float:
    """Share of a model's base set the attack run broke within its search range (from its record, else its
    summary metrics)."""
    record = data.records.get(run["run_id"])
    if record is not None:
        return broke_share(record)
    base, n = float(run.get("base_size", math.nan)), float(run.get("num_examples", math.nan))
    return (base - float(run.get("adv_accuracy_at_search_eps_max", math.nan)) * n) / base if base else math.nan


def _newest(frame: pd.DataFrame) -> pd.DataFrame:
    """One run per coordinate: finished ones first (runner tag, then MLflow status), then the newest."""
    if frame.empty:
        return frame
    rank = frame.assign(_done=frame["status"] == "FINISHED")
    rank = rank.sort_values(["finished_tag", "_done", "start_time"], kind="stable")
    kept = rank.drop_duplicates(subset=list(COORDS), keep="last").drop(columns="_done")
    return kept.sort_values(list(COORDS), kind="stable").reset_index(drop=True)


def _strongest(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with one attack run per coordinate where a defense was attacked naively and adaptively: the one
    with the larger fooling AUC (the adaptive one on a tie), i.e. the stronger attack. BPDA's identity backward
    pass can be weaker than autograd through a transform whose gradient is sparse but exact (a median filter)."""
    if runs.empty or "fooling_auc" not in runs:
        return runs
    both = runs[runs["mode"].isin(["naive", "adaptive"])]
    auc = both["fooling_auc"].fillna(-math.inf)
    rank = both.assign(_auc=auc, _adaptive=both["mode"] == "adaptive").sort_values(["_auc", "_adaptive"],
                                                                                   kind="stable")
    weaker = rank.index.difference(rank.drop_duplicates(subset=SIBLINGS, keep="last").index)
    return runs.drop(index=weaker).reset_index(drop=True)


def _transfers(client: MlflowClient, experiment_id: str) -> list[tuple[dict[str, str], TransferRecord]]:
    """Transfer records of the grid (``advaudio.kind = transfer`` runs, :mod:`defense.grid_transfer`)."""
    out = []
    for run in iter_runs(experiment_id, "tags.`advaudio.kind` = 'transfer'", client):
        coords = {c: run.data.tags.get(TAG_PREFIX + c, "") for c in ("dataset", "frontend", "seed", "attack")}
        out.append((coords, TransferRecord.from_dict(artifact_json(run.info.run_id, TRANSFER_ARTIFACT, client))))
    return sorted(out, key=lambda item: tuple(item[0].values()))
