"""The Prinz & Flexer study's metrics as pure functions ("End-to-end adversarial white box
attacks on music instrument classification", Sec. 5.2).

- Target pairs: a targeted attack aims every attacked clip at one or more classes. Prinz & Flexer draw one
  random target per clip (Sec. 5.1) or fix one ('Accordion', Sec. 5.3), and skip a clip whose clean
  prediction already is the target; here a target is never the clip's true class nor its clean
  prediction, and the source × target matrix aims each clip at every such class.
- Pair matrix: for every (source = true class, target) cell, the attempts, the adversarial examples
  found and the mean SNR of those found.
- Matched-SNR white noise (Sec. 5.2, "white noise of a similar average SNR", 0.79 vs 0.835 clean):
  noise whose energy inside the SNR window equals the adversarial perturbation's, so its SNR is the
  attack's SNR exactly (:func:`matched_noise`), or noise at one stated SNR (:func:`noise_at_snr`).
- Cluster bootstrap: the attempts of one clip (every target of the pair matrix) are resampled together.

SNR is :func:`evaluation.metrics.snr_db`, ``20·log10(‖x_w‖₂ / ‖δ_w‖₂)`` over the window ``w`` that drops
``trim`` samples at each end (Prinz & Flexer: 2048).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from evaluation import stats


def target_pairs(labels: Tensor, clean_pred: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Every (clip, target) with ``target`` neither the clip's label nor its clean prediction.

    Args:
        labels: ``(N,)`` true classes.
        clean_pred: ``(N,)`` clean predictions.
        num_classes: number of classes ``C``.

    Returns:
        ``(clip, target)``, each ``(A,)`` int64, clip-major and targets ascending.
    """
    if labels.shape != clean_pred.shape or labels.dim() != 1:
        raise ValueError(f"labels {tuple(labels.shape)} and clean_pred {tuple(clean_pred.shape)} must be (N,)")
    classes = torch.arange(num_classes)
    allowed = (classes[None, :] != labels[:, None]) & (classes[None, :] != clean_pred[:, None])
    clip, target = allowed.nonzero(as_tuple=True)
    return clip, target


def random_target_attempts(labels: Tensor, clean_pred: Tensor, num_classes: int, seed: int
                           ) -> tuple[Tensor, Tensor]:
    """One target per clip, uniform over the classes that are neither its label nor its clean prediction.

    Prinz & Flexer (Sec. 5.1) draw "random target classes different from a sample's original prediction"; its
    code may then aim a misclassified clip at its true class, which would count restoring the correct
    label as an adversarial example, so the true class is left out too. A clip with no class left (two
    classes, misclassified) gets no attempt.

    Returns:
        ``(clip, target)``, each ``(A,)`` int64.
    """
    if labels.shape != clean_pred.shape or labels.dim() != 1:
        raise ValueError(f"labels {tuple(labels.shape)} and clean_pred {tuple(clean_pred.shape)} must be (N,)")
    classes = torch.arange(num_classes)
    allowed = (classes[None, :] != labels[:, None]) & (classes[None, :] != clean_pred[:, None])
    count = allowed.sum(dim=1)
    draw = torch.rand(len(labels), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    pick = torch.minimum((draw * count).long(), (count - 1).clamp_min(0))
    target = ((allowed.cumsum(dim=1) - 1 == pick[:, None]) & allowed).long().argmax(dim=1)
    clip = (count > 0).nonzero().flatten()
    return clip, target[clip]


@dataclass(frozen=True)
class PairMatrix:
    """Source × target cells of a targeted attack (rows: true class, columns: target).

    Attributes:
        attempts: ``(C, C)`` int64 attacked (clip, target) pairs.
        found: ``(C, C)`` int64 successful ones.
        mean_snr: ``(C, C)`` float64 mean SNR (dB) of the successful ones with a finite SNR; ``nan``
            where there is none.
    """

    attempts: np.ndarray
    found: np.ndarray
    mean_snr: np.ndarray

    @property
    def rate(self) -> np.ndarray:
        """``found / attempts``, ``nan`` where nothing was attempted."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.attempts > 0, self.found / np.maximum(self.attempts, 1), math.nan)


def pair_matrix(sources: np.ndarray, targets: np.ndarray, success: np.ndarray, snr: np.ndarray,
                num_classes: int) -> PairMatrix:
    """Counts and mean SNR of a targeted attack per (source, target) cell.

    Args:
        sources: ``(A,)`` true class of each attempt's clip.
        targets: ``(A,)`` target of each attempt.
        success: ``(A,)`` bool, the prediction reached the target.
        snr: ``(A,)`` SNR in dB (read only where ``success``; non-finite values are left out of the mean).
        num_classes: ``C``.

    Raises:
        ValueError: on mismatched lengths or a class outside ``[0, C)``.
    """
    src, tgt = np.asarray(sources, dtype=np.int64), np.asarray(targets, dtype=np.int64)
    ok, val = np.asarray(success, dtype=bool), np.asarray(snr, dtype=np.float64)
    if not (src.shape == tgt.shape == ok.shape == val.shape) or src.ndim != 1:
        raise ValueError("sources, targets, success and snr must be (A,) arrays of one length")
    if src.size and (min(src.min(), tgt.min()) < 0 or max(src.max(), tgt.max()) >= num_classes):
        raise ValueError(f"classes must lie in [0, {num_classes})")
    cell = src * num_classes + tgt
    size = num_classes * num_classes
    attempts = np.bincount(cell, minlength=size)
    found = np.bincount(cell[ok], minlength=size)
    finite = ok & np.isfinite(val)
    total = np.bincount(cell[finite], weights=val[finite], minlength=size)
    count = np.bincount(cell[finite], minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), math.nan)
    shape = (num_classes, num_classes)
    return PairMatrix(attempts.reshape(shape), found.reshape(shape), mean.reshape(shape))


def _window(x: Tensor, trim: int) -> Tensor:
    """``(N, L)``: samples ``trim .. T − trim`` of the last axis of every example (Prinz & Flexer's SNR window)."""
    length = x.shape[-1]
    if trim < 0 or 2 * trim >= length:
        raise ValueError(f"trim {trim} must be >= 0 and leave samples of the {length}")
    return x[..., trim:length - trim].reshape(x.shape[0], -1)


def _scaled(unit: Tensor, window_norm: Tensor, like: Tensor, trim: int) -> Tensor:
    """``unit`` scaled per example so that its norm inside the SNR window is ``window_norm``."""
    have = _window(unit, trim).norm(dim=1)
    gain = torch.where(have > 0, window_norm / have.clamp_min(torch.finfo(have.dtype).tiny), torch.zeros_like(have))
    return unit * gain.view(-1, *([1] * (like.dim() - 1)))


def matched_noise(clean: Tensor, adversarial: Tensor, trim: int, generator: torch.Generator | None = None) -> Tensor:
    """Gaussian white noise with the adversarial perturbation's energy inside the SNR window.

    ``‖n_w‖₂ = ‖(x' − x)_w‖₂``, so ``snr_db(x, x + n, trim) = snr_db(x, x', trim)`` exactly (before any
    clipping to the waveform's bounds), including an SNR of ∞ (no perturbation: no noise).

    Args:
        clean, adversarial: ``(N, ..., T)`` waveforms.
        trim: samples left out at each end of the SNR window.
        generator: random source of the noise.

    Returns:
        ``(N, ..., T)`` noise (to add to ``clean``).
    """
    if clean.shape != adversarial.shape:
        raise ValueError(f"clean {tuple(clean.shape)} and adversarial {tuple(adversarial.shape)} differ in shape")
    delta = (adversarial - clean).double()
    unit = torch.randn(clean.shape, generator=generator, dtype=torch.float64).to(clean.device)
    return _scaled(unit, _window(delta, trim).norm(dim=1), clean, trim).to(clean.dtype)


def noise_at_snr(clean: Tensor, snr_db: float, trim: int, generator: torch.Generator | None = None) -> Tensor:
    """Gaussian white noise at one SNR for every example: ``‖n_w‖₂ = ‖x_w‖₂ · 10^(−snr_db/20)``.

    Prinz & Flexer (Sec. 5.2) overlay every clip with noise "of a similar average SNR as the two targeted
    attacks (42.16dB)". A clip that is silent inside the window gets no noise.
    """
    if not math.isfinite(snr_db):
        raise ValueError(f"snr_db must be finite, got {snr_db}")
    unit = torch.randn(clean.shape, generator=generator, dtype=torch.float64).to(clean.device)
    level = _window(clean.double(), trim).norm(dim=1) * 10 ** (-snr_db / 20)
    return _scaled(unit, level, clean, trim).to(clean.dtype)


def cluster_draws(clips: np.ndarray, n_clips: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, A)`` int64 weights of each attempt in each bootstrap draw of the clips.

    A draw resamples the ``n_clips`` clips with replacement (:func:`evaluation.stats.bootstrap_indices`);
    an attempt's weight is how often its clip was drawn, so all attempts of a clip move together.
    """
    draws = stats.bootstrap_indices(n_clips, n_boot, seed)
    counts = np.stack([np.bincount(d, minlength=n_clips) for d in draws]) if n_clips else np.zeros((n_boot, 0))
    return counts[:, np.asarray(clips, dtype=np.int64)].astype(np.int64)


def bootstrap_interval(values: np.ndarray, weights: np.ndarray, statistic: Callable[[np.ndarray], float],
                       value: float, level: float = 0.95) -> stats.Interval:
    """Percentile interval of ``statistic`` over weighted draws (weights from :func:`cluster_draws`).

    Each draw repeats value ``a`` ``weights[b, a]`` times; a draw with no value gives ``nan``
    (counted in ``undefined_share``).
    """
    vals = np.asarray(values, dtype=np.float64)
    draws = np.array([statistic(np.repeat(vals, w)) if w.sum() else math.nan for w in weights])
    return stats.percentile_interval(draws, value, level)


def mean_or_nan(values: np.ndarray) -> float:
    """Mean, ``nan`` if empty."""
    return float(np.mean(values)) if len(values) else math.nan


def median_or_nan(values: np.ndarray) -> float:
    """Median (mean of the two middle values for even counts), ``nan`` if empty."""
    return float(np.median(values)) if len(values) else math.nan
