"""STFT-power and mel spectrograms in dB (seed 004's STFT; seed 000's and seed 003's mel).

Both are ``(B, 1, T) → (B, 1, F, T // hop + 1)`` with a centred, zero-padded Hann STFT (librosa's
defaults), differentiable everywhere (dB uses ``log10(S + amin)``, never a floor), on any device.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torchaudio.functional as AF
from torch import Tensor

from victims.frontends.base import FRONTENDS, FrontEnd, check_waveform
from victims.frontends.common import db_bound, full_precision_forward, stft_power, to_db
from victims.registry import ConfigError


@FRONTENDS.register("stft_db")
class StftDb(FrontEnd):
    """``10·log10(|STFT|² + amin)`` (seed 004, Eq. 10: Hann window 2048, hop 512, centred).

    Shapes ``(B, 1, T) → (B, 1, n_fft // 2 + 1, T // hop + 1)``; rows are FFT bins from DC up.

    Args:
        sample_rate: waveform rate in Hz.
        n_fft: FFT and Hann window length.
        hop: hop length in samples.
        amin: added to the power before the log (the dB floor is ``10·log10(amin)``).
    """

    def __init__(self, sample_rate: int, n_fft: int = 2048, hop: int = 512, amin: float = 1e-10) -> None:
        super().__init__(sample_rate)
        if n_fft < 2 or hop < 1 or amin <= 0:
            raise ConfigError(f"stft_db needs n_fft >= 2, hop >= 1, amin > 0; got {n_fft}, {hop}, {amin}")
        self.n_fft, self.hop, self.amin = int(n_fft), int(hop), float(amin)
        self.register_buffer("window", torch.hann_window(self.n_fft, dtype=torch.float64))

    @property
    def n_bands(self) -> int:
        return self.n_fft // 2 + 1

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop + 1

    def output_bounds(self) -> tuple[Tensor, Tensor]:
        """``[10·log10(amin), 10·log10((Σ w)² + amin)]`` per bin: ``|X[k]| ≤ Σ|w|`` for a frame in
        ``[-1, 1]`` (reached at DC and Nyquist; real inputs reach about ``2/π · Σ w`` elsewhere)."""
        top = db_bound(float(self.window.double().sum()) ** 2, self.amin)
        return torch.full((self.n_bands,), db_bound(0.0, self.amin)), torch.full((self.n_bands,), top)

    def power(self, wave: Tensor) -> Tensor:
        """``|STFT|²`` shaped ``(B, F, frames)``."""
        check_waveform(wave)
        return stft_power(wave, self.window, self.n_fft, self.hop)

    def db_from_power(self, power: Tensor) -> Tensor:
        """dB representation ``(B, 1, F, frames)`` from :meth:`power`'s output."""
        return to_db(power, self.amin).unsqueeze(1)

    @full_precision_forward
    def forward(self, wave: Tensor) -> Tensor:
        return self.db_from_power(self.power(wave))


@FRONTENDS.register("mel_db")
class MelDb(FrontEnd):
    """Mel spectrogram in dB, matching ``librosa.feature.melspectrogram`` + ``power_to_db``.

    ``(20 / power) · log10(mel(|STFT|^power) + amin) − (20 / power) · log10(ref)``: power 2 is
    seed 000's mel power (n_fft 2048, hop 512, 100 bands from 40 Hz at 16 kHz), power 1 is
    seed 003's mel magnitude (n_fft 512, hop 256, 64 bands, dB relative to the clip's maximum:
    ``ref: max``). Shapes ``(B, 1, T) → (B, 1, n_mels, T // hop + 1)``.

    Args:
        sample_rate: waveform rate in Hz.
        n_fft: FFT and Hann window length.
        hop: hop length in samples.
        n_mels: number of mel bands.
        fmin: lowest band edge in Hz.
        fmax: highest band edge in Hz (``None``: Nyquist).
        power: 2 for power, 1 for magnitude.
        htk: HTK mel scale instead of Slaney's (librosa's ``htk``).
        norm: ``"slaney"`` area normalisation of the filters, or ``None``.
        amin: added before the log.
        ref: reference value in the same units as the mel spectrogram, or ``"max"`` for each
            example's own maximum (then the output is ``≤ 0`` dB).
        top_db: optional floor at ``max − top_db`` per example (seed 000 used 80). It zeroes the
            gradient of every value below the floor, so it is off by default.
    """

    def __init__(self, sample_rate: int, n_fft: int = 2048, hop: int = 512, n_mels: int = 128,
                 fmin: float = 0.0, fmax: float | None = None, power: float = 2.0, htk: bool = False,
                 norm: Literal["slaney"] | None = "slaney", amin: float = 1e-10,
                 ref: float | Literal["max"] = 1.0, top_db: float | None = None) -> None:
        super().__init__(sample_rate)
        fmax = sample_rate / 2 if fmax is None else float(fmax)
        if not 0 <= fmin < fmax <= sample_rate / 2:
            raise ConfigError(f"mel_db needs 0 <= fmin < fmax <= {sample_rate / 2}; got {fmin}, {fmax}")
        if power not in (1, 2) or norm not in ("slaney", None) or amin <= 0:
            raise ConfigError(f"mel_db needs power 1 or 2, norm 'slaney' or null, amin > 0; got {power}, {norm}, {amin}")
        if not (ref == "max" or (isinstance(ref, (int, float)) and ref > 0)):
            raise ConfigError(f"mel_db ref must be a positive number or 'max', got {ref!r}")
        if top_db is not None and top_db <= 0:
            raise ConfigError(f"mel_db top_db must be positive or null, got {top_db}")
        self.n_fft, self.hop, self.n_mels = int(n_fft), int(hop), int(n_mels)
        self.power, self.amin, self.ref, self.top_db = float(power), float(amin), ref, top_db
        self.register_buffer("window", torch.hann_window(self.n_fft, dtype=torch.float64))
        fb = AF.melscale_fbanks(self.n_fft // 2 + 1, float(fmin), fmax, self.n_mels, sample_rate,
                                norm=norm, mel_scale="htk" if htk else "slaney")
        self.register_buffer("fb", fb.T.contiguous())

    @property
    def n_bands(self) -> int:
        return self.n_mels

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop + 1

    def mel(self, wave: Tensor) -> Tensor:
        """Mel power (or magnitude) ``(B, n_mels, frames)`` before dB."""
        check_waveform(wave)
        spec = stft_power(wave, self.window, self.n_fft, self.hop)
        if self.power != 2.0:
            spec = (spec + torch.finfo(spec.dtype).tiny).pow(self.power / 2)
        return torch.matmul(self.fb.to(spec.dtype), spec)

    @full_precision_forward
    def forward(self, wave: Tensor) -> Tensor:
        db = to_db(self.mel(wave), self.amin, self.power)
        db = db - self._reference(db).view(-1, 1, 1)
        if self.top_db is not None:
            db = torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - self.top_db)
        return db.unsqueeze(1)

    def output_bounds(self) -> tuple[Tensor, Tensor]:
        """Per band: ``|X[k]| ≤ Σ w`` bounds each mel value by ``(Σ w)^power · Σ_k fb[m, k]``."""
        peak = float(self.window.double().sum()) ** self.power
        top = to_db(peak * self.fb.double().sum(dim=1), self.amin, self.power)
        floor = torch.full_like(top, db_bound(0.0, self.amin, self.power))
        if self.ref == "max":
            return (floor - top.max()).float(), torch.zeros_like(top).float()
        shift = self.fixed_ref_db
        return (floor - shift).float(), (top - shift).float()

    def reference_db(self, wave: Tensor) -> Tensor:
        """``(B,)`` dB subtracted from each example: ``(20 / power)·log10(ref)``, or with
        ``ref: max`` the example's own maximum (what :mod:`victims.inverse` adds back)."""
        return self._reference(to_db(self.mel(wave), self.amin, self.power))

    def _reference(self, db: Tensor) -> Tensor:
        if self.ref == "max":
            return db.amax(dim=(-2, -1))
        return torch.full(db.shape[:1], self.fixed_ref_db, dtype=db.dtype, device=db.device)

    @property
    def fixed_ref_db(self) -> float:
        """``(20 / power)·log10(ref)`` for a numeric ``ref``; 0 with ``ref: max`` (no fixed shift)."""
        return 0.0 if self.ref == "max" else (20.0 / self.power) * math.log10(float(self.ref))
