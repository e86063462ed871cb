"""Subramanian et al.'s measures as pure functions (2019, Sec. 3-4, Tables 2-5).

- Fixed-SNR budgets: Subramanian et al. scale white noise and FGSM so that every clip gets the same SNR
  (Table 2: 20.00 and 19.99 dB). SNR = 20·log10(‖x‖₂ / ‖δ‖₂) dB (:func:`evaluation.metrics.snr_db`);
  an L2 budget is then ‖δ‖₂ = ‖x‖₂·10^(−SNR/20), and an L∞ budget ε, whose sign perturbation fills
  every one of the T samples (‖δ‖₂ = ε·√T), is ε = RMS(x)·10^(−SNR/20). Clipping to [-1, 1] can
  only shrink δ, so the measured SNR is at least the requested one.
- Per-attempt record of one attack on one model (:func:`attempt_record`): success (untargeted: the
  prediction leaves the true label; targeted: it reaches the target), the softmax confidence of the
  true label on the clean input ("GT"), of the new label ("New") and of the true label ("GT new") on
  the adversarial input, and the SNR. Only clips in the model's base set (correct on clean input)
  are attacked; "New", "GT new" and SNR are means over the successful attempts (Tables 2-3).
- Every rate and mean is a ratio of per-clip sums with a bootstrap interval over clips
  (:func:`grouped_ratio`, :func:`evaluation.stats.ratio_of_sums_interval`), so attempts that share a
  clip (several models, several targets) stay together in every draw.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from evaluation import metrics as M
from evaluation import stats

RECORD = "seed001_record.json"
"""An attack run's per-attempt record (:func:`attempt_record` with the run's coordinates); the name is kept from
the study's first layout so that stores logged before read back."""


def snr_budgets(waves: Tensor, snr_db: float, norm: str) -> Tensor:
    """``(N,)`` float64 budgets giving each clip of ``waves`` ``(N, 1, T)`` a perturbation at ``snr_db``.

    Args:
        waves: clean waveforms.
        snr_db: requested SNR in dB.
        norm: ``"l2"`` (‖δ‖₂ = ‖x‖₂·10^(−snr/20)) or ``"linf"`` (ε = RMS(x)·10^(−snr/20), a sign
            step).

    Raises:
        ValueError: for another norm.
    """
    energy = waves.double().flatten(1).norm(dim=1)
    scale = 10.0 ** (-float(snr_db) / 20.0)
    if norm == "l2":
        return energy * scale
    if norm == "linf":
        return energy / math.sqrt(waves[0].numel()) * scale
    raise ValueError(f"no fixed-SNR budget for norm '{norm}'; known: l2, linf")


def attempt_record(labels: Tensor, clean_logits: Tensor, adv_logits: Tensor, clean: Tensor, adversarial: Tensor,
                   targets: Tensor | None = None) -> dict[str, list[Any]]:
    """Per-attempt outcome of one attack on one model (Subramanian et al., Tables 2-4), JSON-ready.

    Args:
        labels: ``(n,)`` true labels of the attacked clips (all in the model's base set).
        clean_logits, adv_logits: ``(n, C)`` logits on the clean and the adversarial input.
        clean, adversarial: ``(n, 1, T)`` waveforms.
        targets: ``(n,)`` targets of a targeted attack.

    Returns:
        Lists ``success``, ``adv_pred``, ``conf_true_clean``, ``conf_adv_label`` (confidence of the
        adversarial prediction), ``conf_true_adv`` and ``snr_db`` (``inf`` where δ = 0).
    """
    labels = labels.long().cpu()
    adv_pred = adv_logits.argmax(dim=1).cpu()
    success = adv_pred == targets.long().cpu() if targets is not None else adv_pred != labels
    _, conf_true_clean = M.label_confidences(clean_logits.cpu(), labels)
    conf_new, conf_true_adv = M.label_confidences(adv_logits.cpu(), labels)
    snr = M.snr_db(clean.cpu(), adversarial.cpu()) if len(labels) else torch.zeros(0, dtype=torch.float64)
    return {"success": success.tolist(), "adv_pred": adv_pred.tolist(), "conf_true_clean": conf_true_clean.tolist(),
            "conf_adv_label": conf_new.tolist(), "conf_true_adv": conf_true_adv.tolist(), "snr_db": snr.tolist()}


MEASURES = {"success_rate": ("success", None), "conf_true_clean": ("conf_true_clean", None),
            "conf_adv_label": ("conf_adv_label", "success"), "conf_true_adv": ("conf_true_adv", "success"),
            "snr_db": ("snr_db", "success")}
"""Measure → (column averaged, column selecting the attempts it averages over; ``None`` = all)."""


def clip_sums(frame: pd.DataFrame, value: str, where: str | None = None, clips: Sequence[int] | None = None, *,
              unit: str = "clip") -> tuple[np.ndarray, np.ndarray]:
    """Per clip: the sum of ``value`` over the attempts selected by ``where`` (``num``) and their count (``den``).

    Infinite values (an SNR where δ = 0) are not selected. ``clips`` fixes the clips and their order (absent
    ones get zeros), so two statistics can share bootstrap draws; default: the clips present, sorted.
    """
    keep = frame[where].astype(bool) if where is not None else pd.Series(True, index=frame.index)
    vals = frame[value].astype(float)
    keep &= np.isfinite(vals)
    sums = frame.assign(_num=vals.where(keep, 0.0), _den=keep.astype(float)).groupby(unit)[["_num", "_den"]].sum()
    if clips is not None:
        sums = sums.reindex(list(clips), fill_value=0.0)
    return sums["_num"].to_numpy(), sums["_den"].to_numpy()


def grouped_ratio(frame: pd.DataFrame, by: Sequence[str], value: str, where: str | None = None, *,
                  unit: str = "clip", n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Mean of ``value`` over the attempts selected by ``where`` in each group, with a bootstrap over clips.

    The mean of a group is ``Σ_i num_i / Σ_i den_i`` over its clips ``i`` (:func:`clip_sums`); its interval
    resamples the clips (:func:`evaluation.stats.ratio_of_sums_interval`). A boolean ``value`` gives a rate.

    Returns:
        One row per group: the ``by`` columns, ``value``, ``low``, ``high`` and ``n`` (attempts averaged).
    """
    rows = []
    for key, group in frame.groupby(list(by), sort=True):
        num, den = clip_sums(group, value, where, unit=unit)
        found = stats.ratio_of_sums_interval(num, den, n_boot=n_boot, seed=seed, level=level)
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), "value": found.value, "low": found.low, "high": found.high,
                     "n": int(den.sum())})
    return pd.DataFrame(rows, columns=[*by, "value", "low", "high", "n"])


def difference(first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray], *, paired: bool = True,
               n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> stats.Interval:
    """``first − second`` of two ratios of per-clip sums, with a percentile-bootstrap interval.

    Args:
        first, second: ``(num, den)`` per-clip arrays (:func:`clip_sums`).
        paired: both are on the same clips, aligned (``clip_sums(..., clips=...)``), and every draw resamples
            the clips once for both; otherwise each is resampled on its own.
    """
    if paired and first[0].shape != second[0].shape:
        raise ValueError("a paired difference needs both statistics on the same clips")
    value = float(stats.ratio_of_sums_draws(*first, np.arange(len(first[0]))[None, :])[0]
                  - stats.ratio_of_sums_draws(*second, np.arange(len(second[0]))[None, :])[0])
    if min(int((first[1] > 0).sum()), int((second[1] > 0).sum())) < 2:
        return stats.Interval(value, math.nan, math.nan, 1.0)
    idx = stats.bootstrap_indices(len(first[0]), n_boot, seed)
    other = idx if paired else stats.bootstrap_indices(len(second[0]), n_boot, seed + 1)
    draws = stats.ratio_of_sums_draws(*first, idx) - stats.ratio_of_sums_draws(*second, other)
    return stats.percentile_interval(draws, value, level)


ATTEMPT_COLUMNS = ("clip", "label", "target", "iterations", "success", "adv_pred", "conf_true_clean", "conf_adv_label",
                   "conf_true_adv", "snr_db")


def record_frame(record: dict[str, Any]) -> pd.DataFrame:
    """One row per attempt of an attack run's record, with its ``model`` and ``attack``."""
    n = len(record["clip"])
    columns = {c: record[c] if record.get(c) is not None else [-1] * n for c in ATTEMPT_COLUMNS}
    frame = pd.DataFrame(columns)
    frame.insert(0, "attack", record["attack"])
    frame.insert(0, "model", record["model"])
    return frame


def summary_metrics(frame: pd.DataFrame, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
                    ) -> dict[str, float]:
    """Every :data:`MEASURES` entry of one run's attempts with ``_ci_low`` / ``_ci_high``, the number of
    attempts in the base set (``base_size``) and the median iterations of the successful ones."""
    out: dict[str, float] = {"base_size": float(len(frame))}
    one = frame.assign(_all=0)
    for name, (value, where) in MEASURES.items():
        found = grouped_ratio(one, ["_all"], value, where, n_boot=n_boot, level=level, seed=seed)
        row = found.iloc[0] if len(found) else {"value": math.nan, "low": math.nan, "high": math.nan}
        out.update({name: float(row["value"]), f"{name}_ci_low": float(row["low"]),
                    f"{name}_ci_high": float(row["high"])})
    hit = frame.loc[frame["success"].astype(bool), "iterations"]
    out["median_iterations"] = float(hit.median()) if len(hit) else math.nan
    return out
