"""Perceptual quality of (reference, adversarial) waveform pairs: SNR, perceptual distance, PESQ and STOI.

* SNR: :func:`evaluation.metrics.snr_db` (seeds 000, 001).
* Perceptual distance: :class:`attacks.psychoacoustic.PsychoacousticModel` (Qin et al. 2019, Sec. 4), in dB
  above the clip's masking threshold (≤ 0 masked).
* PESQ (ITU-T P.862, the ``pesq`` package): narrow band at 8 kHz, wide band (P.862.2) at 16 kHz; MOS-LQO up to
  ~4.5 (4.64 wide band).
* STOI (Taal et al. 2011, the ``pystoi`` package): intelligibility in [0, 1] at any rate (resampled to 10 kHz).

PESQ and STOI come from the optional extra ``advaudio[audio-quality]``. A score that a clip's rate, length or
content rules out (PESQ at 44.1 kHz, a clip under PESQ's 1/4 s or STOI's 30 non-silent frames, a silent
reference, a missing package) is ``None`` with a one-line reason in ``not_applicable``.

:func:`example_scores` scores the adversarial examples of an attack run (the harness's ``quality`` option) with
the perceptual threat model's STFT (:func:`attacks.perceptual.stft_setting`), as per-clip arrays.
"""
from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attacks.perceptual import stft_setting
from attacks.psychoacoustic import PsychoacousticModel
from evaluation.metrics import snr_db
from victims.registry import ConfigError

PESQ_MODES = {8000: "nb", 16000: "wb"}
"""PESQ's narrow band (P.862) is defined at 8 kHz, its wide band (P.862.2) at 16 kHz; no other rate."""
EXTRA = "pip install 'advaudio[audio-quality]'"
SCORES = ("perceptual_db", "pesq", "stoi")
"""The scores :func:`example_scores` adds to an attack run's SNR."""


class NotApplicable(ValueError):
    """A score that this clip's rate, length or content rules out, or whose package is missing (one line)."""


@dataclass(frozen=True)
class Quality:
    """Scores of one (reference, adversarial) pair; ``None`` where ``not_applicable`` says why."""

    snr_db: float
    perceptual_db: float
    pesq: float | None
    stoi: float | None
    not_applicable: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"snr_db": self.snr_db, "perceptual_db": self.perceptual_db, "pesq": self.pesq, "stoi": self.stoi,
                "not_applicable": dict(self.not_applicable)}


def _silent_reference(reference: np.ndarray) -> None:
    if not np.any(reference):
        raise NotApplicable("the reference clip is silent")


def pesq_score(reference: np.ndarray, degraded: np.ndarray, sample_rate: int) -> float:
    """PESQ MOS-LQO of ``degraded`` against ``reference`` (1-D, same length).

    Raises:
        NotApplicable: a rate other than 8/16 kHz, a silent reference, under 1/4 s, no utterance found, or
            ``pesq`` not installed.
    """
    if sample_rate not in PESQ_MODES:
        raise NotApplicable(f"PESQ is defined at 8 kHz (narrow band) and 16 kHz (wide band), not {sample_rate} Hz")
    _silent_reference(reference)
    try:
        import pesq
    except ImportError:
        raise NotApplicable(f"PESQ needs the pesq package: {EXTRA}") from None
    try:
        return float(pesq.pesq(sample_rate, reference, degraded, PESQ_MODES[sample_rate]))
    except (pesq.BufferTooShortError, pesq.NoUtterancesError) as err:
        message = err.args[0].decode() if err.args and isinstance(err.args[0], bytes) else str(err)
        raise NotApplicable(f"PESQ: {message}") from None


def stoi_score(reference: np.ndarray, degraded: np.ndarray, sample_rate: int) -> float:
    """STOI of ``degraded`` against ``reference`` (1-D, same length, any rate).

    Raises:
        NotApplicable: a silent reference, fewer than the 30 non-silent 25.6 ms frames STOI needs (pystoi
            warns and returns 1e-5 there), or ``pystoi`` not installed.
    """
    _silent_reference(reference)
    try:
        import pystoi
    except ImportError:
        raise NotApplicable(f"STOI needs the pystoi package: {EXTRA}") from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(pystoi.stoi(reference, degraded, sample_rate))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        raise NotApplicable("STOI needs 30 non-silent frames of 25.6 ms (~0.4 s of sound); the clip has fewer")
    return value


def _optional(name: str, score: Any, reasons: dict[str, str], *args: Any) -> float | None:
    try:
        return score(*args)
    except NotApplicable as why:
        reasons[name] = str(why)
        return None


def batch_quality(references: Tensor, adversarials: Tensor, sample_rate: int, n_fft: int = 2048,
                  hop: int = 512) -> list[Quality]:
    """:class:`Quality` of each pair of ``(N, T)`` or ``(N, 1, T)`` waveforms.

    Args:
        references: clean clips.
        adversarials: their adversarial versions, same shape.
        sample_rate: Hz of both.
        n_fft: STFT window of the psychoacoustic model (Qin et al.: 2048 at 16 kHz).
        hop: its hop (Qin et al.: 512).

    Raises:
        ValueError: shapes differ or a sample is not finite.
        victims.registry.ConfigError: a clip shorter than ``n_fft`` or bad STFT settings.
    """
    if references.shape != adversarials.shape:
        raise ValueError(f"references {tuple(references.shape)} and adversarials {tuple(adversarials.shape)} "
                         "differ in shape")
    if not (torch.isfinite(references).all() and torch.isfinite(adversarials).all()):
        raise ValueError("quality scores need finite samples; a clip holds NaN or inf")
    references, adversarials = references.detach().flatten(1), adversarials.detach().flatten(1)
    snr = snr_db(references, adversarials)
    model = PsychoacousticModel(sample_rate, n_fft, hop)
    with torch.no_grad():
        perceptual = model.distance(adversarials - references, model.masking(references))
    ref_np, adv_np = references.double().cpu().numpy(), adversarials.double().cpu().numpy()
    scores = []
    for i in range(references.shape[0]):
        reasons: dict[str, str] = {}
        pesq_value = _optional("pesq", pesq_score, reasons, ref_np[i], adv_np[i], sample_rate)
        stoi_value = _optional("stoi", stoi_score, reasons, ref_np[i], adv_np[i], sample_rate)
        scores.append(Quality(float(snr[i]), float(perceptual[i]), pesq_value, stoi_value, reasons))
    return scores


def clip_quality(reference: Tensor, adversarial: Tensor, sample_rate: int, n_fft: int = 2048,
                 hop: int = 512) -> Quality:
    """:class:`Quality` of one pair of ``(T,)`` waveforms (see :func:`batch_quality`)."""
    return batch_quality(reference.reshape(1, -1), adversarial.reshape(1, -1), sample_rate, n_fft, hop)[0]


def example_scores(references: Tensor, adversarials: Tensor, sample_rate: int
                   ) -> tuple[dict[str, Tensor], dict[str, dict[str, int]]]:
    """Per-clip :data:`SCORES` of ``(n, 1, T)`` adversarial examples against their clean clips, as ``(n,)``
    float64 (``nan`` where not applicable), and for each score how many clips each reason ruled out.

    The perceptual distance uses the perceptual threat model's STFT at ``sample_rate``; clips shorter than one
    of its frames get no score at all (PESQ and STOI need longer clips still).
    """
    n = references.shape[0]
    values = {name: torch.full((n,), math.nan, dtype=torch.float64) for name in SCORES}
    if n == 0:
        return values, {}
    try:
        found = batch_quality(references, adversarials, sample_rate, *stft_setting(sample_rate))
    except ConfigError as why:
        return values, {name: {str(why): n} for name in SCORES}
    reasons: dict[str, Counter[str]] = {name: Counter() for name in SCORES}
    for i, score in enumerate(found):
        for name in SCORES:
            value = getattr(score, name)
            if value is not None:
                values[name][i] = value
        for name, why in score.not_applicable.items():
            reasons[name][why] += 1
    return values, {name: dict(counts) for name, counts in reasons.items() if counts}
