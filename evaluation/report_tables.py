"""The arithmetic of seed 004's Tables I-III on :class:`~evaluation.report_data.ReportData`: per-seed cells with
their bootstrap intervals (fooling AUC, ε_r with the paired interval and the clips it rests on), means and
t-intervals across seeds, Table III as matrices for the heat map, verdict counts and the per-attack long table.
The cell text (``value [low, high] verdict n=…``) is :func:`with_interval`; :mod:`evaluation.report` renders.
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from evaluation import stats
from evaluation.ensemble import WEAK_SHARE, is_ensemble
from evaluation.intervals import clip_array, mean_ratio_interval
from evaluation.metrics import ratio_from_summaries
from evaluation.report_data import ROWS, ReportData, attack_names, broke_share_of
from evaluation.tracking import ORIGINAL

CELL = ["dataset", "frontend", "victim"]
WEAK_MARK = "†"
"""Marks a cell where an attack broke fewer than half of a model's base set (:data:`evaluation.ensemble.WEAK_SHARE`)."""
SUMMARY = ("fooling_auc", "fr_at_eps_max", "eps_090", "mean_eps_star_within_eps090", "mean_eps_star",
           "base_size", "clean_accuracy", "adv_accuracy", "snr_db", "perceptual_db", "pesq", "stoi",
           "median_iterations", "median_queries", "mean_total_queries", "eps_max", "fooling_auc_ci_low",
           "fooling_auc_ci_high")
RATIO = ("eps_r", "eps090_ratio", "eps_r_partial", "eps_r_ci_low", "eps_r_ci_high", "eps_r_p", "eps_r_n")
Model = Literal["defended", "original"]


def seed_mean(values: list[float], intervals: list[tuple[float, float]]) -> tuple[float, float, float, int]:
    """One seed: its value and bootstrap interval; several: the mean and the t-interval across seeds."""
    if len(values) == 1:
        return values[0], intervals[0][0], intervals[0][1], 1
    found = stats.seed_interval(values)
    return found.value, found.low, found.high, len(values)


def with_interval(value: float, low: float, high: float, digits: int, n_seeds: int = 1,
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
        value, low, high, n = seed_mean(acc, ci * len(acc))
        rows.append(dict(zip([*CELL, "defense"], key), value=100 * value, low=100 * low, high=100 * high, n=n))
    return pd.DataFrame(rows, columns=[*CELL, "defense", "value", "low", "high", "n"])


def cells(data: ReportData, defense: str, metric: str, attacks: Sequence[str] | None) -> pd.DataFrame:
    """Long table of per-seed cells: ``dataset, representation, attacks, victim, seed, value, low, high,
    partial`` for ``metric`` = ``"fooling_auc"`` (runs of ``defense``) or ``"eps_r"`` (``defense`` vs original);
    computed once per ``data`` (:meth:`~evaluation.report_data.ReportData.memo`: a shared frame, not to be modified)."""
    return data.memo(("cells", defense, metric, attack_names(attacks)), lambda: _cells(data, defense, metric, attacks))


def _cells(data: ReportData, defense: str, metric: str, attacks: Sequence[str] | None) -> pd.DataFrame:
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


def table_2_values(data: ReportData, defense: str | None = None, *, model: Model = "defended",
                   attacks: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-seed cells of Table II: mean fooling AUC (%) over each row's attacks, with intervals."""
    if model not in ("defended", "original"):
        raise ValueError(f"model must be 'defended' or 'original', got '{model}'")
    defense = ORIGINAL if model == "original" else data.resolve(defense)
    return cells(data, defense, "fooling_auc", attacks) if defense else cells(data, "", "fooling_auc", [])


def table_3_values(data: ReportData, defense: str | None = None,
                   attacks: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-seed cells of Table III: ε_r averaged over each row's attacks (complete ones; else the partial
    ones, ``partial`` True), with the paired-bootstrap interval of that mean."""
    return cells(data, data.resolve(defense) or "", "eps_r", attacks)


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
        value, low, high, seeds = seed_mean(list(group["value"]), list(zip(group["low"], group["high"])))
        clips = float(group["n"].min()) if seeds == 1 else math.nan
        for name, x in (("value", value), ("low", low), ("high", high), ("n", clips)):
            out[name].at[(d, f, g), v] = x
        out["partial"].at[(d, f, g), v] = bool(group["partial"].any())
    return out


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
    runs = data.attack_runs(attacks)
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
