"""Recording-level decisions from segment predictions, and their uncertainty (Koerich et al., Section II).

Koerich et al. cut every recording into overlapping windows, classifies each window, and decides for the
recording by **majority vote** (the class most windows predict) or by the **sum rule** (the class with
the largest sum of window probabilities). Segment-level and recording-level accuracies, a transfer
rate and a mean SNR are all ratios of sums over recordings, so one cluster bootstrap (recordings drawn
with replacement, their windows kept together: windows of one recording are not independent) gives
every interval.

Ties: Koerich et al.'s code takes ``np.argmax`` of the vote counts, i.e. the lowest class index. Here a tie
in votes is broken by the summed probability of the tied classes (then by the lowest index), so the
decision does not depend on how the classes happen to be numbered.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluation.stats import Interval, bootstrap_indices, percentile_interval


@dataclass(frozen=True)
class Recordings:
    """The recordings behind ``N`` segments.

    Attributes:
        ids: ``(G,)`` sorted recording ids.
        index: ``(N,)`` position in ``ids`` of each segment's recording.
        labels: ``(G,)`` label of each recording.
        segments: ``(G,)`` number of segments of each recording.
    """

    ids: np.ndarray
    index: np.ndarray
    labels: np.ndarray
    segments: np.ndarray


def recordings(groups: np.ndarray, labels: np.ndarray) -> Recordings:
    """Group ``N`` segments by recording id.

    Raises:
        ValueError: if the arrays differ in length or one recording carries two labels.
    """
    groups, labels = np.asarray(groups, np.int64), np.asarray(labels, np.int64)
    if groups.shape != labels.shape or groups.ndim != 1:
        raise ValueError(f"groups {groups.shape} and labels {labels.shape} must be equal-length vectors")
    ids, index = np.unique(groups, return_inverse=True)
    rec_labels = np.full(len(ids), -1, np.int64)
    rec_labels[index] = labels
    if (rec_labels[index] != labels).any():
        bad = int(ids[index[rec_labels[index] != labels][0]])
        raise ValueError(f"recording {bad} has segments with different labels")
    return Recordings(ids, index, rec_labels, np.bincount(index, minlength=len(ids)))


def sum_rule(probs: np.ndarray, rec: Recordings) -> np.ndarray:
    """``(G,)`` class with the largest sum of segment probabilities per recording (Koerich et al.'s sum rule)."""
    return _summed(probs, rec).argmax(axis=1)


def majority_vote(probs: np.ndarray, rec: Recordings) -> np.ndarray:
    """``(G,)`` class predicted by most segments per recording; ties go to the larger summed probability
    among the tied classes, then to the lower class index (see the module docstring)."""
    probs = np.asarray(probs, np.float64)
    votes = np.zeros((len(rec.ids), probs.shape[1]), np.int64)
    np.add.at(votes, (rec.index, probs.argmax(axis=1)), 1)
    tied = votes == votes.max(axis=1, keepdims=True)
    return np.where(tied, _summed(probs, rec), -np.inf).argmax(axis=1)


def _summed(probs: np.ndarray, rec: Recordings) -> np.ndarray:
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or probs.shape[0] != rec.index.shape[0]:
        raise ValueError(f"probs must be (segments={rec.index.shape[0]}, classes), got {probs.shape}")
    total = np.zeros((len(rec.ids), probs.shape[1]))
    np.add.at(total, rec.index, probs)
    return total


def per_recording(values: np.ndarray, rec: Recordings) -> np.ndarray:
    """``(G,)`` sum of a per-segment quantity over each recording's segments."""
    values = np.asarray(values, np.float64)
    if values.shape != rec.index.shape:
        raise ValueError(f"values must have one entry per segment ({rec.index.shape[0]}), got {values.shape}")
    return np.bincount(rec.index, weights=values, minlength=len(rec.ids))


def accuracy_counts(probs: np.ndarray, rec: Recordings) -> dict[str, np.ndarray]:
    """Per-recording numerators of the three accuracies of Koerich et al.'s tables.

    Returns:
        ``segment``: correct segments of each recording (denominator ``rec.segments``);
        ``vote`` and ``sum``: 1 where the majority vote / the sum rule is right (denominator 1).
    """
    pred = np.asarray(probs).argmax(axis=1)
    return {"segment": per_recording(pred == rec.labels[rec.index], rec),
            "vote": (majority_vote(probs, rec) == rec.labels).astype(np.float64),
            "sum": (sum_rule(probs, rec) == rec.labels).astype(np.float64)}


def transfer_counts(source_fooled: np.ndarray, target_clean_correct: np.ndarray, target_fooled: np.ndarray,
                    rec: Recordings) -> tuple[np.ndarray, np.ndarray]:
    """Per-recording numerator and denominator of the transfer rate (seed 001's definition, Koerich et al.'s setting):
    among segments whose attack fooled the source model and whose target model is right on the clean
    (reconstructed) input, the share the target model gets wrong on the adversarial one."""
    base = np.asarray(source_fooled, bool) & np.asarray(target_clean_correct, bool)
    return per_recording(base & np.asarray(target_fooled, bool), rec), per_recording(base, rec)


def ratio_of_sums(num: np.ndarray, den: np.ndarray) -> float:
    """``Σ num / Σ den`` (``nan`` when ``Σ den = 0``)."""
    total = float(np.sum(den))
    return float(np.sum(num)) / total if total > 0 else float("nan")


def cluster_interval(num: np.ndarray, den: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> Interval:
    """``Σ num / Σ den`` with its percentile-bootstrap interval over recordings (whole recordings drawn
    with replacement; a draw with ``Σ den = 0`` is undefined and counted in ``undefined_share``)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError(f"num {num.shape} and den {den.shape} must be equal-length vectors")
    idx = bootstrap_indices(len(num), n_boot, seed)
    tops, bottoms = num[idx].sum(axis=1), den[idx].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = np.where(bottoms > 0, tops / bottoms, np.nan)
    return percentile_interval(draws, ratio_of_sums(num, den), level)
