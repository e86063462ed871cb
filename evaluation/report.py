"""Seed 004's Tables I, II and III rebuilt from MLflow alone (CSV, Markdown, terminal).

Seed 004 (*Adversarially training for audio classifiers*, Section VIII) reports, for every data set ×
representation (rows) and victim architecture (columns):

- Table I: test accuracy (%) of the original model and, in parentheses, its drop in percentage points
  after adversarial training: ``"88.32, (10.35)"``; the parenthesis is left out when the defended
  model is missing.
- Table II: fooling AUC (%) averaged over the attacks, of the adversarially trained models
  (``model="original"``: the same for the original models). The AUC runs over ``[0, ε_max]`` as
  logged by the runner; seed 004 uses ‖ε‖₂ ≤ 3.
- Table III: ε_r (Eq. 15) averaged over the attacks whose ε_r is complete; ``*`` marks a cell where
  none is, so the mean is over partial ratios (a model never reached FR ≥ 0.9, so each is a lower
  bound, see :mod:`evaluation.metrics`).

The MLflow data model (written by :mod:`defense.runner`): training runs tagged ``advaudio.kind =
train`` with metric ``test_accuracy``; attack runs tagged ``advaudio.kind = attack`` and
``advaudio.attack`` with the :func:`evaluation.harness.summarize` metrics, plus ``eps_r``,
``eps090_ratio`` and ``eps_r_partial`` on the defended model's runs. Both carry the coordinate tags
``advaudio.dataset``, ``advaudio.frontend``, ``advaudio.victim`` and ``advaudio.defense``
(``none`` = the original model). Missing cells render as empty strings.
"""
from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import mlflow
import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from evaluation.metrics import ratio_from_summaries
from evaluation.tracking import check_server, default_tracking_uri, iter_runs
from victims.registry import ConfigError

log = logging.getLogger(__name__)

ORIGINAL = "none"
TAG_PREFIX = "advaudio."
COORDS = ("kind", "dataset", "frontend", "victim", "defense", "attack")
CELL = ["dataset", "frontend", "victim"]
ROWS = ["dataset", "representation"]
SUMMARY = ("fooling_auc", "fr_at_eps_max", "eps_090", "mean_eps_star_within_eps090", "mean_eps_star",
           "base_size", "clean_accuracy", "adv_accuracy", "snr_db", "median_iterations", "eps_max")
RATIO = ("eps_r", "eps090_ratio", "eps_r_partial")
Model = Literal["defended", "original"]


@dataclass
class ReportData:
    """The runs of one MLflow experiment as a tidy table.

    Attributes:
        experiment: MLflow experiment name.
        runs: one row per run (the newest finished run per coordinate): ``run_id``,
            ``parent_run_id``, ``status``, ``start_time``, the coordinates :data:`COORDS` (tags without
            the ``advaudio.`` prefix; ``""`` where absent) and one column per metric (``NaN`` where
            not logged; ±∞ restored from MLflow's ±largest-float).
    """

    experiment: str
    runs: pd.DataFrame

    def of_kind(self, kind: str, defense: str | None = None) -> pd.DataFrame:
        """Runs of ``kind`` (``"train"`` or ``"attack"``), optionally of one defense."""
        out = self.runs[self.runs["kind"] == kind]
        return out if defense is None else out[out["defense"] == defense]

    @property
    def defenses(self) -> list[str]:
        """Names of the adversarial-training defenses present (every defense but ``none``)."""
        return sorted(set(self.runs["defense"]) - {ORIGINAL, ""})

    @property
    def victims(self) -> list[str]:
        return sorted(set(self.runs["victim"]) - {""})

    @property
    def rows(self) -> pd.MultiIndex:
        """``(dataset, representation)`` pairs present in any run, sorted."""
        pairs = sorted({(d, f) for d, f in zip(self.runs["dataset"], self.runs["frontend"]) if d and f})
        return pd.MultiIndex.from_tuples(pairs, names=ROWS)

    def resolve(self, defense: str | None) -> str | None:
        """``defense`` checked against the data; ``None`` picks the only defended one (or none)."""
        if defense is None:
            if len(self.defenses) > 1:
                raise ValueError(f"several defenses in '{self.experiment}' ({', '.join(self.defenses)}): name one")
            return self.defenses[0] if self.defenses else None
        if defense not in self.defenses:
            known = ", ".join(self.defenses) or "none"
            raise ValueError(f"defense '{defense}' has no runs in '{self.experiment}'; defended models: {known}")
        return defense


def collect(experiment: str, tracking_uri: str | None = None) -> ReportData:
    """Read every training and attack run of ``experiment`` from MLflow.

    Args:
        experiment: MLflow experiment name (the experiment config's name).
        tracking_uri: MLflow URI; default: the one MLflow is pointed at (by
            :func:`evaluation.tracking.setup_tracking` or ``$MLFLOW_TRACKING_URI``), else the
            project's SQLite store under ``outputs/``.

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
    rows = [r for r in rows if r["kind"] in ("train", "attack")]
    if not rows:
        log.warning("experiment '%s' has no training or attack runs", experiment)
    base = ["run_id", "parent_run_id", "status", "start_time", "finished_tag", *COORDS]
    frame = pd.DataFrame(rows)
    frame = frame.reindex(columns=base + sorted(set(frame.columns) - set(base)))
    return ReportData(experiment, _newest(frame))


def _restore(value: float) -> float:
    """MLflow's SQL store saves ±∞ as ±largest float64: map it back."""
    return math.copysign(math.inf, value) if abs(value) >= sys.float_info.max else value


def _row(run: Run) -> dict[str, Any]:
    tags = run.data.tags
    row: dict[str, Any] = {"run_id": run.info.run_id, "parent_run_id": tags.get("mlflow.parentRunId", ""),
                           "status": run.info.status, "start_time": run.info.start_time or 0,
                           "finished_tag": tags.get(TAG_PREFIX + "status") == "finished"}
    row.update({c: tags.get(TAG_PREFIX + c, "") for c in COORDS})
    row.update({k: _restore(float(v)) for k, v in run.data.metrics.items()})
    return row


def _newest(frame: pd.DataFrame) -> pd.DataFrame:
    """One run per coordinate: finished ones first (runner tag, then MLflow status), then the newest."""
    if frame.empty:
        return frame
    rank = frame.assign(_done=frame["status"] == "FINISHED")
    rank = rank.sort_values(["finished_tag", "_done", "start_time"], kind="stable")
    kept = rank.drop_duplicates(subset=list(COORDS), keep="last").drop(columns="_done")
    return kept.sort_values(list(COORDS), kind="stable").reset_index(drop=True)


def _matrix(data: ReportData, kind: str, defense: str | None, metric: str,
            attacks: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean of ``metric`` over the runs of each cell: ``(dataset, representation) × victim``, NaN if none."""
    runs = data.of_kind(kind, defense) if defense is not None else data.of_kind(kind).iloc[:0]
    if attacks is not None:
        runs = runs[runs["attack"].isin(list(attacks))]
    values = runs.reindex(columns=[*CELL, metric])
    mean = values.groupby(CELL)[metric].mean() if not values.empty else pd.Series(dtype=float)
    table = mean.unstack("victim") if not mean.empty else pd.DataFrame()
    table.index = table.index.set_names(ROWS) if not table.empty else table.index
    return table.reindex(index=data.rows, columns=data.victims).astype(float)


def _render(values: pd.DataFrame, cell: Any) -> pd.DataFrame:
    """String table with ``dataset``/``representation`` columns; ``cell(row_key, victim)`` → str."""
    out = pd.DataFrame({name: values.index.get_level_values(name) for name in ROWS})
    for victim in values.columns:
        out[victim] = [cell(key, victim) for key in values.index]
    return out


def table_1(data: ReportData, defense: str | None = None) -> pd.DataFrame:
    """Seed 004's Table I: ``"acc_orig, (drop)"`` in percent, drop = original − defended accuracy."""
    defense = data.resolve(defense)
    orig = _matrix(data, "train", ORIGINAL, "test_accuracy") * 100
    adv = _matrix(data, "train", defense, "test_accuracy") * 100

    def cell(key: tuple[str, str], victim: str) -> str:
        acc, acc_adv = orig.at[key, victim], adv.at[key, victim]
        if math.isnan(acc):
            return ""
        return f"{acc:.2f}" if math.isnan(acc_adv) else f"{acc:.2f}, ({acc - acc_adv:.2f})"

    return _render(orig, cell)


def table_2_values(data: ReportData, defense: str | None = None, *, model: Model = "defended",
                   attacks: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean fooling AUC (%) over the attacks, ``(dataset, representation) × victim`` floats."""
    if model not in ("defended", "original"):
        raise ValueError(f"model must be 'defended' or 'original', got '{model}'")
    defense = ORIGINAL if model == "original" else data.resolve(defense)
    return _matrix(data, "attack", defense, "fooling_auc", attacks) * 100


def table_2(data: ReportData, defense: str | None = None, *, model: Model = "defended",
            attacks: Sequence[str] | None = None) -> pd.DataFrame:
    """Seed 004's Table II: mean fooling AUC (%) of the defended (or the original) models."""
    values = table_2_values(data, defense, model=model, attacks=attacks)
    return _render(values, lambda key, v: "" if math.isnan(values.at[key, v]) else f"{values.at[key, v]:.2f}")


def per_attack(data: ReportData, attacks: Sequence[str] | None = None) -> pd.DataFrame:
    """Long table: one row per (defense, dataset, representation, victim, attack) with both models'
    summaries (suffixes ``_original``/``_defended``) and ε_r, ε₀.₉ ratio and the partial flag.

    ε_r is the value the runner logged on the defended run; where it is absent it is computed from the
    two runs' ``mean_eps_star_within_eps090`` and ``eps_090`` (seed 004 Eq. 15).
    """
    runs = data.of_kind("attack")
    if attacks is not None:
        runs = runs[runs["attack"].isin(list(attacks))]
    keys = [*CELL, "attack"]
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
            for name in RATIO:
                table.at[i, name] = ratio[name]
    return table.sort_values(["defense", *ROWS, "victim", "attack"], kind="stable").reset_index(drop=True)


def table_3_values(data: ReportData, defense: str | None = None,
                   attacks: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ε_r averaged over the attacks and, alongside, whether the average is partial.

    Eq. 15 compares budgets at which both models are fooled with AUC > 0.9, so the average runs over the
    attacks whose ε_r is complete (FR reached 0.9 on both models). Only where no attack's is complete
    does it fall back to the partial ratios (lower bounds), and the cell is flagged. Non-finite values
    are left out.

    Returns:
        ``(eps_r, partial)``, both ``(dataset, representation) × victim``; ``partial`` is bool.
    """
    defense = data.resolve(defense)
    long = per_attack(data, attacks)
    long = long[(long["defense"] == defense) & long["eps_r"].map(lambda v: math.isfinite(v))]
    index, columns = data.rows, data.victims
    if long.empty:
        empty = pd.DataFrame(math.nan, index=index, columns=columns)
        return empty, empty.notna()
    long = long.assign(complete=long["eps_r_partial"].fillna(0) == 0)
    keys = ["dataset", "representation", "victim"]
    has_complete = long.groupby(keys)["complete"].transform("any")
    used = long[long["complete"] | ~has_complete].groupby(keys)
    mean = used["eps_r"].mean().unstack("victim").reindex(index=index, columns=columns)
    partial = (~used["complete"].any()).unstack("victim").reindex(index=index, columns=columns)
    return mean.astype(float), partial.fillna(False).astype(bool)


def table_3(data: ReportData, defense: str | None = None, attacks: Sequence[str] | None = None) -> pd.DataFrame:
    """Seed 004's Table III: ε_r averaged over the attacks with a complete ε_r, three decimals; ``*``
    marks a cell where no attack reached FR 0.9 on both models (a mean of lower bounds)."""
    values, partial = table_3_values(data, defense, attacks)

    def cell(key: tuple[str, str], victim: str) -> str:
        value = values.at[key, victim]
        return "" if math.isnan(value) else f"{value:.3f}" + ("*" if partial.at[key, victim] else "")

    return _render(values, cell)


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
    eps = sorted({float(e) for e in data.of_kind("attack").get("eps_max", pd.Series(dtype=float)).dropna()})
    return f"ε_max = {', '.join(f'{e:g}' for e in eps)}" if eps else "ε_max not logged"


def _sections(data: ReportData, attacks: Sequence[str] | None) -> Iterator[tuple[str, str, pd.DataFrame]]:
    """``(file stem, caption, table)`` for every table of the report."""
    budget = _budget_note(data)
    for defense in data.defenses or [None]:
        name = defense or ORIGINAL
        yield (f"table_1_{name}", f"Table I: test accuracy (%) of the original models, (drop in points after "
               f"'{name}' adversarial training)", table_1(data, defense))
        if defense is not None:
            yield (f"table_2_{name}", f"Table II: mean fooling AUC (%) over the attacks of the '{name}' "
                   f"models ({budget})", table_2(data, defense, attacks=attacks))
            yield (f"table_3_{name}", f"Table III: ε_r ('{name}' / original, Eq. 15) averaged over the attacks "
                   "where both models reach FR 0.9 (* = none does: a mean of lower bounds)",
                   table_3(data, defense, attacks))
    yield ("table_2_original", f"Table II (original models): mean fooling AUC (%) over the attacks ({budget})",
           table_2(data, model="original", attacks=attacks))


def write_tables(data: ReportData, out_dir: Path, attacks: Sequence[str] | None = None) -> list[Path]:
    """Write every table as ``.csv`` and ``.md`` (caption + pipe table) plus ``per_attack.csv``.

    Files: ``table_{1,2,3}_<defense>`` per adversarial-training defense (only ``table_1_none`` when
    there is none), ``table_2_original`` and ``per_attack.csv``.

    Returns:
        The paths written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for stem, caption, table in _sections(data, attacks):
        table.to_csv(out_dir / f"{stem}.csv", index=False)
        (out_dir / f"{stem}.md").write_text(f"**{caption}**\n\n{to_markdown(table)}\n", encoding="utf-8")
        paths += [out_dir / f"{stem}.csv", out_dir / f"{stem}.md"]
    per_attack(data, attacks).to_csv(out_dir / "per_attack.csv", index=False)
    paths.append(out_dir / "per_attack.csv")
    log.info("wrote %d report files to %s", len(paths), out_dir)
    return paths


def format_tables(data: ReportData, attacks: Sequence[str] | None = None) -> str:
    """All tables as captioned Markdown text, for the terminal."""
    return "\n\n".join(f"{caption}\n\n{to_markdown(table)}" for _, caption, table in _sections(data, attacks))
