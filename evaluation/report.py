"""Seed 004's Tables I, II and III rebuilt from MLflow alone (CSV, Markdown, terminal), with intervals.

Seed 004 (*Adversarially training for audio classifiers*, Section VIII) reports, for every data set ×
representation (rows) and victim architecture (columns):

- Table I: test accuracy (%) of the original model and, in parentheses, its drop in percentage points
  after adversarial training: ``"88.32, (10.35)"``; the parenthesis is left out when the defended
  model is missing.
- Table II: fooling AUC (%) averaged over the attacks, of the adversarially trained models
  (``model="original"``: the same for the original models), over ``[0, ε_max]`` of each norm.
- Table III: ε_r (Eq. 15) averaged over the attacks whose ε_r is complete; ``*`` marks a cell where
  none is, so the mean is over partial ratios (a model never reached FR ≥ 0.9, so each is a lower
  bound, see :mod:`evaluation.metrics`). Each cell reads ``ε_r [low, high] v`` with the verdict v:
  ↑ (interval above 1), ↓ (below 1), ≈ (contains 1), ``?`` (undetermined: fewer than
  :data:`evaluation.stats.N_MIN` clips in the smaller base set), followed by ``n=`` those clips.

Budgets belong to a norm: Tables II-III have one row per (data set, representation, attack group),
where a group is the table attacks of one domain and norm (seed 004's rows are the representation-L2
ones) and every attack left out of the tables (baselines: noise, FGSM) has a row of its own.
Intervals: a paired bootstrap over the evaluation clips (:mod:`evaluation.intervals`), one draw shared by
every attack of a cell, read from each attack run's per-clip record (``evaluation.json``); where a grid
repeats training seeds, each cell is the mean over seeds with the Student-t interval across seeds
(``n`` seeds shown), and ``table_3_<defense>_seed<k>`` keeps every seed's bootstrap table.

The MLflow data model (written by :mod:`defense.runner`): training runs tagged ``advaudio.kind =
train`` with metric ``test_accuracy``; attack runs tagged ``advaudio.kind = attack``,
``advaudio.attack``, ``advaudio.norm``, ``advaudio.domain``, ``advaudio.in_tables`` with the
:func:`evaluation.harness.summarize` metrics, plus ``eps_r``, ``eps090_ratio``, ``eps_r_partial`` and
their intervals on the defended model's runs. Both carry the coordinate tags ``advaudio.dataset``,
``advaudio.frontend``, ``advaudio.victim``, ``advaudio.defense`` (``none`` = the original model) and
``advaudio.seed``. Missing cells render as empty strings.
"""
from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from evaluation import stats
from evaluation.ensemble import WEAK_SHARE, broke_share, is_ensemble
from evaluation.harness import AttackEvaluation, from_record
from evaluation.intervals import clip_array, mean_ratio_interval
from evaluation.metrics import ratio_from_summaries
from evaluation.tracking import (ORIGINAL, TAG_PREFIX, check_server, default_tracking_uri, is_finished, iter_runs,
                                 load_record)
from training.files import atomic_write
from evaluation.transfer import TransferRecord, transfer_rates
from victims.registry import ConfigError

log = logging.getLogger(__name__)

COORDS = ("kind", "dataset", "frontend", "victim", "defense", "attack", "seed", "mode")
SIBLINGS = [c for c in COORDS if c != "mode"]
"""Coordinates shared by an inference-time defense's naive and adaptive run of one attack."""
MODEL_KINDS = ("train", "defend")
"""Runs of a model: trained, or a trained model wrapped in an input transform (:mod:`defense.inference`)."""
ATTACK_TAGS = ("norm", "domain", "in_tables")
CELL = ["dataset", "frontend", "victim"]
ROWS = ["dataset", "representation", "attacks"]
WORST_CASE = ", worst case"
"""Row label suffix of a group's ensemble row (each clip's smallest ε* over the group's attacks)."""
WEAK_MARK = "†"
"""Marks a cell where an attack broke fewer than half of a model's base set (:data:`evaluation.ensemble.WEAK_SHARE`)."""
SUMMARY = ("fooling_auc", "fr_at_eps_max", "eps_090", "mean_eps_star_within_eps090", "mean_eps_star",
           "base_size", "clean_accuracy", "adv_accuracy", "snr_db", "median_iterations", "median_queries",
           "mean_total_queries", "eps_max", "fooling_auc_ci_low", "fooling_auc_ci_high")
RATIO = ("eps_r", "eps090_ratio", "eps_r_partial", "eps_r_ci_low", "eps_r_ci_high", "eps_r_p", "eps_r_n")
Model = Literal["defended", "original"]


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
    """

    experiment: str
    runs: pd.DataFrame
    records: dict[str, AttackEvaluation] = field(default_factory=dict)
    n_boot: int = 1000
    level: float = 0.95
    transfers: list[tuple[dict[str, str], TransferRecord]] = field(default_factory=list)

    all_runs: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        for name in (*COORDS, *ATTACK_TAGS, "attacks"):
            column = self.runs[name] if name in self.runs else pd.Series("", index=self.runs.index, dtype=object)
            self.runs[name] = column.where(column.map(lambda v: isinstance(v, str)), "")
        self.runs.loc[self.runs["seed"] == "", "seed"] = "0"
        if self.all_runs is None:
            self.all_runs = self.runs
            self.runs = _strongest(self.runs)

    def view(self, mode: str) -> ReportData:
        """The same data with the attack runs of inference-time defenses of one ``mode`` (``naive`` or
        ``adaptive``; a defense without an adaptive variant keeps its naive runs in both views)."""
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
        runs = self._attack_runs(attacks)
        members = runs[(runs["in_tables"] == "true") & ~runs["attack"].map(is_ensemble)]
        several = members.groupby("attacks")["attack"].transform("nunique") > 1
        own = members[several].assign(attacks=lambda f: f["attacks"] + ": " + f["attack"])
        return pd.concat([runs, own], ignore_index=True)

    def _attack_runs(self, attacks: Sequence[str] | None) -> pd.DataFrame:
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


def _render(index: pd.MultiIndex, victims: list[str], cell: Any) -> pd.DataFrame:
    """String table with one column per index level; ``cell(row_key, victim)`` → str."""
    out = pd.DataFrame({name: index.get_level_values(name) for name in index.names})
    for victim in victims:
        out[victim] = [cell(key, victim) for key in index]
    return out


def _seed_mean(values: list[float], intervals: list[tuple[float, float]]) -> tuple[float, float, float, int]:
    """One seed: its value and bootstrap interval; several: the mean and the t-interval across seeds."""
    if len(values) == 1:
        return values[0], intervals[0][0], intervals[0][1], 1
    found = stats.seed_interval(values)
    return found.value, found.low, found.high, len(values)


def _with_interval(value: float, low: float, high: float, digits: int, n_seeds: int = 1,
                   verdict: bool = False, clips: float = math.nan) -> str:
    """``value [low, high]``, with the verdict and the ``clips`` it rests on (``n=…``, one seed) or the seeds
    (``(n=…)``, several: the t-interval's sample)."""
    if math.isnan(value):
        return ""
    text = f"{value:.{digits}f}"
    if not (math.isnan(low) and math.isnan(high)):
        text += f" [{low:.{digits}f}, {high:.{digits}f}]"
        if verdict:
            text += f" {_cell_verdict(low, high, n_seeds, clips)}"
            text += f" n={int(clips)}" if n_seeds == 1 and math.isfinite(clips) else ""
    return text + (f" (n={n_seeds})" if n_seeds > 1 else "")


def _cell_verdict(low: float, high: float, n_seeds: int, clips: float) -> str:
    """One seed: the bootstrap verdict, undetermined below ``stats.N_MIN`` clips; several: the t-interval's."""
    return stats.verdict(low, high, clips if n_seeds == 1 else None)


def table_1_values(data: ReportData, defense: str | None) -> pd.DataFrame:
    """Long table of test accuracy (%): one row per (dataset, representation, victim, defense) with the
    mean over seeds, its t-interval across seeds (or the logged binomial interval of one seed) and ``n``."""
    runs = data.of_kind("train")
    runs = runs[runs["defense"].isin([ORIGINAL, defense])]
    rows = []
    for key, group in runs.groupby([*CELL, "defense"]):
        acc = [float(v) for v in group["test_accuracy"] if math.isfinite(v)]
        if not acc:
            continue
        one = group.iloc[0]
        ci = [(float(one.get("test_accuracy_ci_low", math.nan)), float(one.get("test_accuracy_ci_high", math.nan)))]
        value, low, high, n = _seed_mean(acc, ci * len(acc))
        rows.append(dict(zip([*CELL, "defense"], key), value=100 * value, low=100 * low, high=100 * high, n=n))
    return pd.DataFrame(rows, columns=[*CELL, "defense", "value", "low", "high", "n"])


def table_1(data: ReportData, defense: str | None = None) -> pd.DataFrame:
    """Seed 004's Table I: ``"acc_orig [low, high], (drop)"`` in percent, drop = original − defended
    accuracy; the interval is the logged Wilson interval of one seed, or the t-interval across seeds."""
    defense = data.resolve(defense)
    long = table_1_values(data, defense).set_index([*CELL, "defense"])

    def cell(key: tuple[str, str], victim: str) -> str:
        orig, adv = (key[0], key[1], victim, ORIGINAL), (key[0], key[1], victim, defense)
        if orig not in long.index:
            return ""
        o = long.loc[orig]
        text = _with_interval(o["value"], o["low"], o["high"], 2, int(o["n"]))
        return text if adv not in long.index else f"{text}, ({o['value'] - long.loc[adv, 'value']:.2f})"

    return _render(data.rows, data.victims, cell)


def _cells(data: ReportData, defense: str, metric: str, attacks: Sequence[str] | None) -> pd.DataFrame:
    """Long table of per-seed cells: ``dataset, representation, attacks, victim, seed, value, low, high,
    partial`` for ``metric`` = ``"fooling_auc"`` (runs of ``defense``) or ``"eps_r"`` (``defense`` vs original)."""
    runs = data.table_runs(attacks)
    keys = ["dataset", "frontend", "attacks", "victim", "seed"]
    orig = runs[runs["defense"] == ORIGINAL].set_index([*keys, "attack"])
    rows = []
    for key, group in runs[runs["defense"] == defense].groupby(keys):
        pairs = [(r, orig.loc[(*key, r["attack"])]) for _, r in group.iterrows() if (*key, r["attack"]) in orig.index]
        if metric == "fooling_auc":
            (value, low, high, partial), clips = _auc_cell(data, group), math.nan
        else:
            value, low, high, partial, clips = _ratio_cell(data, pairs)
        weak = any(broke_share_of(data, r) < WEAK_SHARE for d, o in pairs if not is_ensemble(d["attack"])
                   for r in (d, o))
        if math.isfinite(value):
            rows.append(dict(zip([*ROWS, "victim", "seed"], key), value=value, low=low, high=high, partial=partial,
                             weak=weak, n=clips))
    return pd.DataFrame(rows, columns=[*ROWS, "victim", "seed", "value", "low", "high", "partial", "weak", "n"])


def _auc_cell(data: ReportData, group: pd.DataFrame) -> tuple[float, float, float, bool]:
    """Mean fooling AUC (%) over a cell's attacks; interval from one shared bootstrap of their records."""
    group = group[group["fooling_auc"].map(math.isfinite)] if "fooling_auc" in group else group.iloc[:0]
    if group.empty:
        return math.nan, math.nan, math.nan, False
    value = 100 * float(group["fooling_auc"].mean())
    records = [data.records.get(r) for r in group["run_id"]]
    if all(records):
        idx = stats.bootstrap_indices(records[0].labels.numel(), data.n_boot)
        draws = np.mean([stats.model_draws(clip_array(ev), idx, ev.eps_max)["fooling_auc"] for ev in records], axis=0)
        found = stats.percentile_interval(100 * draws, value, data.level)
        return value, found.low, found.high, False
    if len(group) == 1 and "fooling_auc_ci_low" in group:
        one = group.iloc[0]
        return value, 100 * float(one["fooling_auc_ci_low"]), 100 * float(one["fooling_auc_ci_high"]), False
    return value, math.nan, math.nan, False


def _ratio_cell(data: ReportData, pairs: list[tuple[pd.Series, pd.Series]]
                ) -> tuple[float, float, float, bool, float]:
    """ε_r averaged over the attacks with a complete ratio (else over the partial ones, flagged), with the
    paired bootstrap interval of that mean and the clips it rests on (the smallest base set; ``nan`` unknown)."""
    rows = []
    for d, o in pairs:
        ratio = _logged_ratio(d, o)
        if math.isfinite(ratio["eps_r"]):
            rows.append((d, o, ratio))
    complete = [r for r in rows if r[2]["eps_r_partial"] == 0]
    used, partial = (complete, False) if complete else (rows, bool(rows))
    if not used:
        return math.nan, math.nan, math.nan, False, math.nan
    value = float(np.mean([r[2]["eps_r"] for r in used]))
    records = [(data.records.get(d["run_id"]), data.records.get(o["run_id"])) for d, o, _ in used]
    if all(a is not None and b is not None for a, b in records):
        found = mean_ratio_interval(records, n_boot=data.n_boot, level=data.level)  # type: ignore[arg-type]
        clips = min(stats.ratio_base_size(clip_array(a), clip_array(b)) for a, b in records)  # type: ignore[arg-type]
        return value, found.low, found.high, partial, float(clips)
    clips = min((r[2]["eps_r_n"] for r in used if math.isfinite(r[2]["eps_r_n"])), default=math.nan)
    if len(used) == 1:
        logged = used[0][2]
        return value, logged.get("eps_r_ci_low", math.nan), logged.get("eps_r_ci_high", math.nan), partial, clips
    return value, math.nan, math.nan, partial, clips


def _logged_ratio(d: pd.Series, o: pd.Series) -> dict[str, float]:
    """ε_r as the runner logged it on the defended run, else from the two runs' summaries (Eq. 15)."""
    logged = {k: float(d.get(k, math.nan)) for k in RATIO}
    if math.isfinite(logged["eps_r"]) or math.isnan(float(d.get("mean_eps_star_within_eps090", math.nan))):
        return logged
    parts = [float(x.get(m, math.nan)) for x in (d, o) for m in ("mean_eps_star_within_eps090", "eps_090")]
    return {**logged, **ratio_from_summaries(*parts)} if not any(math.isnan(p) for p in parts) else logged


def _table(data: ReportData, cells: pd.DataFrame, digits: int, verdict: bool, attacks: Sequence[str] | None,
           seed: str | None = None) -> pd.DataFrame:
    """Render per-seed cells: one seed, or the mean and t-interval across seeds."""
    if seed is not None:
        cells = cells[cells["seed"] == seed]
    index = data.table_rows(attacks)
    grouped = {k: g for k, g in cells.groupby([*ROWS, "victim"])}

    def cell(key: tuple[str, str, str], victim: str) -> str:
        g = grouped.get((*key, victim))
        if g is None or g.empty:
            return ""
        value, low, high, n = _seed_mean(list(g["value"]), list(zip(g["low"], g["high"])))
        return (_with_interval(value, low, high, digits, n, verdict, float(g["n"].min()))
                + ("*" if g["partial"].any() else "")
                + (WEAK_MARK if g["weak"].any() else ""))

    return _render(index, data.victims, cell)


def table_2_values(data: ReportData, defense: str | None = None, *, model: Model = "defended",
                   attacks: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-seed cells of Table II: mean fooling AUC (%) over each row's attacks, with intervals."""
    if model not in ("defended", "original"):
        raise ValueError(f"model must be 'defended' or 'original', got '{model}'")
    defense = ORIGINAL if model == "original" else data.resolve(defense)
    return _cells(data, defense, "fooling_auc", attacks) if defense else _cells(data, "", "fooling_auc", [])


def table_2(data: ReportData, defense: str | None = None, *, model: Model = "defended",
            attacks: Sequence[str] | None = None, seed: str | None = None) -> pd.DataFrame:
    """Seed 004's Table II: mean fooling AUC (%) of the defended (or the original) models, ``[low, high]``."""
    return _table(data, table_2_values(data, defense, model=model, attacks=attacks), 2, False, attacks, seed)


def table_3_values(data: ReportData, defense: str | None = None,
                   attacks: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-seed cells of Table III: ε_r averaged over each row's attacks (complete ones; else the partial
    ones, ``partial`` True), with the paired-bootstrap interval of that mean."""
    return _cells(data, data.resolve(defense) or "", "eps_r", attacks)


def table_3_matrices(data: ReportData, defense: str | None = None, attacks: Sequence[str] | None = None
                     ) -> dict[str, pd.DataFrame]:
    """Table III as float matrices ``(rows) × victim``: ``value``, ``low``, ``high`` (across seeds when
    several), ``n`` (clips the one-seed verdict rests on; ``nan`` across seeds, whose t-interval rests on the
    seeds) and bool ``partial``, for the heat map."""
    cells = table_3_values(data, defense, attacks)
    index, columns = data.table_rows(attacks), data.victims
    out = {k: pd.DataFrame(math.nan, index=index, columns=columns) for k in ("value", "low", "high", "n")}
    out["partial"] = pd.DataFrame(False, index=index, columns=columns)
    for (d, f, g, v), group in cells.groupby([*ROWS, "victim"]):
        value, low, high, seeds = _seed_mean(list(group["value"]), list(zip(group["low"], group["high"])))
        clips = float(group["n"].min()) if seeds == 1 else math.nan
        for name, x in (("value", value), ("low", low), ("high", high), ("n", clips)):
            out[name].at[(d, f, g), v] = x
        out["partial"].at[(d, f, g), v] = bool(group["partial"].any())
    return out


def table_3(data: ReportData, defense: str | None = None, attacks: Sequence[str] | None = None,
            seed: str | None = None) -> pd.DataFrame:
    """Seed 004's Table III: ``ε_r [low, high] verdict`` per cell, three decimals; ``*`` marks a cell where
    no attack reached FR 0.9 on both models (a mean of lower bounds)."""
    return _table(data, table_3_values(data, defense, attacks), 3, True, attacks, seed)


def verdict_counts(data: ReportData, defense: str | None = None) -> dict[str, int]:
    """How many Table III cells are ↑, ↓, ≈ and undetermined (across seeds where several)."""
    found = table_3_matrices(data, defense)
    counts = {"↑": 0, "↓": 0, "≈": 0, stats.UNDETERMINED: 0}
    for value, low, high, n in zip(*(found[k].to_numpy().ravel() for k in ("value", "low", "high", "n"))):
        if math.isfinite(value):
            counts[stats.verdict(low, high, n)] += 1
    return counts


def per_attack(data: ReportData, attacks: Sequence[str] | None = None) -> pd.DataFrame:
    """Long table: one row per (defense, dataset, representation, victim, seed, attack) with both models'
    summaries (suffixes ``_original``/``_defended``), ε_r, its interval, the Wilcoxon p-value, the ε₀.₉
    ratio and the partial flag.

    ε_r is the value the runner logged on the defended run; where it is absent it is computed from the
    two runs' ``mean_eps_star_within_eps090`` and ``eps_090`` (seed 004 Eq. 15).
    """
    runs = data._attack_runs(attacks)
    keys = [*CELL, "seed", "attack", "attacks"]
    orig = runs[runs["defense"] == ORIGINAL].reindex(columns=keys + list(SUMMARY))
    frames = []
    for defense in data.defenses or [ORIGINAL]:
        adv = runs[runs["defense"] == defense] if defense != ORIGINAL else runs.iloc[:0]
        adv = adv.reindex(columns=keys + list(SUMMARY) + list(RATIO))
        both = orig.merge(adv, on=keys, how="outer", suffixes=("_original", "_defended"))
        both.insert(0, "defense", defense)
        frames.append(both)
    table = pd.concat(frames, ignore_index=True).rename(columns={"frontend": "representation"})
    for i in table.index[table["eps_r"].isna()]:
        parts = [table.at[i, f"{m}_{side}"] for side in ("defended", "original")
                 for m in ("mean_eps_star_within_eps090", "eps_090")]
        if not any(math.isnan(p) for p in parts):
            ratio = ratio_from_summaries(*parts)
            for name in ratio:
                table.at[i, name] = ratio[name]
    return table.sort_values(["defense", "dataset", "representation", "victim", "seed", "attack"],
                             kind="stable").reset_index(drop=True)


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub pipe table with aligned columns (``NaN`` → empty, ``|`` escaped)."""
    def text(value: Any) -> str:
        if isinstance(value, float) and math.isnan(value):
            return ""
        return str(value).replace("|", "\\|")

    header = [text(c) for c in frame.columns]
    body = [[text(v) for v in row] for row in frame.itertuples(index=False)]
    widths = [max(len(cell) for cell in column) for column in zip(header, *body)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def _budget_note(data: ReportData) -> str:
    runs = data.of_kind("attack")
    if runs.empty or "eps_max" not in runs:
        return "ε_max not logged"
    pairs = sorted({(g, float(e)) for g, e in zip(runs["attacks"], runs["eps_max"]) if math.isfinite(e)})
    return "ε_max: " + "; ".join(f"{g} {e:g}" for g, e in pairs) if pairs else "ε_max not logged"


def _sections(data: ReportData, attacks: Sequence[str] | None) -> Iterator[tuple[str, str, pd.DataFrame]]:
    """``(file stem, caption, table)`` for every table of the report."""
    budget = _budget_note(data)
    level = f"{int(round(data.level * 100))} %"
    seeds = data.seeds
    across = (f"mean over {len(seeds)} training seeds [{level} t-interval across seeds] (n seeds)" if len(seeds) > 1
              else f"[{level} bootstrap interval over evaluation clips]")
    for defense in data.defenses or [None]:
        name = defense or ORIGINAL
        yield (f"table_1_{name}", f"Table I: test accuracy (%) of the original models, (drop in points with the "
               f"'{name}' defense)", table_1(data, defense))
        if defense is not None:
            yield (f"table_2_{name}", f"Table II: mean fooling AUC (%) over each row's attacks of the '{name}' "
                   f"models, {across} ({budget})", table_2(data, defense, attacks=attacks))
            yield (f"table_3_{name}", f"Table III: ε_r ('{name}' / original, Eq. 15); the '{WORST_CASE[2:]}' row "
                   "of each group takes each clip's smallest ε* over the group's attacks (AutoAttack's principle), "
                   "the group's row averages ε_r over its attacks where both models reach FR 0.9 (seed 004), then "
                   f"each attack; {across}; ↑ interval above 1, ↓ below, ≈ contains 1, {stats.UNDETERMINED} "
                   f"undetermined: fewer than {stats.N_MIN} clips in a model's base set, where the bootstrap "
                   "interval falls short of its level; n=… clips in the smaller base set, (n=…) seeds "
                   "(* = no attack reaches 0.9: a mean of lower bounds; no interval = undetermined, more than "
                   f"5 % of the draws undefined, too few broken clips; {WEAK_MARK} = an attack broke fewer than "
                   f"{WEAK_SHARE:.0%} of a model's base set: its ε* describe the easy clips only)",
                   table_3(data, defense, attacks))
            if len(seeds) > 1:
                for seed in seeds:
                    yield (f"table_3_{name}_seed{seed}", f"Table III, training seed {seed}: ε_r [{level} paired "
                           "bootstrap interval over evaluation clips]", table_3(data, defense, attacks, seed))
    yield ("table_2_original", f"Table II (original models): mean fooling AUC (%) over each row's attacks, "
           f"{across} ({budget})", table_2(data, model="original", attacks=attacks))
    from evaluation.defense_table import comparison_sections  # it builds on this module's cells

    yield from comparison_sections(data, attacks)
    yield from transfer_sections(data)


def _transfers(client: MlflowClient, experiment_id: str) -> list[tuple[dict[str, str], TransferRecord]]:
    """Transfer records of the grid (``advaudio.kind = transfer`` runs, :mod:`defense.grid_transfer`)."""
    out = []
    for run in iter_runs(experiment_id, "tags.`advaudio.kind` = 'transfer'", client):
        coords = {c: run.data.tags.get(TAG_PREFIX + c, "") for c in ("dataset", "frontend", "seed", "attack")}
        path = Path(client.download_artifacts(run.info.run_id, "transfer.json"))
        out.append((coords, TransferRecord.from_dict(json.loads(path.read_text()))))
    return sorted(out, key=lambda item: tuple(item[0].values()))


def transfer_sections(data: ReportData) -> Iterator[tuple[str, str, pd.DataFrame]]:
    """Seed 001's Table 5 between the grid's models of each data set, representation and seed, per attack:
    ``T[a→b] [low, high] (n)`` with rows = the model tested on, columns = the model the examples were crafted on."""
    level = f"{int(round(data.level * 100))} %"
    for coords, record in data.transfers:
        rates = transfer_rates([record], n_boot=data.n_boot, level=data.level)
        table = rates["value"].astype(object)
        for b in table.index:
            for a in table.columns:
                value = rates["value"].at[b, a]
                table.at[b, a] = "NA" if a == b else _with_interval(
                    100 * value, 100 * rates["low"].at[b, a], 100 * rates["high"].at[b, a], 1) + \
                    f" (n={int(rates['n'].at[b, a])})"
        stem = "_".join(["transfer", coords["dataset"], coords["frontend"], f"seed{coords['seed']}", coords["attack"]])
        yield (stem, f"Transfer (seed 001, Table 5) of {coords['attack']} examples between the models of "
               f"{coords['dataset']} / {coords['frontend']}, seed {coords['seed']}: % of the examples crafted on the "
               "column's model (fooling it, from its base set) that fool the row's model, among clips it classifies "
               f"correctly [{level} bootstrap interval over clips] (n = examples counted). Seed 001 found 0-10 %.",
               table.reset_index())


def write_tables(data: ReportData, out_dir: Path, attacks: Sequence[str] | None = None) -> list[Path]:
    """Write every table as ``.csv`` and ``.md`` (caption + pipe table) plus ``per_attack.csv``.

    Files: ``table_{1,2,3}_<defense>`` per defense (only ``table_1_none`` when there is none),
    ``table_2_original``, ``defense_comparison`` (when there is a defense, :mod:`evaluation.defense_table`),
    the transfer tables and ``per_attack.csv``.

    Returns:
        The paths written.
    """
    out_dir = Path(out_dir)
    paths: list[Path] = []
    for stem, caption, table in _sections(data, attacks):
        paths += [_write_text(out_dir / f"{stem}.csv", table.to_csv(index=False)),
                  _write_text(out_dir / f"{stem}.md", f"**{caption}**\n\n{to_markdown(table)}\n")]
    paths.append(_write_text(out_dir / "per_attack.csv", per_attack(data, attacks).to_csv(index=False)))
    log.info("wrote %d report files to %s", len(paths), out_dir)
    return paths


def _write_text(path: Path, text: str) -> Path:
    """Write a report file whole or not at all (UTF-8)."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")), "report file")


def format_tables(data: ReportData, attacks: Sequence[str] | None = None) -> str:
    """All tables as captioned Markdown text, for the terminal."""
    return "\n\n".join(f"{caption}\n\n{to_markdown(table)}" for _, caption, table in _sections(data, attacks))
