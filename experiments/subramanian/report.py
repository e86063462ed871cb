"""Subramanian et al.'s tables rebuilt from MLflow alone, with intervals, the paper's numbers and direction checks.

Read from the runs :mod:`experiments.subramanian.run` logs: the models' training runs (test accuracy and its
Wilson interval, last-epoch training accuracy), each attack run's per-attempt record and each transfer
run's replay record. Every rate and mean carries a 95 % percentile bootstrap over clips (attempts that
share a clip, on several models or towards several targets, move together), ``value [low, high]``;
no interval where fewer than two clips contribute. Tables (Subramanian et al. 2019):

- Table 1: the models and their accuracy.
- Table 2: per untargeted attack, pooled over the models: success rate, confidence of the new label
  ("New"), of the true label on the adversarial input ("GT new"), SNR (means over successful attempts).
- Table 3: the same per model, with the true label's confidence on the clean input ("GT").
- Table 4: per targeted attack, the mean SNR of the successful attacks from each source class (rows) to
  each target class (columns), pooled over the models; beside it the success rate (the paper's Fig. 2).
- Table 5: transfer rates T[a→b] of the untargeted DeepFool and C&W examples pooled, rows = the model
  tested on, columns = the model they were crafted on (the paper's layout), and per attack.
- Direction checks: each finding of the paper, our numbers, and whether its direction reproduces.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from evaluation.stats import wilson_interval
from evaluation.report import to_markdown
from evaluation.stats import Interval, ratio_of_sums_interval
from evaluation.stored import open_experiment
from evaluation.tracking import TRANSFER_ARTIFACT, artifact_json, default_tracking_uri, iter_runs
from evaluation.transfer import TransferRecord, transfer_rates
from experiments.subramanian.metrics import (MEASURES, RECORD, clip_sums, difference, grouped_ratio,
                                             record_frame)
from victims.registry import ConfigError

PAPER_1 = ("Paper Table 1 (DCASE 2018 task 2, 41 classes): test accuracy VGG13 80.9, CRNN 84.4, GCNN 84.4, "
           "dense-mel 89.9, dense-wav 86.1 %; training 97.0-98.8 %.")
PAPER_2 = ("Paper Table 2 (pooled over five models; success %, New, GT new, SNR dB): white noise 21.14, 0.371, "
           "0.158, 20.00; FGSM 31.14, 0.307, 0.098, 19.99; DeepFool 99.99, 0.350, 0.248, 41.81; C&W 99.51, 0.710, "
           "0.019, 46.23.")
PAPER_3 = ("Paper Table 3: DeepFool success 99.6-100 %, GT 0.685-0.952, New 0.219-0.518, GT new 0.168-0.363, "
           "SNR 49.4-55.4 dB on the log-mel models and 41.81 on dense-wav; C&W success 97.97-100 %, New 0.588-0.922, "
           "GT new 0.012-0.021, SNR 50.6-55.7 dB on the log-mel models and 45.62 on dense-wav.")
PAPER_4 = ("Paper Table 4 (mean SNR over the models, music subset): C&W 93.0-109.1 dB, L-BFGS 50.1-61.7 dB; "
           "snare drum needs the most perturbation as a source in both; Fig. 2: targeted success is lower than "
           "untargeted, C&W above L-BFGS.")
PAPER_5 = ("Paper Table 5 (DeepFool and C&W pooled, %): between the Iqbal log-mel models 4.88-9.96, into "
           "dense-mel 0.20-0.41, into dense-wav 0-0.20 (only from dense-mel), from dense-wav 0.61-3.05.")


@dataclass
class StudyData:
    """What the report reads: models (in study order), attempts of every attack run, transfer records."""

    experiment: str
    models: pd.DataFrame
    attempts: pd.DataFrame
    attacks: dict[str, bool]
    kinds: dict[str, str]
    class_names: list[str]
    transfers: list[TransferRecord]
    fixed_snr_db: float | None
    n_boot: int
    level: float
    seed: int


def collect(experiment: str, tracking_uri: str | None = None) -> StudyData:
    """Read a Subramanian et al. study's runs from MLflow.

    Raises:
        ConfigError: if the experiment does not exist or holds no finished study.
    """
    uri = tracking_uri or (mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else default_tracking_uri())
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ConfigError(f"no MLflow experiment named '{experiment}' at {uri}")
    runs = sorted(iter_runs(exp.experiment_id, client=client), key=lambda r: r.info.start_time or 0)
    by_kind: dict[str, dict[tuple[str, ...], Any]] = {"study": {}, "train": {}, "attack": {}, "transfer": {}}
    for run in runs:  # the newest finished run per coordinate wins
        tags = run.data.tags
        kind = tags.get("advaudio.kind", "")
        finished = tags.get("advaudio.status") == "finished"
        if kind in by_kind and (finished or kind == "train"):
            by_kind[kind][(tags.get("advaudio.model", ""), tags.get("advaudio.attack", ""))] = run
    if not by_kind["study"]:
        raise ConfigError(f"experiment '{experiment}' holds no finished subramanian study")
    source = artifact_json(next(reversed(by_kind["study"].values())).info.run_id, "study.json", client)
    order = list(source.get("models") or [])
    evaluation = source.get("evaluation") or {}
    models = _models(by_kind["train"], order)
    frames, attacks, kinds, class_names = [], {}, {}, []
    for (model, label), run in by_kind["attack"].items():
        record = artifact_json(run.info.run_id, RECORD, client)
        frames.append(record_frame(record))
        attacks[label], class_names = bool(record["targeted"]), list(record["class_names"])
        kinds[label] = str(run.data.params.get("attack.name", "")).strip('"')
    attempts = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model", "attack"])
    transfers = [TransferRecord.from_dict(artifact_json(run.info.run_id, TRANSFER_ARTIFACT, client))
                 for run in by_kind["transfer"].values()]
    labels = [a for a in (source.get("attacks") or {}) if a in attacks]
    return StudyData(experiment, models, attempts, {a: attacks[a] for a in labels}, kinds, class_names, transfers,
                     source.get("fixed_snr_db"), int(evaluation.get("n_boot", 1000)),
                     float(evaluation.get("confidence", 0.95)), int(evaluation.get("seed", 0)))


def _models(runs: dict[tuple[str, ...], Any], order: list[str]) -> pd.DataFrame:
    rows = []
    for (model, _), run in runs.items():
        m, p, t = run.data.metrics, run.data.params, run.data.tags
        train_acc, n_train = m.get("train_accuracy", math.nan), int(p.get("data.train_size", 0))
        low, high = wilson_interval(train_acc, n_train) if math.isfinite(train_acc) else (math.nan, math.nan)
        rows.append({"model": model, "frontend": t.get("advaudio.frontend", ""), "victim": t.get("advaudio.victim", ""),
                     "raw_waveform": t.get("advaudio.frontend") == "waveform",
                     "train_accuracy": train_acc, "train_low": low, "train_high": high,
                     "test_accuracy": m.get("test_accuracy", math.nan),
                     "test_low": m.get("test_accuracy_ci_low", math.nan),
                     "test_high": m.get("test_accuracy_ci_high", math.nan)})
    frame = pd.DataFrame(rows)
    rank = {name: i for i, name in enumerate(order)}
    return frame.sort_values("model", key=lambda s: s.map(lambda v: rank.get(v, len(rank)))).reset_index(drop=True)


def _cell(value: float, low: float, high: float, digits: int, scale: float = 1.0) -> str:
    if not math.isfinite(value):
        return ""
    text = f"{scale * value:.{digits}f}"
    if math.isfinite(low) and math.isfinite(high):
        text += f" [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"
    return text


DIGITS = {"success_rate": (1, 100.0), "conf_true_clean": (3, 1.0), "conf_adv_label": (3, 1.0),
          "conf_true_adv": (3, 1.0), "snr_db": (1, 1.0)}
HEADERS = {"success_rate": "success %", "conf_true_clean": "GT", "conf_adv_label": "New", "conf_true_adv": "GT new",
           "snr_db": "SNR dB"}


def _measures(data: StudyData, frame: pd.DataFrame, by: list[str], measures: list[str]) -> pd.DataFrame:
    """One row per group of ``by`` with each measure rendered ``value [low, high]`` and the attempts."""
    out: pd.DataFrame | None = None
    for name in measures:
        value, where = MEASURES[name]
        found = grouped_ratio(frame, by, value, where, n_boot=data.n_boot, level=data.level, seed=data.seed)
        digits, scale = DIGITS[name]
        col = found[by].assign(**{HEADERS[name]: [_cell(v, lo, hi, digits, scale) for v, lo, hi in
                                                  zip(found["value"], found["low"], found["high"])]})
        if name == "success_rate":
            col["attempts"] = found["n"].astype(int)
        out = col if out is None else out.merge(col, on=by, how="outer")
    return out if out is not None else pd.DataFrame(columns=by)


def table_1(data: StudyData) -> pd.DataFrame:
    m = data.models
    return pd.DataFrame({"model": m["model"], "front-end": m["frontend"], "victim": m["victim"],
                         "train accuracy %": [_cell(v, lo, hi, 1, 100) for v, lo, hi in
                                              zip(m["train_accuracy"], m["train_low"], m["train_high"])],
                         "test accuracy %": [_cell(v, lo, hi, 1, 100) for v, lo, hi in
                                             zip(m["test_accuracy"], m["test_low"], m["test_high"])]})


def _untargeted(data: StudyData) -> pd.DataFrame:
    labels = [a for a, targeted in data.attacks.items() if not targeted]
    return data.attempts[data.attempts["attack"].isin(labels)]


def table_2(data: StudyData) -> pd.DataFrame:
    frame = _measures(data, _untargeted(data), ["attack"],
                      ["success_rate", "conf_adv_label", "conf_true_adv", "snr_db"])
    return _in_order(frame, "attack", list(data.attacks))


def table_3(data: StudyData) -> pd.DataFrame:
    frame = _measures(data, _untargeted(data), ["attack", "model"],
                      ["success_rate", "conf_true_clean", "conf_adv_label", "conf_true_adv", "snr_db"])
    rank = {(a, m): (i, j) for i, a in enumerate(data.attacks) for j, m in enumerate(data.models["model"])}
    return frame.iloc[sorted(range(len(frame)), key=lambda k: rank.get(tuple(frame.iloc[k][["attack", "model"]]),
                                                                      (99, 99)))].reset_index(drop=True)


def _in_order(frame: pd.DataFrame, column: str, order: list[str]) -> pd.DataFrame:
    rank = {v: i for i, v in enumerate(order)}
    return frame.sort_values(column, key=lambda s: s.map(lambda v: rank.get(v, len(rank)))).reset_index(drop=True)


def table_4(data: StudyData, label: str, measure: str) -> pd.DataFrame:
    """Source (rows) × target (columns) class matrix of one targeted attack: mean SNR or success rate."""
    frame = data.attempts[data.attempts["attack"] == label]
    value, where = MEASURES[measure]
    found = grouped_ratio(frame, ["label", "target"], value, where, n_boot=data.n_boot, level=data.level,
                          seed=data.seed)
    names = dict(enumerate(data.class_names))
    classes = sorted(set(frame["label"]) | set(frame["target"]))
    digits, scale = DIGITS[measure]
    out = pd.DataFrame("", index=[names[c] for c in classes], columns=[names[c] for c in classes])
    for row in found.itertuples(index=False):
        text = _cell(row.value, row.low, row.high, digits, scale)
        out.at[names[row.label], names[row.target]] = f"{text} (n={row.n})".strip()
    for c in classes:
        out.at[names[c], names[c]] = "NA"
    out.index.name = "source \\ target"
    return out.reset_index()


def table_5(data: StudyData, records: list[TransferRecord]) -> pd.DataFrame:
    rates = transfer_rates(records, n_boot=data.n_boot, level=data.level, seed=data.seed)
    out = rates["value"].copy().astype(object)
    for b in out.index:
        for a in out.columns:
            v = rates["value"].at[b, a]
            out.at[b, a] = "NA" if a == b else (f"{_cell(v, rates['low'].at[b, a], rates['high'].at[b, a], 1, 100)} "
                                                f"(n={int(rates['n'].at[b, a])})" if math.isfinite(v) else "")
    return out.reset_index()


@dataclass
class Check:
    """One finding of the paper, what we measured, and whether its direction reproduces."""

    finding: str
    paper: str
    ours: str
    verdict: str


def _verdict(found: Interval, threshold: float = 0.0) -> str:
    """``reproduces`` when the interval lies above ``threshold``, ``does not reproduce`` below it."""
    if not (math.isfinite(found.low) and math.isfinite(found.high)):
        return "undecided (no interval)"
    if found.low > threshold:
        return "reproduces"
    if found.high < threshold:
        return "does not reproduce"
    return "undecided (interval contains the threshold)"


def _sums(data: StudyData, attack: str, measure: str, model: str | None = None,
          clips: Any = None) -> tuple[np.ndarray, np.ndarray]:
    frame = data.attempts[data.attempts["attack"] == attack]
    if model is not None:
        frame = frame[frame["model"] == model]
    value, where = MEASURES[measure]
    return clip_sums(frame, value, where, clips)


def _labels(data: StudyData, kind: str, targeted: bool) -> list[str]:
    return [a for a, t in data.attacks.items() if t == targeted and data.kinds.get(a) == kind]


def _fmt(found: Interval, digits: int, scale: float = 1.0) -> str:
    return _cell(found.value, found.low, found.high, digits, scale)


def checks(data: StudyData) -> list[Check]:
    """The paper's findings (Sec. 4) whose direction can be read off our tables."""
    out: list[Check] = []
    clips = sorted(set(_untargeted(data)["clip"]))
    boot = {"n_boot": data.n_boot, "level": data.level, "seed": data.seed}

    def diff(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], paired: bool = True) -> Interval:
        return difference(a, b, paired=paired, **boot)

    for fgsm in _labels(data, "fgsm", False):
        for noise in _labels(data, "noise", False):
            d = diff(_sums(data, fgsm, "success_rate", clips=clips), _sums(data, noise, "success_rate", clips=clips))
            out.append(Check(f"{fgsm} fools more often than {noise} at the same SNR", "31.14 vs 21.14 %",
                             f"difference {_fmt(d, 1, 100)} points", _verdict(d)))
    minimum = _labels(data, "deepfool", False) + _labels(data, "cw_l2", False)
    paper = {"deepfool": ("99.99 %", "41.81 dB"), "cw_l2": ("99.51 %", "46.23 dB")}
    for label in minimum:
        rate = ratio_of_sums_interval(*_sums(data, label, "success_rate"), **boot)
        quoted = paper[data.kinds[label]]
        out.append(Check(f"{label} succeeds almost always (>= 95 %)", quoted[0], f"{_fmt(rate, 1, 100)} %",
                         _verdict(rate, 0.95)))
        if data.fixed_snr_db is not None:
            snr = ratio_of_sums_interval(*_sums(data, label, "snr_db"), **boot)
            out.append(Check(f"{label} perturbs less than the fixed-SNR baselines (SNR above {data.fixed_snr_db:g} dB)",
                             f"{quoted[1]} vs 20 dB", f"{_fmt(snr, 1)} dB", _verdict(snr, float(data.fixed_snr_db))))
    for cw in _labels(data, "cw_l2", False):
        for df in _labels(data, "deepfool", False):
            d = diff(_sums(data, cw, "conf_adv_label", clips=clips), _sums(data, df, "conf_adv_label", clips=clips))
            out.append(Check(f"{cw}'s new label is more confident than {df}'s", "0.710 vs 0.350",
                             f"difference {_fmt(d, 3)}", _verdict(d)))
            d = diff(_sums(data, df, "conf_true_adv", clips=clips), _sums(data, cw, "conf_true_adv", clips=clips))
            out.append(Check(f"{cw} leaves less confidence on the true label than {df}", "0.019 vs 0.248",
                             f"difference {_fmt(d, 3)}", _verdict(d)))
    raw = list(data.models.loc[data.models["raw_waveform"], "model"])
    mel = list(data.models.loc[~data.models["raw_waveform"], "model"])
    for label in minimum:
        for r in raw:
            ds = [diff(_sums(data, label, "snr_db", m, clips), _sums(data, label, "snr_db", r, clips)) for m in mel]
            if not ds:
                continue
            worst = min(ds, key=lambda d: d.low if math.isfinite(d.low) else -math.inf)
            verdicts = {_verdict(d) for d in ds}
            verdict = verdicts.pop() if len(verdicts) == 1 else (
                "does not reproduce" if "does not reproduce" in verdicts else "undecided (mixed)")
            out.append(Check(f"the raw-waveform model {r} needs the most perturbation under {label} (lowest SNR)",
                             "dense-wav 41.81 / 45.62 dB vs >= 49.4 on log-mel",
                             "log-mel minus raw SNR, smallest: " + _fmt(worst, 1) + " dB", verdict))
    out += _targeted_checks(data, diff)
    out += _transfer_checks(data, raw, mel)
    return out


def _targeted_checks(data: StudyData, diff: Any) -> list[Check]:
    out = []
    frame = data.attempts
    targeted_clips = sorted(set(frame.loc[frame["attack"].isin([a for a, t in data.attacks.items() if t]), "clip"]))
    for cw in _labels(data, "cw_l2", True):
        for lb in _labels(data, "lbfgs", True):
            d = diff(_sums(data, cw, "snr_db", clips=targeted_clips), _sums(data, lb, "snr_db", clips=targeted_clips))
            out.append(Check(f"targeted {cw} needs less perturbation than {lb} (higher SNR)", "93-109 vs 50-62 dB",
                             f"difference {_fmt(d, 1)} dB", _verdict(d)))
            d = diff(_sums(data, cw, "success_rate", clips=targeted_clips),
                     _sums(data, lb, "success_rate", clips=targeted_clips))
            out.append(Check(f"targeted {cw} succeeds more often than {lb}", "Fig. 2", f"difference {_fmt(d, 1, 100)} "
                             "points", _verdict(d)))
        for plain in _labels(data, "cw_l2", False):
            d = diff(_sums(data, plain, "success_rate"), _sums(data, cw, "success_rate"), paired=False)
            out.append(Check(f"targeted {cw} succeeds less often than untargeted {plain}", "Fig. 2 vs 99.51 %",
                             f"difference {_fmt(d, 1, 100)} points", _verdict(d)))
    return out


def _transfer_sums(records: list[TransferRecord], pairs: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Per clip: transfers that fool the target model and transfers counted, over ``(crafted on, tested on)``."""
    from evaluation.metrics import transfer_masks

    n = len(records[0].labels)
    num, den = np.zeros(n), np.zeros(n)
    for record in records:
        eligible, hit = transfer_masks(record.fooled, record.correct)
        for a, b in pairs:
            i, j = record.models.index(a), record.models.index(b)
            num += hit[i, j].double().numpy()
            den += eligible[i, j].double().numpy()
    return num, den


def _transfer_checks(data: StudyData, raw: list[str], mel: list[str]) -> list[Check]:
    if not data.transfers:
        return []
    boot = {"n_boot": data.n_boot, "level": data.level, "seed": data.seed}
    names = data.transfers[0].models
    every = [(a, b) for a in names for b in names if a != b]
    rate = ratio_of_sums_interval(*_transfer_sums(data.transfers, every), **boot)
    below = Interval(-rate.value, -rate.high, -rate.low, rate.undefined_share)  # "low": the rate lies below 10 %
    out = [Check("transfer rates are low (all pairs pooled, below the paper's largest pair, 10 %)", "0-9.96 %",
                 f"{_fmt(rate, 1, 100)} %", _verdict(below, -0.10))]
    between = [(a, b) for a in mel for b in mel if a != b]
    if between and raw:
        inside = _transfer_sums(data.transfers, between)
        into, out_of = [(a, r) for a in mel for r in raw], [(r, b) for r in raw for b in mel]
        for label, pairs in (("into", into), ("out of", out_of)):
            d = difference(inside, _transfer_sums(data.transfers, pairs), **boot)
            out.append(Check(f"examples transfer between log-mel models more often than {label} the raw-waveform "
                             "model", "4.88-9.96 vs 0-3.05 %", f"difference {_fmt(d, 1, 100)} points", _verdict(d)))
    return out


def sections(data: StudyData) -> Iterator[tuple[str, str, pd.DataFrame]]:
    """``(file stem, caption, table)`` of every table of the report."""
    level = f"{int(round(100 * data.level))} %"
    ci = f"value [{level} bootstrap interval over clips]"
    snr = f"noise and FGSM scaled to {data.fixed_snr_db:g} dB SNR per clip; " if data.fixed_snr_db is not None else ""
    yield "table_1_models", f"Table 1: models, accuracy % [{level} Wilson interval]. {PAPER_1}", table_1(data)
    yield ("table_2_attacks", f"Table 2: untargeted attacks pooled over the models, {ci}; New and GT new are the "
           f"confidences of the new and of the true label on successful adversarial inputs; {snr}SNR of the "
           f"successful ones. {PAPER_2}", table_2(data))
    yield ("table_3_per_model", f"Table 3: untargeted attacks per model, {ci}; GT = true label's confidence on the "
           f"clean input (base set). {PAPER_3}", table_3(data))
    for label in [a for a, t in data.attacks.items() if t]:
        yield (f"table_4_{label}_snr", f"Table 4 ({label}): mean SNR dB of the successful targeted attacks, source "
               f"class (rows) to target class (columns), pooled over the models, {ci} (n = successes). {PAPER_4}",
               table_4(data, label, "snr_db"))
        yield (f"table_4_{label}_success", f"Fig. 2 ({label}): targeted success % per pair, {ci} (n = attempts).",
               table_4(data, label, "success_rate"))
    if data.transfers:
        pooled = "+".join(r.attack for r in data.transfers)
        yield ("table_5_transfer", f"Table 5: transfer % of the untargeted {pooled} examples pooled: share of the "
               "examples crafted on the column's model (fooling it, from its base set) that fool the row's model, "
               f"among clips the row's model classifies correctly, {ci} (n = examples counted). {PAPER_5}",
               table_5(data, data.transfers))
        for record in data.transfers:
            yield (f"table_5_transfer_{record.attack}", f"Table 5 ({record.attack} only): transfer %, {ci}.",
                   table_5(data, [record]))
    found = checks(data)
    yield ("direction_checks", "Direction checks: the paper's findings, our measurement [95 % bootstrap interval], "
           "verdict (reproduces when the interval lies on the paper's side)",
           pd.DataFrame([vars(c) for c in found], columns=["finding", "paper", "ours", "verdict"]))


def report(experiment: str, tracking_uri: str | None, outputs: Path) -> str:
    """Subramanian et al.'s Tables 1-5 and the direction checks, rebuilt from MLflow alone: every table written as
    CSV and Markdown under ``outputs/reports/<experiment>/`` and returned as text (a missing store or experiment,
    or one without a study run, is a ConfigError that creates nothing)."""
    open_experiment(experiment, tracking_uri, outputs, kinds=("study",))
    data = collect(experiment, mlflow.get_tracking_uri())
    out_dir = Path(outputs) / "reports" / experiment
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = []
    for stem, caption, table in sections(data):
        table.to_csv(out_dir / f"{stem}.csv", index=False)
        text = f"**{caption}**\n\n{to_markdown(table)}\n"
        (out_dir / f"{stem}.md").write_text(text, encoding="utf-8")
        texts.append(text)
    return "\n".join(texts) + f"\ntables written to {out_dir}"
