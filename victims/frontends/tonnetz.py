"""Tonnetz (Harte, Sandler & Gasser 2006 tonal centroid) and seed 004's appended representations.

Seed 004 appends librosa's tonnetz features to the STFT and wavelet spectrograms ("STFT|tonnetz",
"DWT|tonnetz"). librosa computes tonnetz from a CQT chroma; a differentiable CQT is costly, so the
chroma here comes from an STFT power spectrum and a chroma filter bank built exactly as
``librosa.filters.chroma`` builds it (tuning fixed, not estimated), followed by librosa's 6×12
projection of the L1-normalised chroma (radii 1, 1, 0.5 for fifths, minor and major thirds).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from victims.frontends.base import FRONTENDS, FrontEnd, check_waveform
from victims.frontends.common import full_precision_forward, stft_power
from victims.frontends.cwt import Cwt
from victims.frontends.spectral import StftDb
from victims.registry import ConfigError

N_CHROMA = 12


def chroma_filters(sample_rate: int, n_fft: int, tuning: float = 0.0, ctroct: float = 5.0,
                   octwidth: float | None = 2.0) -> Tensor:
    """``librosa.filters.chroma`` (12 bins, L2-normalised columns, starting at C), float64.

    Args:
        sample_rate: rate in Hz.
        n_fft: FFT size.
        tuning: deviation from A440 in fractions of a chroma bin.
        ctroct: centre of the Gaussian octave weighting, in octaves above A0 = 27.5 Hz.
        octwidth: its width in octaves (``None``: flat).

    Returns:
        ``(12, n_fft // 2 + 1)`` weights.
    """
    freqs = torch.arange(1, n_fft, dtype=torch.float64) * sample_rate / n_fft
    a440 = 440.0 * 2.0 ** (tuning / N_CHROMA)
    frqbins = N_CHROMA * torch.log2(freqs / (a440 / 16))
    frqbins = torch.cat([frqbins[:1] - 1.5 * N_CHROMA, frqbins])
    widths = torch.cat([(frqbins[1:] - frqbins[:-1]).clamp_min(1.0), torch.ones(1, dtype=torch.float64)])
    half = round(N_CHROMA / 2)
    dist = frqbins[None, :] - torch.arange(N_CHROMA, dtype=torch.float64)[:, None]
    dist = torch.remainder(dist + half + 10 * N_CHROMA, N_CHROMA) - half
    wts = torch.exp(-0.5 * (2 * dist / widths) ** 2)
    wts = wts / wts.norm(dim=0, keepdim=True)
    if octwidth is not None:
        wts = wts * torch.exp(-0.5 * ((frqbins / N_CHROMA - ctroct) / octwidth) ** 2)
    wts = torch.roll(wts, -3, dims=0)
    return wts[:, : n_fft // 2 + 1].contiguous()


def tonnetz_matrix() -> Tensor:
    """Harte et al.'s 6×12 projection as librosa writes it: rows (sin, cos) of fifths, minor and
    major thirds, with radii 1, 1 and 0.5."""
    dim_map = torch.arange(N_CHROMA, dtype=torch.float64)
    scale = torch.tensor([7 / 6, 7 / 6, 3 / 2, 3 / 2, 2 / 3, 2 / 3], dtype=torch.float64)
    angle = scale[:, None] * dim_map[None, :]
    angle[::2] -= 0.5
    radius = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.5, 0.5], dtype=torch.float64)
    return radius[:, None] * torch.cos(math.pi * angle)


@FRONTENDS.register("tonnetz")
class Tonnetz(FrontEnd):
    """6-D tonal centroid per STFT frame: ``Φ · c / (Σ c + amin)`` with ``c = chroma_fb · |STFT|²``.

    Shapes ``(B, 1, T) → (B, 1, 6, T // hop + 1)``. Silence maps to the origin.

    Args:
        sample_rate: waveform rate in Hz.
        n_fft: FFT and Hann window length of the chroma STFT.
        hop: hop length in samples.
        tuning: deviation from A440 in fractions of a chroma bin (librosa estimates it per clip;
            fixed here so the transform stays differentiable).
        ctroct: centre of the octave weighting (librosa's default 5).
        octwidth: width of the octave weighting in octaves (librosa's default 2).
        amin: added to the chroma sum before normalising.
    """

    def __init__(self, sample_rate: int, n_fft: int = 2048, hop: int = 512, tuning: float = 0.0,
                 ctroct: float = 5.0, octwidth: float | None = 2.0, amin: float = 1e-10) -> None:
        super().__init__(sample_rate)
        if n_fft < 2 or hop < 1 or amin <= 0:
            raise ConfigError(f"tonnetz needs n_fft >= 2, hop >= 1, amin > 0; got {n_fft}, {hop}, {amin}")
        self.n_fft, self.hop, self.amin = int(n_fft), int(hop), float(amin)
        self.register_buffer("window", torch.hann_window(self.n_fft, dtype=torch.float64))
        self.register_buffer("chroma_fb", chroma_filters(sample_rate, self.n_fft, tuning, ctroct, octwidth))
        self.register_buffer("phi", tonnetz_matrix())

    @property
    def n_bands(self) -> int:
        return 6

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop + 1

    def output_bounds(self) -> tuple[Tensor, Tensor]:
        """A convex combination of the chroma directions (or the origin): each row's min and max."""
        return self.phi.min(dim=1).values.float(), self.phi.max(dim=1).values.float()

    def from_power(self, power: Tensor) -> Tensor:
        """Tonnetz ``(B, 1, 6, frames)`` from an STFT power spectrum ``(B, n_fft // 2 + 1, frames)``."""
        chroma = torch.matmul(self.chroma_fb.to(power.dtype), power)
        chroma = chroma / (chroma.sum(dim=1, keepdim=True) + self.amin)
        return torch.matmul(self.phi.to(power.dtype), chroma).unsqueeze(1)

    @full_precision_forward
    def forward(self, wave: Tensor) -> Tensor:
        check_waveform(wave)
        return self.from_power(stft_power(wave, self.window, self.n_fft, self.hop))


def resample_frames(x: Tensor, hop_from: int, hop_to: int, frames: int) -> Tensor:
    """Linearly interpolate ``x`` (frames at ``k · hop_from``) to ``frames`` frames at ``k · hop_to``.

    Positions past the last input frame take its value.
    """
    if hop_from == hop_to and x.shape[-1] == frames:
        return x
    pos = (torch.arange(frames, device=x.device, dtype=x.dtype) * (hop_to / hop_from)).clamp(0, x.shape[-1] - 1)
    left = pos.floor().long()
    right = (left + 1).clamp_max(x.shape[-1] - 1)
    frac = pos - left
    return x[..., left] * (1 - frac) + x[..., right] * frac


class TonnetzAppended(FrontEnd):
    """A base representation with the tonnetz's 6 rows appended below it, on the base's frames.

    Shapes ``(B, 1, T) → (B, 1, F_base + 6, frames_base)``.

    Args:
        base: the spectrogram front-end (its ``hop`` sets the frames).
        tonnetz: the tonnetz front-end, resampled in time to the base's frames if its hop differs.
    """

    def __init__(self, base: StftDb | Cwt, tonnetz: Tonnetz) -> None:
        super().__init__(base.sample_rate)
        self.base, self.tonnetz = base, tonnetz

    @property
    def n_bands(self) -> int:
        return self.base.n_bands + self.tonnetz.n_bands

    def num_frames(self, num_samples: int) -> int:
        return self.base.num_frames(num_samples)

    def output_bounds(self) -> tuple[Tensor, Tensor]:
        (blo, bhi), (tlo, thi) = self.base.output_bounds(), self.tonnetz.output_bounds()
        return torch.cat([blo, tlo.to(blo)]), torch.cat([bhi, thi.to(bhi)])

    def _append(self, rep: Tensor, ton: Tensor) -> Tensor:
        ton = resample_frames(ton, self.tonnetz.hop, self.base.hop, rep.shape[-1])
        return torch.cat([rep, ton.to(rep.dtype)], dim=2)

    @full_precision_forward
    def forward(self, wave: Tensor) -> Tensor:
        return self._append(self.base(wave), self.tonnetz(wave))


def _sub_config(name: str, cfg: dict[str, Any] | None, defaults: dict[str, Any]) -> dict[str, Any]:
    if cfg is not None and not isinstance(cfg, dict):
        raise ConfigError(f"{name} must be a mapping of keyword arguments, got {cfg!r}")
    return {**defaults, **(cfg or {})}


@FRONTENDS.register("stft_tonnetz")
class StftTonnetz(TonnetzAppended):
    """Seed 004's "STFT|tonnetz": :class:`StftDb` rows, then :class:`Tonnetz` rows.

    When both use the same ``n_fft`` and ``hop`` (the default) the STFT is computed once.

    Args:
        sample_rate: waveform rate in Hz.
        stft: keyword arguments of ``stft_db``.
        tonnetz: keyword arguments of ``tonnetz`` (``n_fft`` and ``hop`` default to the STFT's).
    """

    def __init__(self, sample_rate: int, stft: dict[str, Any] | None = None,
                 tonnetz: dict[str, Any] | None = None) -> None:
        base = FRONTENDS.create("stft_db", sample_rate=sample_rate, **_sub_config("stft", stft, {}))
        ton_cfg = _sub_config("tonnetz", tonnetz, {"n_fft": base.n_fft, "hop": base.hop})
        super().__init__(base, FRONTENDS.create("tonnetz", sample_rate=sample_rate, **ton_cfg))
        self.shared = self.tonnetz.n_fft == base.n_fft and self.tonnetz.hop == base.hop

    @full_precision_forward
    def forward(self, wave: Tensor) -> Tensor:
        if not self.shared:
            return super().forward(wave)
        power = self.base.power(wave)
        return self._append(self.base.db_from_power(power), self.tonnetz.from_power(power))


@FRONTENDS.register("cwt_tonnetz")
class CwtTonnetz(TonnetzAppended):
    """Seed 004's "DWT|tonnetz": :class:`Cwt` rows, then :class:`Tonnetz` rows on the CWT's frames.

    Args:
        sample_rate: waveform rate in Hz.
        cwt: keyword arguments of ``cwt``.
        tonnetz: keyword arguments of ``tonnetz`` (``hop`` defaults to the CWT's).
    """

    def __init__(self, sample_rate: int, cwt: dict[str, Any] | None = None,
                 tonnetz: dict[str, Any] | None = None) -> None:
        base = FRONTENDS.create("cwt", sample_rate=sample_rate, **_sub_config("cwt", cwt, {}))
        ton_cfg = _sub_config("tonnetz", tonnetz, {"hop": base.hop})
        super().__init__(base, FRONTENDS.create("tonnetz", sample_rate=sample_rate, **ton_cfg))
