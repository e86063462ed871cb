"""Psychoacoustic masking threshold of a clip and the perceptual distance of a perturbation.

Qin, Carlini, Cottrell, Goodfellow & Raffel 2019, "Imperceptible, robust and targeted adversarial examples for
automatic speech recognition", Sec. 4: the MPEG-1 psychoacoustic model 1 threshold θ_x(k) of every STFT frame,
simplified as the paper does (every masker tonal) and in the order of ART's ``PsychoacousticMasker`` (filter on
the absolute threshold of hearing, then the 0.5-Bark decimation):

1. PSD of a frame: ``p_x(k) = 10·log10 |√(8/3)·s_x(k) / N|²`` (Hann window of N = ``n_fft`` points, no
   centring), floored at −200 dB as ART does (``log10 0`` is never taken), normalised so the clip's loudest bin
   is 96 dB SPL: ``p̄_x(k) = 96 − max_{t,k} p_x + p_x(k)`` (the maximum over the whole clip, as Qin's code and ART).
2. Maskers: the strict local maxima of ``p̄_x``, each smoothed with its two neighbours
   (``P_TM = 10·log10 Σ_{k-1..k+1} 10^{p̄_x/10}``), kept if above the absolute threshold of hearing
   ``ATH(f) = 3.64 f^-0.8 − 6.5 e^{-0.6 (f−3.3)²} + 10^-3 f⁴ − 12`` (f in kHz; −∞ outside 20 Hz–20 kHz),
   then, scanning up in frequency, of two maskers less than 0.5 Bark apart the weaker is dropped.
   ART compares ``bark[i]`` with ``i`` the masker's ordinal instead of its bin; this module compares the
   maskers' own Bark values, as Qin's code and ISO 11172-3 model 1 do.
3. Each masker spreads with the two-slope function (27 dB/Bark below it, ``−27 + 0.37·max(P_TM − 40, 0)``
   dB/Bark above) shifted by ``−6.025 − 0.275·z``; the global threshold is the power sum of all spreads and
   the ATH: ``θ_x(k) = 10·log10(Σ_j 10^{T_j(k)/10} + 10^{ATH(k)/10})`` (summed with ``logsumexp``, which
   neither overflows nor underflows in float32).

The perceptual distance of a perturbation δ is Qin's constraint ``p̄_δ(k) ≤ θ_x(k)`` (Sec. 4, with
``p̄_δ(k) = 96 − max_{t,k} p_x + p_δ(k)``: δ's PSD on the clip's scale) turned into one number:

    D(x, δ) = max over frames t and audible bins k (20 Hz ≤ f_k ≤ 20 kHz) of p̄_δ(t, k) − θ_x(t, k)   [dB]

so ``D ≤ 0`` exactly when δ is masked in every frame and bin, and ``D(x, a·δ) = D(x, δ) + 20·log10 a``. A bin
where δ has no power contributes −∞ (a zero perturbation has ``D = −∞``); bins outside the ATH's domain are
inaudible and left out. A silent clip has the floor, −200 dB, as its loudest bin, so its threshold is the ATH
on a scale 296 dB above δ's own: any perturbation louder than about 10^-11 (full scale 1) is unmasked.
D is differentiable in δ (θ_x is a constant of the clip) on CPU and GPU, batched over clips.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from victims.registry import ConfigError

GAIN = 8.0 / 3.0
"""Power gain of the Hann window (Qin et al.'s √(8/3) on the magnitude)."""
SPL_REFERENCE_DB = 96.0
"""The clip's loudest bin is taken as 96 dB SPL (16-bit full scale)."""
FLOOR_DB = -200.0
"""A clip's bins below this (``log10 0`` included) are read as this, as ART does."""
DECIMATION_BARK = 0.5
_DB = 10.0 / math.log(10.0)  # 10·log10(p) = _DB·ln(p)
_CHUNK_ELEMENTS = 1 << 23  # frames × maskers × bins spread at once: bounds the memory of the masker spreads


@dataclass(frozen=True)
class Masking:
    """The masking threshold of a batch of clips.

    Attributes:
        threshold: ``(B, frames, bins)`` θ_x in dB on the clip's 96 dB scale.
        reference: ``(B,)`` the clip's loudest bin in dB before normalisation (max_{t,k} p_x).
    """

    threshold: Tensor
    reference: Tensor


class PsychoacousticModel:
    """MPEG-1 model 1 masking thresholds and perceptual distances (Qin et al. 2019, Sec. 4) at one STFT setting.

    Args:
        sample_rate: Hz of the waveforms.
        n_fft: window and FFT length N (even); Qin et al. use 2048 at 16 kHz.
        hop: samples between frames; Qin et al. use 512.

    Raises:
        ConfigError: a non-positive rate, an odd or tiny ``n_fft``, or a hop outside ``1..n_fft``.
    """

    def __init__(self, sample_rate: int, n_fft: int = 2048, hop: int = 512) -> None:
        if sample_rate <= 0:
            raise ConfigError(f"sample_rate must be positive, got {sample_rate}")
        if n_fft < 8 or n_fft % 2:
            raise ConfigError(f"n_fft must be even and >= 8, got {n_fft}")
        if not 0 < hop <= n_fft:
            raise ConfigError(f"hop must be in 1..n_fft={n_fft}, got {hop}")
        self.sample_rate, self.n_fft, self.hop = sample_rate, n_fft, hop
        freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
        self._bark = 13 * torch.atan(0.00076 * freqs) + 3.5 * torch.atan((freqs / 7500.0).square())
        self._audible = (freqs >= 20) & (freqs <= 20000)
        khz = freqs * 1e-3
        ath = 3.64 * khz.pow(-0.8) - 6.5 * torch.exp(-0.6 * (khz - 3.3).square()) + 1e-3 * khz.pow(4) - 12
        self._ath = torch.where(self._audible, ath, -math.inf)

    def frames(self, length: int) -> int:
        """Number of STFT frames of a clip of ``length`` samples (no centring)."""
        return 1 + (length - self.n_fft) // self.hop

    def power(self, wave: Tensor) -> Tensor:
        """``|√(8/3)·STFT / N|²`` of ``(B, T)`` or ``(B, 1, T)`` waveforms as ``(B, frames, bins)``; differentiable.

        Raises:
            ConfigError: a clip shorter than one frame of ``n_fft`` samples.
        """
        wave = self._batch(wave)
        window = torch.hann_window(self.n_fft, periodic=True, dtype=wave.dtype, device=wave.device)
        spec = torch.stft(wave, self.n_fft, hop_length=self.hop, win_length=self.n_fft, window=window,
                          center=False, return_complex=True)
        return torch.view_as_real(spec).square().sum(-1).transpose(1, 2) * (GAIN / self.n_fft ** 2)

    def masking(self, clean: Tensor) -> Masking:
        """θ_x of every frame of ``(B, T)`` or ``(B, 1, T)`` clips (a constant: computed without gradient).

        The maskers are found in float64 whatever the clips' dtype: a float32 sum could tip a near tie (a
        peak within rounding of its neighbour or of the ATH) and move a frame's threshold by a dB.
        """
        with torch.no_grad():
            psd = (_DB * self.power(clean).double().log()).clamp(min=FLOOR_DB)
            reference = psd.amax(dim=(1, 2))
            normalised = SPL_REFERENCE_DB - reference.view(-1, 1, 1) + psd
            threshold = self.threshold(normalised.flatten(0, 1)).view_as(normalised)
        return Masking(threshold.to(clean.dtype), reference.to(clean.dtype))

    def threshold(self, psd: Tensor) -> Tensor:
        """Global masking threshold θ (dB) of ``(R, bins)`` frames of a normalised PSD ``p̄`` (dB)."""
        bark, ath = self._bark.to(psd), self._ath.to(psd)
        levels, bins, kept = self._maskers(psd, ath)
        rows = []
        step = max(1, _CHUNK_ELEMENTS // max(1, levels.shape[1] * psd.shape[1]))
        for start in range(0, psd.shape[0], step):
            part = slice(start, start + step)
            rows.append(self._spread_sum(levels[part], bins[part], kept[part], bark, ath))
        return torch.cat(rows) if rows else psd.clone()

    def excess(self, delta: Tensor, masking: Masking) -> Tensor:
        """``p̄_δ − θ_x`` in dB, ``(B, frames, bins)``: −∞ where δ has no power and in inaudible bins."""
        power = self.power(delta)
        if power.shape != masking.threshold.shape:
            raise ValueError(f"perturbation frames {tuple(power.shape)} do not match the clip's "
                             f"{tuple(masking.threshold.shape)}")
        level = torch.where(power > 0, _DB * power.clamp(min=torch.finfo(power.dtype).tiny).log(), -math.inf)
        normalised = SPL_REFERENCE_DB - masking.reference.to(level).view(-1, 1, 1) + level
        excess = normalised - masking.threshold.to(level)
        return torch.where(self._audible.to(level.device), excess, -math.inf)

    def distance(self, delta: Tensor, masking: Masking) -> Tensor:
        """Perceptual distance ``D(x, δ) = max_{t,k} p̄_δ − θ_x`` (dB, ``(B,)``; ≤ 0 means masked)."""
        return self.excess(delta, masking).amax(dim=(1, 2))

    def _batch(self, wave: Tensor) -> Tensor:
        if wave.dim() == 3 and wave.shape[1] == 1:
            wave = wave.squeeze(1)
        if wave.dim() != 2:
            raise ValueError(f"waveforms must be (B, T) or (B, 1, T), got {tuple(wave.shape)}")
        if wave.shape[-1] < self.n_fft:
            raise ConfigError(f"a clip of {wave.shape[-1]} samples is shorter than one STFT frame "
                              f"(n_fft={self.n_fft}); use a smaller n_fft or longer clips")
        return wave

    def _maskers(self, psd: Tensor, ath: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Tonal maskers of each row, packed left: smoothed levels, bins and a keep mask, each ``(R, M)``.
        Bark distances are compared in float64 whatever the PSD's dtype, so 0.5 Bark ties fall as in ART."""
        n_bins = psd.shape[1]
        mid = psd[:, 1:-1]
        peak = (mid > psd[:, :-2]) & (mid > psd[:, 2:])
        smoothed = _DB * torch.logsumexp(torch.stack([psd[:, :-2], mid, psd[:, 2:]]) / _DB, dim=0)
        audible_peak = peak & (smoothed > ath[1:-1])
        bins, present = _pack(audible_peak, torch.arange(1, n_bins - 1, device=psd.device))
        levels = smoothed.gather(1, bins - 1)
        kept = _decimate(levels, self._bark.to(psd.device)[bins], present)
        slots, kept = _pack(kept, torch.arange(kept.shape[1], device=psd.device))  # spread only the survivors
        return levels.gather(1, slots), bins.gather(1, slots), kept

    def _spread_sum(self, levels: Tensor, bins: Tensor, kept: Tensor, bark: Tensor, ath: Tensor) -> Tensor:
        z = bark[bins]
        peak = (levels - 6.025 - 0.275 * z).masked_fill(~kept, -math.inf).unsqueeze(-1)
        upper = (-27 + 0.37 * (levels - 40).clamp(min=0)).unsqueeze(-1)
        dz = bark - z.unsqueeze(-1)
        individual = peak + torch.where(dz <= 0, 27.0, upper) * dz
        return _DB * torch.logaddexp(torch.logsumexp(individual / _DB, dim=1), ath / _DB)


def _pack(mask: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """``values`` (``(n,)``, increasing) where ``mask`` (``(R, n)``) holds, packed left in order and cut to the
    longest row, ``(R, M)``; the padding repeats the last value and the second tensor marks the real entries."""
    n = values.shape[0]
    count = int(mask.sum(dim=1).max()) if mask.numel() else 0
    index = torch.where(mask, torch.arange(n, device=mask.device), n).sort(dim=1).values[:, :count]
    return values[index.clamp(max=n - 1)], index < n


def _decimate(levels: Tensor, bark: Tensor, present: Tensor) -> Tensor:
    """Keep mask of ISO 11172-3 model 1's 0.5-Bark decimation: scanning up in frequency, of the last kept
    masker and the next one, the weaker (the later on a tie) goes when they are under 0.5 Bark apart."""
    kept = present.clone()
    if levels.shape[1] == 0:
        return kept
    rows = torch.arange(levels.shape[0], device=levels.device)
    last = torch.zeros(levels.shape[0], dtype=torch.long, device=levels.device)
    for j in range(1, levels.shape[1]):
        here = present[:, j]
        close = here & (bark[:, j] - bark[rows, last] < DECIMATION_BARK)
        drop_last = close & (levels[rows, last] < levels[:, j])
        kept[rows[drop_last], last[drop_last]] = False
        kept[:, j] &= ~(close & ~drop_last)
        last = torch.where(here & (~close | drop_last), j, last)
    return kept


def perceptual_distance(clean: Tensor, adversarial: Tensor, sample_rate: int, n_fft: int = 2048,
                        hop: int = 512) -> Tensor:
    """``D(x, x' − x)`` in dB per clip (see the module docstring); differentiable in ``adversarial``."""
    model = PsychoacousticModel(sample_rate, n_fft, hop)
    return model.distance(adversarial - clean, model.masking(clean))
