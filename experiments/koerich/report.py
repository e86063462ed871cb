"""Koerich et al.'s Tables III-VII (and a transfer table) from the per-recording records alone.

Every accuracy, transfer rate and mean SNR is a ratio of sums over test recordings
(:mod:`experiments.koerich.metrics`). With one test fold a cell reads ``value [low, high]``: the 95 %
cluster-bootstrap interval over recordings. With several folds (Koerich et al. report mean ± SD over their
three GTZAN folds) it reads ``mean ± SD [low, high] (k folds)`` with the Student-t interval of the mean.
Accuracies are in %, SNRs in dB.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml
from mlflow.tracking import MlflowClient

from evaluation.stats import seed_interval
from evaluation.stored import open_experiment
from evaluation.tracking import artifact_json, artifact_text, iter_runs
from experiments.koerich.config import EvalOptions
from experiments.koerich.measure import EVAL_KIND, RECORD
from experiments.koerich.metrics import cluster_interval, ratio_of_sums
from victims.registry import ConfigError

AGGREGATES = (("segment", "Segments"), ("vote", "MV"), ("sum", "SR"))
PAPER_SOURCE = "Koerich et al. 2020, GTZAN, 3 track-level folds, mean ± SD"
PAPER = {
    "III": "STFT 67.09 ± 1.49 | 75.84 ± 1.92 | 75.64 ± 2.09; MF 75.29 ± 2.50 | 81.87 ± 2.49 | 81.37 ± 2.20",
    "IV": "Original 70.82 ± 0.20 | 77.69 ± 0.81 | 77.99 ± 1.04; STFT recons 71.87 ± 0.67 | 78.49 ± 0.26 | "
          "78.29 ± 0.72 (mel reconstructions were not evaluated)",
    "V": "STFT FGSM 17.40 ± 1.20 | 17.35 ± 0.97 | 16.76 ± 1.19, BIM 13.26 ± 1.20 | 11.58 ± 0.97 | 9.89 ± 1.19; "
         "MF FGSM 21.52 ± 1.80 | 19.32 ± 1.46 | 19.41 ± 0.88, BIM 15.38 ± 1.99 | 12.09 ± 2.01 | 12.49 ± 1.88",
    "VI": "STFT recons FGSM 26.45 ± 1.09 | 28.00 ± 0.98 | 27.91 ± 0.85, BIM 30.76 ± 2.03 | 33.85 ± 3.45 | "
          "33.35 ± 3.67 (mel reconstructions were not evaluated)",
    "VII": "STFT: None 90, FGSM 14.62 ± 5.93, BIM 20.19 ± 5.95; MF: None 8.71 ± 11.77, FGSM 42.69 ± 9.45, "
           "BIM 44.21 ± 9.90",
    "VIII": "not reported by Koerich et al. (their Table VI gives the 1D CNN's accuracy only)",
}
CONTROL_NOTE = (" Rows random_<eps> (beyond the paper): random signs ±eps dB on every bin, the size of an L∞ "
                "attack's perturbation without its aim.")


@dataclass(frozen=True)
class Cell:
    """A value with its interval; ``sd`` across folds when ``folds > 1``."""

    value: float
    low: float
    high: float
    sd: float = math.nan
    folds: int = 1

    def text(self, scale: float = 1.0, digits: int = 1) -> str:
        if math.isnan(self.value):
            return "n/a"
        v, lo, hi = (x * scale for x in (self.value, self.low, self.high))
        bounds = "" if math.isnan(lo) else f" [{lo:.{digits}f}, {hi:.{digits}f}]"
        if self.folds > 1:
            return f"{v:.{digits}f} ± {self.sd * scale:.{digits}f}{bounds} ({self.folds} folds)"
        return f"{v:.{digits}f}{bounds}"


@dataclass
class Table:
    """One table: ``rows`` hold label strings and :class:`Cell` values under ``columns``."""

    stem: str
    title: str
    caption: str
    labels: list[str]
    columns: list[str]
    rows: list[tuple[list[str], list[Cell]]]
    scale: float = 100.0

    def markdown(self) -> str:
        head = [*self.labels, *self.columns]
        lines = [f"**{self.title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join([*lab, *(c.text(self.scale) for c in cells)]) + " |" for lab, cells in self.rows]
        return "\n".join([*lines, "", self.caption])

    def write_csv(self, path: Path) -> None:
        with path.open("w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow([*self.labels, *(f"{c}{s}" for c in self.columns for s in ("", "_low", "_high", "_sd"))])
            for lab, cells in self.rows:
                out.writerow([*lab, *(v * self.scale for c in cells for v in (c.value, c.low, c.high, c.sd))])


def combine(parts: Sequence[tuple[np.ndarray, np.ndarray]], *, n_boot: int, seed: int, level: float) -> Cell:
    """One cell from per-fold ``(num, den)`` per recording: the cluster bootstrap for one fold, mean ± SD
    and the Student-t interval across folds for several."""
    if not parts:
        return Cell(math.nan, math.nan, math.nan)
    if len(parts) == 1:
        iv = cluster_interval(*parts[0], n_boot=n_boot, seed=seed, level=level)
        return Cell(iv.value, iv.low, iv.high)
    values = [ratio_of_sums(num, den) for num, den in parts]
    iv = seed_interval(values, level)
    finite = np.asarray([v for v in values if math.isfinite(v)])
    sd = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
    return Cell(iv.value, iv.low, iv.high, sd, len(parts))


def _arr(values: Any) -> np.ndarray:
    return np.asarray(values, np.float64)


def build_tables(records: list[dict[str, Any]], *, n_boot: int, seed: int, level: float) -> list[Table]:
    """Tables III-VIII from the logged records (each with ``fold``, ``input``, ``attacks`` and ``data``)."""
    def cellof(pick: Any, inp: str) -> Cell:
        parts = [p for r in records if r["input"] == inp and (p := pick(r["data"])) is not None]
        return combine(parts, n_boot=n_boot, seed=seed, level=level)

    def acc(inp: str, condition: str) -> list[Cell]:
        def pick(agg: str) -> Any:
            def get(data: dict[str, Any]) -> Any:
                counts = data["counts"].get(condition)
                den = data["recordings"]["segments"] if agg == "segment" else np.ones(len(data["recordings"]["ids"]))
                return None if counts is None else (_arr(counts[agg]), _arr(den))
            return get
        return [cellof(pick(agg), inp) for agg, _ in AGGREGATES]

    inputs = sorted({r["input"] for r in records if r["input"] != "original"})
    attacks = list(dict.fromkeys(a for r in records for a in r.get("attacks", [])))
    cols = [name for _, name in AGGREGATES]
    note = CONTROL_NOTE if any(a.startswith("random_") for a in attacks) else ""
    t3 = Table("table_III", "Table III — 2D CNN accuracy (%) on clean spectrograms",
               f"Paper ({PAPER_SOURCE}): {PAPER['III']}.", ["Input"], cols,
               [([i], acc(i, "2d/clean")) for i in inputs])
    t4 = Table("table_IV", "Table IV — 1D CNN accuracy (%) on original audio and on audio reconstructed from clean "
               "spectrograms", f"Paper ({PAPER_SOURCE}): {PAPER['IV']}.", ["Input"], cols,
               [(["original"], acc("original", "1d/original")),
                *(([f"{i} recons"], acc(i, "1d/recon")) for i in inputs)])
    t5 = Table("table_V", "Table V — 2D CNN accuracy (%) on its own adversarial spectrograms",
               f"Paper ({PAPER_SOURCE}): {PAPER['V']}.{note}", ["Input", "Attack"], cols,
               [([i, a], acc(i, f"2d/{a}")) for i in inputs for a in attacks])
    t6 = Table("table_VI", "Table VI — 1D CNN accuracy (%) on audio reconstructed from the adversarial spectrograms",
               f"Paper ({PAPER_SOURCE}): {PAPER['VI']}.{note}", ["Input", "Attack"], cols,
               [([f"{i} recons", a], acc(i, f"1d/{a}")) for i in inputs for a in attacks])
    return [t3, t4, t5, t6, _snr_table(records, inputs, attacks, n_boot, seed, level),
            _transfer_table(records, inputs, attacks, cellof)]


def _snr_table(records: list[dict[str, Any]], inputs: list[str], attacks: list[str], n_boot: int, seed: int,
               level: float) -> Table:
    rows = []
    for inp in inputs:
        for key, shown in [("roundtrip", "None (round trip)"), *((a, a) for a in attacks)]:
            found = [r["data"]["snr"][key] for r in records if r["input"] == inp and key in r["data"]["snr"]]
            mean = combine([(_arr(s["sum"]), _arr(s["n"])) for s in found], n_boot=n_boot, seed=seed, level=level)
            rows.append(([inp, shown], [mean, Cell(_pooled_sd(found), math.nan, math.nan)]))
    return Table("table_VII", "Table VII — SNR (dB) of the reconstructed audio: adversarial vs clean reconstruction "
                 "(Eq. 3), and clean reconstruction vs original (None)",
                 f"Paper ({PAPER_SOURCE}; SD over segments): {PAPER['VII']}. Ours: SD over segments, pooled over "
                 "folds; segments with an infinite SNR (no perturbation) are left out.",
                 ["Input", "Attack"], ["mean SNR", "SD"], rows, scale=1.0)


def _pooled_sd(found: list[dict[str, list[float]]]) -> float:
    n = sum(sum(s["n"]) for s in found)
    if n < 2:
        return math.nan
    total, sq = sum(sum(s["sum"]) for s in found), sum(sum(s["sq"]) for s in found)
    return math.sqrt(max(sq - total * total / n, 0.0) / (n - 1))


def _transfer_table(records: list[dict[str, Any]], inputs: list[str], attacks: list[str], cellof: Any) -> Table:
    rows = []
    for inp in inputs:
        for a in attacks:
            def pick(data: dict[str, Any], a: str = a) -> Any:
                t = data["transfer"].get(a)
                return None if t is None else (_arr(t["num"]), _arr(t["den"]))
            base = sum(sum(r["data"]["transfer"][a]["den"]) for r in records
                       if r["input"] == inp and a in r["data"]["transfer"])
            rows.append(([inp, a, str(int(base))], [cellof(pick, inp)]))
    return Table("table_VIII", "Table VIII — transfer rate (%) to the 1D CNN: of the segments the attack fooled on "
                 "the 2D CNN and the 1D CNN classifies right from the clean reconstruction, the share it gets wrong "
                 "from the adversarial reconstruction", f"Paper: {PAPER['VIII']}.",
                 ["Input", "Attack", "base segments"], ["transfer"], rows)


def format_tables(tables: list[Table], header: str) -> str:
    """All tables as one Markdown text under ``header``."""
    return "\n\n".join([header, *(t.markdown() for t in tables)])


def write_tables(tables: list[Table], folder: Path, header: str) -> list[Path]:
    """``<stem>.csv`` and ``<stem>.md`` per table, and ``tables.md`` with all of them."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t in tables:
        t.write_csv(folder / f"{t.stem}.csv")
        (folder / f"{t.stem}.md").write_text(t.markdown() + "\n")
        paths += [folder / f"{t.stem}.csv", folder / f"{t.stem}.md"]
    (folder / "tables.md").write_text(format_tables(tables, header) + "\n")
    return [*paths, folder / "tables.md"]


def report(experiment: str, tracking_uri: str | None, outputs: Path) -> str:
    """Rebuild Koerich et al.'s tables from the newest study run of ``experiment`` in MLflow alone.

    Raises:
        ConfigError: if the store or the experiment is missing (nothing is created) or holds no study run
            of Koerich et al.
    """
    exp_id = open_experiment(experiment, tracking_uri, outputs, kinds=("study",)).experiment_id
    client = MlflowClient()
    parents = sorted(iter_runs(exp_id, "tags.`advaudio.kind` = 'study'", client), key=lambda r: r.info.start_time)
    if not parents:
        raise ConfigError(f"experiment '{experiment}' holds no koerich study run; run `advaudio experiment koerich`")
    parent = parents[-1]
    source = yaml.safe_load(artifact_text(parent.info.run_id, "study.yaml", client))
    ev = EvalOptions(**source["evaluation"])
    filt = (f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and tags.`advaudio.kind` = '{EVAL_KIND}' "
            "and tags.`advaudio.status` = 'finished'")
    records = [artifact_json(r.info.run_id, RECORD, client) for r in iter_runs(exp_id, filt, client)]
    records.sort(key=lambda r: (str(r["fold"]), r["input"]))
    tables = build_tables(records, n_boot=ev.n_boot, seed=ev.seed, level=ev.confidence)
    folds = sorted({"the configured split" if r["fold"] is None else str(r["fold"]) for r in records})

    def shown(c: dict[str, Any]) -> str:
        return ", ".join(f"{x} {v}" for x, v in c.items() if x not in ("domain", "name"))

    attacks = "; ".join(f"{k} = {c['name']} ({shown(c)})" for k, c in source["attacks"].items())
    header = (f"# {experiment}: Koerich et al. cross-representation transfer on {source['dataset']['name']} "
              f"(test fold: {', '.join(folds)}; {len(records)} evaluation runs; intervals "
              f"{ev.confidence:.0%}, {'bootstrap over test recordings' if len(folds) == 1 else 't across folds'})\n\n"
              f"Attacks on the 2D CNN's dB spectrogram (front-end units): {attacks}.")
    paths = write_tables(tables, outputs / "reports" / experiment, header)
    return format_tables(tables, header) + f"\n\ntables written to {paths[0].parent}"
