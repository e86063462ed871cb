"""Prinz & Flexer's tables, rebuilt from the per-attempt records in MLflow alone (Prinz & Flexer, Sec. 5.2-5.3).

- Table 1 (Prinz & Flexer's Table 1): per row, adversarial examples found out of the attempts, accuracy
  (adversarial prediction where found, clean elsewhere), mean and median SNR over Prinz & Flexer's trimmed
  window, median iterations and mean confidence of the found examples; the clean row first.
- Table 2, the matched-SNR noise check (Sec. 5.2): accuracy under white noise of the same SNR as each
  example found, the share of found examples whose prediction that noise changes, and accuracy with
  every clip overlaid with noise at the row's mean SNR (Prinz & Flexer's own version: 0.79 vs 0.835 clean).
- Source × target pair matrices of the targeted rows: attempts, found and mean SNR per cell (CSV + figure).

Intervals (level ``evaluation.confidence``): rates where every clip is attempted at most once get the
Wilson interval; every mean and median, and the rates of rows that aim a clip at several targets, a
percentile bootstrap over the clips (all attempts of a drawn clip together, ``evaluation.n_boot`` draws),
except a rate of 0 or 1 there, which no draw can move: it gets the Wilson interval over its distinct clips.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any, Callable

import mlflow
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from evaluation.stats import wilson_interval
from evaluation.report import to_markdown
from experiments.prinz_flexer.metrics import (bootstrap_interval, cluster_draws, mean_or_nan, median_or_nan,
                                        pair_matrix)
from evaluation.stored import open_experiment
from evaluation.tracking import artifact_json, iter_runs, load_record, reopened_run
from experiments.prinz_flexer.config import EvalOptions
from victims.registry import ConfigError

PAPER: dict[str, str] = {
    "clean": "clean: 200 clips, accuracy 0.835, confidence 0.93",
    "fgsm_150": "FGSM (>= 150 of 200 setting, lambda 0.1): found 153/200, accuracy 0.250, SNR -7.74 dB, "
                "1 iteration, confidence 0.72",
    "pgdn_150": "PGDn (>= 150 setting, eps 0.0005): found 151.8/200, accuracy 0.171, SNR 40.13 dB, "
                "15.8 iterations, confidence 0.55",
    "cw_150": "C&W (>= 150 setting, alpha 0.01): found 153.2/200, accuracy 0.201, SNR 44.23 dB, 51.4 iterations, "
              "confidence 0.45",
    "cw_multiscale_150": "multi-scale C&W (>= 150 setting, alpha 10): found 163.6/200, accuracy 0.167, SNR 43.82 dB, "
                         "71.6 iterations, confidence 0.44",
    "fgsm_180": "FGSM (>= 180 setting, lambda 0.8): found 179/200, accuracy 0.130, SNR -24.83 dB, 1 iteration, "
                "confidence 0.86",
    "pgdn_180": "PGDn (>= 180 setting, eps 0.01): found 190.8/200, accuracy 0.026, SNR 16.47 dB, 2.0 iterations, "
                "confidence 0.74",
    "cw_180": "C&W (>= 180 setting, alpha 0.1): found 180.2/200, accuracy 0.094, SNR 42.98 dB, 66.1 iterations, "
              "confidence 0.44",
    "cw_multiscale_180": "multi-scale C&W (>= 180 setting, alpha 15): found 196.4/200, accuracy 0.024, SNR 39.49 dB, "
                         "22.6 iterations, confidence 0.49",
    "cw_accordion": "C&W to 'Accordion' (Sec. 5.3): all but 4 found, SNR 37.41 +- 10.72 dB, median 29 iterations, "
                    "confidence 0.44",
    "cw_multiscale_accordion": "multi-scale C&W to 'Accordion' (Sec. 5.3): all but 7 found, SNR 37.57 +- 10.82 dB, "
                               "median 33 iterations, confidence 0.44",
}
"""Prinz & Flexer's reported numbers (Table 1: means over 5 runs for PGDn and both C&W; Sec. 5.3), by line."""
PAPER_PAIRS = ("Prinz & Flexer report no pair matrix; turning every class into 'Accordion', one of the hardest targets "
               "(Sec. 5.3), C&W fails on 4 clips and multi-scale C&W on 7 of 200, at 37.41 and 37.57 dB")
PAPER_NOISE = ("The paper (Sec. 5.2): white noise at 42.16 dB, the targeted attacks' average SNR, on all 200 clips "
               "leaves accuracy at 0.79 (clean 0.835); the attacks bring it to 0.024-0.250")


QUIET_DB = 30.0
"""SNR from which a found example counts as quiet in Table 1's "found at >= 30 dB" (Prinz & Flexer, Sec. 5.2: examples
around 40 dB "can hardly be perceived at all"; the study's direction check asks for most examples at >= 30 dB)."""


def final_predictions(record: dict[str, Any]) -> list[int]:
    """Per attempt, the adversarial prediction where the attack succeeded, else the clean one (Table 1)."""
    clean = np.asarray(record["clean_pred"])[np.asarray(record["clip"], dtype=np.int64)]
    return np.where(np.asarray(record["success"], dtype=bool), np.asarray(record["adv_pred"]), clean).tolist()


def _rate(hits: np.ndarray, clips: np.ndarray, n_clips: int, ev: EvalOptions, weights: np.ndarray | None
          ) -> tuple[float, float, float]:
    """A rate with its interval: Wilson if no clip repeats, else the clip bootstrap (``weights``).

    A rate of 0 or 1 over repeated clips is the same on every draw, so it gets the Wilson interval over its
    distinct clips instead (the independent units; conservative next to counting every attempt).
    """
    value = mean_or_nan(hits)
    distinct = len(np.unique(clips))
    if distinct == len(clips) or value in (0.0, 1.0):
        low, high = wilson_interval(value, distinct, ev.confidence) if len(hits) else (math.nan, math.nan)
        return value, low, high
    found = bootstrap_interval(hits, weights, mean_or_nan, value, ev.confidence)
    return value, found.low, found.high


def _stat(values: np.ndarray, mask: np.ndarray, weights: np.ndarray, fn: Callable[[np.ndarray], float],
          ev: EvalOptions) -> tuple[float, float, float]:
    """A mean or median over the attempts in ``mask`` with its clip-bootstrap interval."""
    vals = values[mask]
    found = bootstrap_interval(vals, weights[:, mask], fn, fn(vals), ev.confidence)
    return found.value, found.low, found.high


def summarize(record: dict[str, Any], ev: EvalOptions) -> dict[str, float]:
    """Every number of Tables 1-2 for one row, with ``<name>_ci_low`` / ``<name>_ci_high``."""
    labels = np.asarray(record["labels"], dtype=np.int64)
    clean_pred = np.asarray(record["clean_pred"], dtype=np.int64)
    n = len(labels)
    out: dict[str, float] = {"clips": float(n)}

    def put(name: str, triple: tuple[float, float, float]) -> None:
        out[name], out[f"{name}_ci_low"], out[f"{name}_ci_high"] = triple

    everyone = np.arange(n)
    all_weights = cluster_draws(everyone, n, ev.n_boot, ev.seed)
    put("clean_accuracy", _rate((clean_pred == labels).astype(float), everyone, n, ev, all_weights))
    if record["mode"] == "clean":
        put("confidence", _stat(np.asarray(record["clean_conf"]), np.ones(n, bool), all_weights, mean_or_nan, ev))
        return out
    clip = np.asarray(record["clip"], dtype=np.int64)
    success = np.asarray(record["success"], dtype=bool)
    snr = np.asarray(record["snr_db"], dtype=np.float64)
    weights = cluster_draws(clip, n, ev.n_boot, ev.seed)
    truth, before = labels[clip], clean_pred[clip]
    final = np.asarray(final_predictions(record))
    noise_final = np.where(success, np.asarray(record["noise_pred"]), before)
    good = success & np.isfinite(snr)
    out.update({"attempts": float(len(clip)), "found": float(success.sum()),
                "snr_nonfinite": float((success & ~np.isfinite(snr)).sum())})
    put("found_rate", _rate(success.astype(float), clip, n, ev, weights))
    quiet = success & (snr >= QUIET_DB)
    out["found_quiet"] = float(quiet.sum())
    put("found_quiet_rate", _rate(quiet.astype(float), clip, n, ev, weights))
    put("attempt_clean_accuracy", _rate((before == truth).astype(float), clip, n, ev, weights))
    put("accuracy", _rate((final == truth).astype(float), clip, n, ev, weights))
    put("noise_accuracy", _rate((noise_final == truth).astype(float), clip, n, ev, weights))
    put("snr_mean", _stat(snr, good, weights, mean_or_nan, ev))
    put("snr_median", _stat(snr, good, weights, median_or_nan, ev))
    put("iterations_median", _stat(np.asarray(record["iterations"], float), success, weights, median_or_nan, ev))
    put("confidence", _stat(np.asarray(record["adv_conf"], float), success, weights, mean_or_nan, ev))
    changed = (np.asarray(record["noise_pred"]) != before).astype(float)
    put("noise_changed_rate", _rate(changed[success], clip[success], n, ev, weights[:, success]))
    gap = np.abs(np.asarray(record["noise_snr_db"], float) - snr)[good]
    out["noise_snr_gap_max"] = float(gap.max()) if gap.size else math.nan
    if record.get("noise_mean_pred") is not None:
        out["noise_mean_snr_db"] = float(record["noise_mean_snr_db"])
        hits = (np.asarray(record["noise_mean_pred"]) == labels).astype(float)
        put("noise_mean_accuracy", _rate(hits, everyone, n, ev, all_weights))
    return out


def _cell(s: dict[str, float], name: str, digits: int = 3) -> str:
    value = s.get(name, math.nan)
    if value != value:
        return "-"
    low, high = s.get(f"{name}_ci_low", math.nan), s.get(f"{name}_ci_high", math.nan)
    text = f"{value:.{digits}f}"
    return text if low != low or high != high else f"{text} [{low:.{digits}f}, {high:.{digits}f}]"


def _targets(record: dict[str, Any]) -> str:
    mode = record["mode"]
    if mode in ("class", "pairs"):
        names = record["class_names"]
        return f"{mode}: " + ", ".join(sorted({names[t] for t in record["target"]}))
    return mode


def table_1(rows: dict[str, tuple[dict[str, Any], dict[str, float]]]) -> pd.DataFrame:
    """Prinz & Flexer's Table 1 from each row's record and summary."""
    out = []
    for name, (record, s) in rows.items():
        clean = record["mode"] == "clean"
        found = "-" if clean else f"{int(s['found'])}/{int(s['attempts'])} = {_cell(s, 'found_rate')}"
        out.append({"row": name, "targets": "-" if clean else _targets(record), "clips": int(s["clips"]),
                    "found / attempts": found,
                    f"found at >= {QUIET_DB:g} dB": "-" if clean else f"{int(s['found_quiet'])} = "
                                                                         f"{_cell(s, 'found_quiet_rate')}",
                    "accuracy": _cell(s, "clean_accuracy" if clean else "accuracy"),
                    "SNR mean (dB)": _cell(s, "snr_mean", 2), "SNR median (dB)": _cell(s, "snr_median", 2),
                    "iterations (median)": _cell(s, "iterations_median", 1), "confidence": _cell(s, "confidence")})
    return pd.DataFrame(out)


def table_2(rows: dict[str, tuple[dict[str, Any], dict[str, float]]]) -> pd.DataFrame:
    """The matched-SNR white-noise check of every attack row."""
    out = []
    for name, (record, s) in rows.items():
        if record["mode"] == "clean":
            continue
        out.append({"row": name, "SNR mean (dB)": _cell(s, "snr_mean", 2),
                    "accuracy clean": _cell(s, "attempt_clean_accuracy"), "accuracy attacked": _cell(s, "accuracy"),
                    "accuracy, noise at each example's SNR": _cell(s, "noise_accuracy"),
                    "found examples the noise changes": _cell(s, "noise_changed_rate"),
                    "noise at mean SNR: accuracy (all clips)": _cell(s, "noise_mean_accuracy")})
    return pd.DataFrame(out)


def pair_table(record: dict[str, Any], ev: EvalOptions) -> pd.DataFrame:
    """One line per attempted (source, target) cell: attempts, found, rate and mean SNR with intervals."""
    names = record["class_names"]
    clip = np.asarray(record["clip"], dtype=np.int64)
    source = np.asarray(record["labels"], dtype=np.int64)[clip]
    target = np.asarray(record["target"], dtype=np.int64)
    success = np.asarray(record["success"], dtype=bool)
    snr = np.asarray(record["snr_db"], dtype=np.float64)
    mat = pair_matrix(source, target, success, snr, len(names))
    weights = cluster_draws(clip, len(record["labels"]), ev.n_boot, ev.seed)
    lines = []
    for s, t in zip(*np.nonzero(mat.attempts)):
        cell = (source == s) & (target == t)
        low, high = wilson_interval(float(mat.rate[s, t]), int(mat.attempts[s, t]), ev.confidence)
        good = cell & success & np.isfinite(snr)
        snr_ci = bootstrap_interval(snr[good], weights[:, good], mean_or_nan, float(mat.mean_snr[s, t]), ev.confidence)
        lines.append({"source": names[s], "target": names[t], "attempts": int(mat.attempts[s, t]),
                      "found": int(mat.found[s, t]), "rate": float(mat.rate[s, t]), "rate_ci_low": low,
                      "rate_ci_high": high, "snr_mean_db": float(mat.mean_snr[s, t]), "snr_ci_low": snr_ci.low,
                      "snr_ci_high": snr_ci.high})
    return pd.DataFrame(lines)


def pair_grid(record: dict[str, Any]) -> pd.DataFrame:
    """The pair matrix as text cells ``found/attempts SNR`` (rows source, columns target)."""
    names = record["class_names"]
    clip = np.asarray(record["clip"], dtype=np.int64)
    mat = pair_matrix(np.asarray(record["labels"])[clip], np.asarray(record["target"]),
                      np.asarray(record["success"], dtype=bool), np.asarray(record["snr_db"], float), len(names))
    grid = [[("" if mat.attempts[s, t] == 0 else f"{mat.found[s, t]}/{mat.attempts[s, t]}"
              + ("" if mat.mean_snr[s, t] != mat.mean_snr[s, t] else f" {mat.mean_snr[s, t]:.0f}dB"))
             for t in range(len(names))] for s in range(len(names))]
    frame = pd.DataFrame(grid, columns=names)
    frame.insert(0, "source \\ target", names)
    return frame


def pair_matrix_figure(record: dict[str, Any]) -> Figure:
    """Success rate and mean SNR per (source, target) cell side by side; unattempted cells blank."""
    names = record["class_names"]
    clip = np.asarray(record["clip"], dtype=np.int64)
    mat = pair_matrix(np.asarray(record["labels"])[clip], np.asarray(record["target"]),
                      np.asarray(record["success"], dtype=bool), np.asarray(record["snr_db"], float), len(names))
    c = len(names)
    size = 2.5 + 0.45 * c
    fig = Figure(figsize=(2 * size + 1.5, size), layout="constrained")
    for ax, values, title, cmap, unit in zip(fig.subplots(1, 2), (mat.rate, mat.mean_snr),
                                             ("found / attempts", "mean SNR of those found"), ("Greens", "viridis"),
                                             ("rate", "dB")):
        im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0 if unit == "rate" else None,
                       vmax=1 if unit == "rate" else None)
        for (r, col), value in np.ndenumerate(values):
            if value == value:
                red, green, blue, _ = im.cmap(im.norm(value))
                dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
                ax.text(col, r, f"{value:.2f}" if unit == "rate" else f"{value:.0f}", ha="center", va="center",
                        fontsize="x-small", color="white" if dark else "black")
        ax.set_xticks(range(c), names, rotation=90, fontsize="small")
        ax.set_yticks(range(c), names, fontsize="small")
        ax.set(xlabel="target", ylabel="source (true class)", title=title)
        fig.colorbar(im, ax=ax, shrink=0.8, label=unit)
    fig.suptitle(f"{record['row']}: source x target ({record['mode']} targets)")
    return fig


def _latest_study(exp_id: str, client: MlflowClient) -> str:
    """The newest study run of the experiment that has logged rows."""
    runs = sorted(iter_runs(exp_id, "tags.`advaudio.kind` = 'study'", client), key=lambda r: r.info.start_time)
    for run in reversed(runs):
        if "study.json" in {a.path for a in client.list_artifacts(run.info.run_id)}:
            return run.info.run_id
    raise ConfigError(f"experiment {exp_id} holds no prinz_flexer study run with rows; run "
                      "`advaudio experiment prinz_flexer`")


def collect(parent_id: str, client: MlflowClient
            ) -> tuple[EvalOptions, dict[str, tuple[dict[str, Any], dict[str, float]]]]:
    """Each row's record and its summary, in the study's order, from the parent run's ``study.json``."""
    study = artifact_json(parent_id, "study.json", client)
    ev = EvalOptions(**study["evaluation"])
    rows = {}
    for name, run_id in study["rows"].items():
        record = load_record(run_id, client)
        if record is None:
            raise ConfigError(f"prinz_flexer row '{name}' (run {run_id}) has no per-attempt record")
        rows[name] = (record, summarize(record, ev))
    return ev, rows


def build(parent_id: str, client: MlflowClient, out_dir: Path) -> str:
    """Write every table (CSV + Markdown) and pair-matrix figure to ``out_dir``; return the printed text."""
    ev, rows = collect(parent_id, client)
    out_dir.mkdir(parents=True, exist_ok=True)
    level = f"{int(round(ev.confidence * 100))} %"
    papers = [PAPER[r["paper"]] for r, _ in rows.values() if r.get("paper")]
    sections = [
        ("table_1", f"Table 1 (Prinz & Flexer's Table 1): {rows['clean'][1]['clips']:.0f} test clips; SNR over "
                    f"the clip without {ev.snr_trim} samples at each end, mean/median/iterations/confidence over the "
                    f"examples found; [{level} interval: Wilson for rates of one attempt per clip, else a bootstrap "
                    "over clips]. Paper: " + "; ".join(papers), table_1(rows)),
        ("table_2_matched_noise", "Table 2: white noise at the same SNR as each example found (other attempts "
                                  f"keep their clean prediction), and at the row's mean SNR on every clip [{level}]. "
                                  f"Paper: {PAPER_NOISE}", table_2(rows))]
    for name, (record, _) in rows.items():
        if record["mode"] in ("clean", "untargeted"):
            continue
        pair_table(record, ev).to_csv(out_dir / f"pairs_{name}.csv", index=False)
        pair_matrix_figure(record).savefig(out_dir / f"pairs_{name}.png", dpi=100)
        sections.append((f"pairs_{name}_grid", f"Source x target, {name}: found/attempts and mean SNR (dB) of those "
                                               f"found (intervals in pairs_{name}.csv). Paper: {PAPER_PAIRS}",
                         pair_grid(record)))
    text = []
    for stem, caption, table in sections:
        table.to_csv(out_dir / f"{stem}.csv", index=False)
        markdown = to_markdown(table)
        (out_dir / f"{stem}.md").write_text(f"**{caption}**\n\n{markdown}\n", encoding="utf-8")
        text.append(f"{caption}\n\n{markdown}")
    return "\n\n".join(text) + f"\n\ntables written to {out_dir}"


def log_tables(parent_id: str) -> None:
    """The tables and figures as artifacts of the study's parent run (``tables/``)."""
    with tempfile.TemporaryDirectory() as tmp:
        build(parent_id, MlflowClient(), Path(tmp))
        with reopened_run(parent_id):
            mlflow.log_artifacts(tmp, "tables")


def report(experiment: str, tracking_uri: str | None, outputs: Path) -> str:
    """Rebuild Prinz & Flexer's tables from MLflow alone into ``outputs/reports/<experiment>/``; return the text (a
    missing store or experiment, or one without a study run, is a ConfigError that creates nothing)."""
    exp_id = open_experiment(experiment, tracking_uri, outputs, kinds=("study",)).experiment_id
    client = MlflowClient()
    return build(_latest_study(exp_id, client), client, Path(outputs) / "reports" / experiment)
