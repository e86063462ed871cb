"""The defense comparison table (issue 11): every defense of a grid side by side, from MLflow alone.

One row per (data set, representation, attack group, victim, defense, evaluation): the deployed model's test
accuracy (its clean-accuracy cost against the original; for smoothing, with one noise draw per clip), the mean
fooling AUC (%) and ε_r (Eq. 15) over the group's attacks with their bootstrap intervals, certified accuracy at
the logged radii for randomized smoothing (Cohen, Rosenfeld & Kolter 2019) and the gradient-masking checks (naive vs
adaptive for an inference-time defense; single- vs multi-step and white- vs black-box for every defended model,
white-box vs transfer for a trained one: :mod:`evaluation.masking`). An inference-time defense (input transform,
smoothing) has two rows, ``naive`` (gradients through the transform as it is) and ``adaptive`` (BPDA/EoT; Athalye,
Carlini & Wagner 2018), or one ``naive = adaptive`` row when BPDA and EoT change nothing (a differentiable,
deterministic transform, or only black-box attacks). Trained defenses have one row (``—``).
"""
from __future__ import annotations

import math
import re
from typing import Iterator, Sequence

import pandas as pd

from evaluation import stats
from evaluation.report_data import ROWS, ReportData
from evaluation.report_tables import WEAK_MARK, cells, seed_mean, with_interval
from evaluation.tracking import ORIGINAL

EVALUATIONS = ("—", "naive", "adaptive", "naive = adaptive")
CERTIFIED = re.compile(r"^certified_accuracy\.r([0-9.eE+-]+)$")
TRAINED_MASKING = re.compile(r"^sanity\.gradient_masking\.(single_step|black_box|transfer)_[a-z0-9_]+$")
"""The checks of :mod:`evaluation.masking` (every defended model, whatever its attack group)."""


def _labels(modes: set[str]) -> list[tuple[str, str]]:
    """``(label, view mode)`` rows of one defense and attack group (see the module docstring)."""
    if "adaptive" in modes:
        return [("naive", "naive"), ("adaptive", "adaptive")]
    if "naive" in modes:
        return [("naive = adaptive", "naive")]
    return [("—", "")]


def comparison_values(data: ReportData, attacks: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-seed cells: ``dataset, representation, attacks, victim, seed, defense, evaluation`` with
    ``auc``/``auc_low``/``auc_high``, ``eps_r``/``eps_r_low``/``eps_r_high``/``partial`` and the group's
    attack names (``members``)."""
    runs = data.all_runs if data.all_runs is not None else data.runs
    runs = runs[runs["kind"] == "attack"]
    if attacks is not None:
        runs = runs[runs["attack"].isin(list(attacks))]
    views = {mode: data.view(mode) if mode else data for mode in ("", "naive", "adaptive")}
    frames = []
    for defense in [ORIGINAL, *data.defenses]:
        for group, found in runs[runs["defense"] == defense].groupby("attacks"):
            for label, mode in _labels(set(found["mode"])):
                view = views[mode]
                found_cells = cells(view, defense, "fooling_auc", attacks).drop(columns="n").rename(
                    columns={"value": "auc", "low": "auc_low", "high": "auc_high", "partial": "auc_partial",
                             "weak": "auc_weak"})
                if defense != ORIGINAL:
                    ratio = cells(view, defense, "eps_r", attacks).rename(
                        columns={"value": "eps_r", "low": "eps_r_low", "high": "eps_r_high", "n": "eps_r_n"})
                    found_cells = found_cells.merge(ratio, on=[*ROWS, "victim", "seed"], how="outer")
                found_cells = found_cells[found_cells["attacks"] == group]
                frames.append(found_cells.assign(defense=defense, evaluation=label,
                                                 members=",".join(sorted(set(found["attack"])))))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _model_cells(data: ReportData, key: tuple[str, ...], defense: str, members: list[str]) -> tuple[str, str, str]:
    """Test accuracy, certified accuracy and the masking flag of the attacks ``members`` of one model cell (over
    its seeds)."""
    models = data.of_kind("train", defense)
    models = models[(models["dataset"] == key[0]) & (models["frontend"] == key[1]) & (models["victim"] == key[2])]
    if models.empty:
        return "", "", ""
    metric = "deployed_test_accuracy" if models.get("deployed_test_accuracy", pd.Series(dtype=float)).notna().any() \
        else "test_accuracy"
    acc = [float(v) for v in models[metric] if math.isfinite(v)]
    intervals = [(float(lo), float(hi)) for lo, hi in zip(models.get(f"{metric}_ci_low", [math.nan] * len(models)),
                                                          models.get(f"{metric}_ci_high", [math.nan] * len(models)))]
    accuracy = ""
    if acc:
        value, low, high, n = seed_mean(acc, intervals[:len(acc)])
        accuracy = with_interval(100 * value, 100 * low, 100 * high, 1, n)
    certified = []
    for column in ["smoothed_accuracy", *sorted((c for c in models.columns if CERTIFIED.match(c)),
                                                key=lambda c: float(CERTIFIED.match(c).group(1)))]:
        values = [float(v) for v in models[column] if math.isfinite(v)] if column in models else []
        if not values:
            continue
        ci = list(zip(models[f"{column}_ci_low"], models[f"{column}_ci_high"]))[:len(values)]
        value, low, high, n = seed_mean(values, ci)
        name = "smoothed" if column == "smoothed_accuracy" else f"r={CERTIFIED.match(column).group(1)}"
        certified.append(f"{name}: {with_interval(100 * value, 100 * low, 100 * high, 1, n)}")
    masking = [f"sanity.gradient_masking.{a}" for a in members if f"sanity.gradient_masking.{a}" in models]
    masking += sorted(c for c in models.columns if TRAINED_MASKING.match(c))
    flagged = sorted(c.split(".", 2)[2] for c in masking if (models[c] == 0).any())
    checked = [c for c in masking if models[c].notna().any()]
    flag = ("masking: " + ", ".join(flagged)) if flagged else ("none found" if checked else "")
    return accuracy, "; ".join(certified), flag


def defense_comparison(data: ReportData, attacks: Sequence[str] | None = None) -> pd.DataFrame:
    """The comparison table (text cells, across seeds where several; see the module docstring)."""
    cells = comparison_values(data, attacks)
    columns = [*ROWS, "victim", "defense", "evaluation", "test accuracy %", "fooling AUC %", "ε_r",
               "certified accuracy %", "gradient masking"]
    if cells.empty:
        return pd.DataFrame(columns=columns)
    order = {d: i for i, d in enumerate([ORIGINAL, *data.defenses])}
    rows = []
    keys = [*ROWS, "victim", "defense", "evaluation", "members"]
    for key, group in cells.groupby(keys, sort=False):
        dataset, frontend, _, victim, defense, label, members = key
        auc = seed_mean(list(group["auc"]), list(zip(group["auc_low"], group["auc_high"])))
        eps_r = ""
        if "eps_r" in group and group["eps_r"].notna().any():
            g = group[group["eps_r"].notna()]
            value, low, high, n = seed_mean(list(g["eps_r"]), list(zip(g["eps_r_low"], g["eps_r_high"])))
            eps_r = with_interval(value, low, high, 3, n, verdict=True, clips=float(g["eps_r_n"].iloc[0]))
            eps_r += "*" if g["partial"].fillna(False).astype(bool).any() else ""
            eps_r += WEAK_MARK if g["weak"].fillna(False).astype(bool).any() else ""
        accuracy, certified, flag = _model_cells(data, (dataset, frontend, victim), defense, members.split(","))
        rows.append([*key[:-1], accuracy, with_interval(auc[0], auc[1], auc[2], 1, auc[3]), eps_r, certified,
                     flag])
    table = pd.DataFrame(rows, columns=columns)
    table["_order"] = table["defense"].map(order)
    table["_eval"] = table["evaluation"].map({e: i for i, e in enumerate(EVALUATIONS)})
    return (table.sort_values([*ROWS, "victim", "_order", "_eval"], kind="stable")
            .drop(columns=["_order", "_eval"]).reset_index(drop=True))


def comparison_sections(data: ReportData, attacks: Sequence[str] | None) -> Iterator[tuple[str, str, pd.DataFrame]]:
    """The report section of the comparison table, when the grid has a defense besides the original."""
    if not data.defenses:
        return
    level = f"{int(round(data.level * 100))} %"
    yield ("defense_comparison", "Defense comparison: test accuracy (%) of each model as deployed (with its transform; smoothing: "
           "one noise draw per clip, the model the attacks query), mean fooling AUC "
           f"(%) and ε_r (defended / original, Eq. 15) over each row's attacks [{level} intervals; ↑ above 1, ↓ below, "
           f"≈ contains 1, {stats.UNDETERMINED} undetermined: fewer than {stats.N_MIN} clips in a model's base set; "
           f"n=… clips in the smaller base set, (n=…) seeds; * a mean of lower bounds; {WEAK_MARK} an attack broke fewer "
           "than half a model's base set], certified L2 accuracy (%) of randomized smoothing at each radius "
           "(Cohen et al. 2019; abstentions count as wrong), and the gradient-masking checks that warned (naive ε* "
           "above adaptive ε* beyond the interval, Athalye et al. 2018; single_step / black_box: ε_r by single-step "
           "or gradient-based attacks above ε_r by multi-step or gradient-free ones beyond the interval; transfer: "
           "the original model's examples beat the white-box attacks, Tramèr et al. 2018). Input transforms and smoothing are attacked naively "
           "(gradients through the transform) and adaptively (BPDA for non-differentiable transforms, EoT for "
           "random ones); Tables I-III use the stronger of the two (larger fooling AUC).", defense_comparison(data, attacks))

