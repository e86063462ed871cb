"""Seed 003's paths from a (perturbed) spectrogram back to a waveform.

Seed 003 (Section III) attacks dB spectrograms and transfers the result to the waveform: the
STFT is inverted with the clean clip's complex phase kept, the mel spectrogram with Griffin-Lim.
(Its published code swaps the real and imaginary parts when it rebuilds the complex STFT; here
the complex phase is used as is.) Both take the front-end's own units (dB), not the normalised
representation: apply ``victim.normalizer.inverse`` first.
"""
from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import Tensor

from victims.frontends.common import db_to_value, stft_complex
from victims.frontends.spectral import MelDb, StftDb


def clean_phase(frontend: StftDb, wave: Tensor) -> Tensor:
    """Unit-modulus phase ``X / |X|`` of the clean STFT, ``(B, n_fft // 2 + 1, frames)`` (1 where ``X = 0``)."""
    spec = stft_complex(wave, frontend.window, frontend.n_fft, frontend.hop)
    mag = spec.abs()
    return torch.where(mag > 0, spec / mag.clamp_min(torch.finfo(mag.dtype).tiny), torch.ones_like(spec))


def istft_db(rep: Tensor, phase: Tensor, frontend: StftDb, length: int) -> Tensor:
    """Waveform from an STFT-dB representation and a kept phase (seed 003's STFT inversion).

    Args:
        rep: ``(B, 1, F, frames)`` in ``frontend``'s dB units (possibly perturbed).
        phase: unit-modulus phase from :func:`clean_phase`, ``(B, F, frames)``.
        frontend: the :class:`StftDb` that produced ``rep``.
        length: number of output samples ``T``.

    Returns:
        ``(B, 1, T)`` waveform (not clipped to ``[-1, 1]``).

    Raises:
        ValueError: if ``rep`` and ``phase`` do not have matching shapes, or the frames do not overlap.
    """
    if rep.dim() != 4 or rep.shape[1] != 1 or rep.shape[2:] != phase.shape[1:] or rep.shape[0] != phase.shape[0]:
        raise ValueError(f"istft_db needs rep (B, 1, F, frames) matching phase (B, F, frames); "
                         f"got {tuple(rep.shape)} and {tuple(phase.shape)}")
    if frontend.hop >= frontend.n_fft:
        raise ValueError(f"an STFT with hop {frontend.hop} >= n_fft {frontend.n_fft} has no inverse: a Hann window "
                         "is zero where its frames meet (no overlap-add)")
    mag = db_to_value(rep.squeeze(1), frontend.amin).sqrt()
    spec = mag.to(phase.real.dtype) * phase
    wave = torch.istft(spec, frontend.n_fft, frontend.hop, window=frontend.window.to(mag.dtype),
                       center=True, length=length)
    return wave.unsqueeze(1)


def mel_db_griffinlim(rep: Tensor, frontend: MelDb, length: int, n_iter: int = 64,
                      momentum: float = 0.99, ref_db: Tensor | None = None) -> Tensor:
    """Waveform from a mel-dB representation: pseudo-inverse of the mel filters, then Griffin-Lim.

    The linear spectrogram is the least-squares (minimum-norm) solution of ``fb · S = mel``, made
    non-negative (as torchaudio's ``InverseMelScale``); Griffin & Lim (1984) with Perraudin et
    al.'s momentum then estimates a phase, starting from zero phase so the result is deterministic.

    Args:
        rep: ``(B, 1, n_mels, frames)`` in ``frontend``'s dB units.
        frontend: the :class:`MelDb` that produced ``rep``.
        length: number of output samples ``T``.
        n_iter: Griffin-Lim iterations.
        momentum: Griffin-Lim momentum in ``[0, 1)``.
        ref_db: ``(B,)`` reference level of each clean example, ``frontend.reference_db(wave)``;
            needed when ``frontend.ref == "max"`` (the representation is then relative to it).

    Returns:
        ``(B, 1, T)`` waveform.

    Raises:
        ValueError: on a wrong shape, or a missing ``ref_db`` for a ``ref: max`` front-end.
    """
    if rep.dim() != 4 or rep.shape[1] != 1 or rep.shape[2] != frontend.n_mels:
        raise ValueError(f"mel_db_griffinlim needs rep (B, 1, {frontend.n_mels}, frames), got {tuple(rep.shape)}")
    if ref_db is None:
        if frontend.ref == "max":
            raise ValueError("mel_db_griffinlim needs ref_db for a front-end with ref 'max'")
        ref_db = torch.full(rep.shape[:1], frontend.fixed_ref_db)
    db = rep.squeeze(1) + ref_db.to(rep).view(-1, 1, 1)
    mel = db_to_value(db, frontend.amin, frontend.power)
    fb = frontend.fb.to(mel.dtype)
    spec = torch.relu(torch.matmul(torch.linalg.pinv(fb), mel))
    window = frontend.window.to(mel.dtype)
    wave = AF.griffinlim(spec, window, frontend.n_fft, frontend.hop, frontend.n_fft, frontend.power,
                         n_iter, momentum, length, False)
    return wave.unsqueeze(1)
