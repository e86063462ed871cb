"""Table IV: can a listener hear a waveform attack's examples, and do they survive being played in a room?

One row per waveform-domain attack run that scored its examples (:mod:`evaluation.quality`) or played them over the
air (:mod:`defense.over_the_air`): over the clips the attack broke within ε_max, the share masked (perceptual
distance ≤ 0 dB: under the psychoacoustic threshold in every frame and bin, Qin et al. 2019), the mean perceptual
distance, SNR, PESQ and STOI, each with its bootstrap interval over clips; then the share of channel draws after
which an example still fools the model and the clean accuracy through the same draws. Read from the runs' metrics
alone, like Tables I-III.
"""
from __future__ import annotations

import math

import pandas as pd

from evaluation.report_data import ReportData
from evaluation.report_tables import with_interval

COLUMNS = (  # metric, heading, scale, digits, suffix of its interval bounds
    ("masked_share", "masked (%)", 100.0, 1, "_ci"),
    ("perceptual_db", "perceptual distance (dB)", 1.0, 1, "_ci"),
    ("snr_db", "SNR (dB)", 1.0, 1, "_ci"),
    ("pesq", "PESQ", 1.0, 2, "_ci"),
    ("stoi", "STOI", 1.0, 3, "_ci"),
    ("ota_success", "over the air (%)", 100.0, 1, ""),
    ("ota_clean_accuracy", "clean accuracy in the room (%)", 100.0, 1, ""),
)
KEYS = ["defense", "dataset", "frontend", "victim", "seed", "attack", "mode"]
SCORED = ("masked_share", "pesq", "stoi", "ota_success")
"""A run belongs in the table when it logged one of these."""


def _metric(run: pd.Series, name: str) -> float:
    value = run.get(name, math.nan)
    return float(value) if value is not None and not pd.isna(value) else math.nan


def listening_table(data: ReportData) -> pd.DataFrame:
    """Table IV (module docstring): ``value [low, high]`` cells, empty where a score was not computed or ruled out
    on every clip; ``broken (n)`` = the clips broken within ε_max the means run over."""
    runs = data.of_kind("attack")
    scored = [name for name in SCORED if name in runs]
    if runs.empty or not scored:
        return pd.DataFrame()
    runs = runs[(runs["domain"] == "waveform") & runs[scored].notna().any(axis=1)]
    rows = []
    for _, run in runs.sort_values(KEYS, kind="stable").iterrows():
        row = {key: run[key] for key in KEYS}
        row["representation"] = row.pop("frontend")
        row["broken (n)"] = int(round(_metric(run, "fr_at_eps_max") * _metric(run, "base_size"))) \
            if math.isfinite(_metric(run, "fr_at_eps_max") * _metric(run, "base_size")) else ""
        for name, heading, scale, digits, bounds in COLUMNS:
            row[heading] = with_interval(scale * _metric(run, name), scale * _metric(run, f"{name}{bounds}_low"),
                                         scale * _metric(run, f"{name}{bounds}_high"), digits)
        rows.append(row)
    return pd.DataFrame(rows)


def listening_caption(level: float) -> str:
    """The caption of :func:`listening_table` at confidence ``level``."""
    return (f"Table IV: can a listener hear the waveform attacks' examples, and do they survive a room? Over the clips "
            f"each attack broke within ε_max: masked = perceptual distance ≤ 0 dB (under the psychoacoustic "
            f"threshold everywhere, Qin et al. 2019), the mean perceptual distance, SNR, PESQ (8/16 kHz speech only) "
            f"and STOI [{int(round(level * 100))} % bootstrap intervals over clips]; over the air = share of the "
            "channel draws (evaluation.over_the_air) after which a broken example still fools the model, beside the "
            "clean accuracy through the same draws")
