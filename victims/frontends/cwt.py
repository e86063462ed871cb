"""Complex-Morlet CWT scalogram in dB (seed 004's "DWT" representation), by FFT convolution.

Seed 004 (Sections IV–V) turns audio into the log-scaled magnitude of a complex-Morlet wavelet
transform. The wavelet is PyWavelets' ``cmorB-C``::

    ψ(t) = (π B)^(-1/2) · exp(-t² / B) · exp(j 2π C t),     Ψ̂(f) = exp(-π² B (f - C)²)

and the coefficient at scale ``s`` (frequency ``C · sr / s``) is
``W(s, t) = s^(-1/2) Σ_n x[n] ψ*((n - t) / s)``, i.e. the filter ``√s · Ψ̂(s f)`` in the
frequency domain (what ``pywt.cwt(..., method='fft')`` approximates by integrating the wavelet).

Only the magnitude at frame positions ``t = k · hop`` is kept, computed without ever forming the
full-rate transform: with an FFT length ``N = K · hop``, sampling ``W`` every ``hop`` samples is
the same as summing the filtered spectrum's bins modulo ``K`` and taking a ``K``-point inverse FFT.
Each filter is non-zero on a short band of bins (taps below 1e-6 of its peak are dropped), so
the work is one real FFT of the clip, a gather of ~``Σ_s band_s`` bins, a small matrix product and
``n_scales`` tiny inverse FFTs — no Python loop over scales, batched, on any device.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from victims.frontends.base import FRONTENDS, FrontEnd, check_waveform
from victims.frontends.common import db_bound, full_precision, full_precision_forward, to_db
from victims.registry import ConfigError

CUTOFF = 1e-6
MAX_PLANS = 8  # cached (clip length, device, dtype) plans before the cache is reset


def morlet_response(freqs: Tensor, scales: Tensor, bandwidth: float, center: float) -> Tensor:
    """``√s · exp(-π² B (s f - C)²)`` for ``freqs`` in cycles/sample (``freqs`` and ``scales``
    broadcast against each other)."""
    return scales.sqrt() * torch.exp(-(math.pi ** 2) * bandwidth * (scales * freqs - center) ** 2)


def _fast_length(n: int, hop: int) -> int:
    """Smallest multiple of ``hop`` that is ``≥ n`` and whose factors are all 2, 3, 5 or 7."""
    m = -(-n // hop)
    while True:
        k = m * hop
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m * hop
        m += 1


@FRONTENDS.register("cwt")
class Cwt(FrontEnd):
    """``10·log10(|W(s, k·hop)|² + amin)`` for log-spaced wavelet frequencies ``fmin … fmax``.

    Shapes ``(B, 1, T) → (B, 1, n_scales, T // hop + 1)``; rows go from ``fmin`` up to ``fmax``;
    frame ``k`` is centred on sample ``k · hop`` (as a centred STFT's).

    Args:
        sample_rate: waveform rate in Hz.
        n_scales: number of wavelet scales (rows).
        fmin: centre frequency of the lowest row in Hz.
        fmax: centre frequency of the highest row in Hz (``None``: ``sample_rate / 4``, where the
            default wavelet's band still ends below Nyquist).
        bandwidth: ``B`` of ``cmorB-C`` (larger = longer wavelet, narrower band).
        center: ``C`` of ``cmorB-C`` (cycles per scale unit).
        hop: frame spacing in samples.
        amin: added to ``|W|²`` before the log.
    """

    def __init__(self, sample_rate: int, n_scales: int = 64, fmin: float = 50.0,
                 fmax: float | None = None, bandwidth: float = 1.5, center: float = 1.0,
                 hop: int = 512, amin: float = 1e-10) -> None:
        super().__init__(sample_rate)
        fmax = sample_rate / 4 if fmax is None else float(fmax)
        if not 0 < fmin < fmax < sample_rate / 2:
            raise ConfigError(f"cwt needs 0 < fmin < fmax < {sample_rate / 2}; got {fmin}, {fmax}")
        if n_scales < 1 or hop < 1 or bandwidth <= 0 or center <= 0 or amin <= 0:
            raise ConfigError("cwt needs n_scales >= 1, hop >= 1 and positive bandwidth, center, amin; "
                              f"got {n_scales}, {hop}, {bandwidth}, {center}, {amin}")
        self.n_scales, self.hop, self.amin = int(n_scales), int(hop), float(amin)
        self.bandwidth, self.center = float(bandwidth), float(center)
        freqs = torch.logspace(math.log10(fmin), math.log10(fmax), self.n_scales, dtype=torch.float64)
        self.register_buffer("frequencies", freqs)
        self.scales = (self.center * sample_rate / freqs).tolist()
        # |ψ(t/s)| falls below CUTOFF of its peak beyond ``half_support · s`` samples.
        self.half_support = math.sqrt(self.bandwidth * math.log(1 / CUTOFF))
        # Band of Ψ̂(s f) above CUTOFF: |s f - C| <= reach.
        self.reach = math.sqrt(math.log(1 / CUTOFF) / (math.pi ** 2 * self.bandwidth))
        self._plans: dict[tuple, tuple[Tensor, Tensor, Tensor, int]] = {}
        self._bounds: tuple[Tensor, Tensor] | None = None

    @property
    def n_bands(self) -> int:
        return self.n_scales

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop + 1

    def fft_length(self, num_samples: int) -> int:
        """FFT length: a multiple of ``hop`` leaving room for the longest wavelet (no wrap-around)."""
        return _fast_length(num_samples + math.ceil(self.half_support * max(self.scales)) + 1, self.hop)

    def _plan(self, num_samples: int, device: torch.device, dtype: torch.dtype
              ) -> tuple[Tensor, Tensor, Tensor, int]:
        """Bin indices ``(chunks, K)``, filter weights ``(chunks, K)``, chunk→scale matrix
        ``(n_scales, chunks)`` and the FFT length, cached per clip length, device and dtype."""
        key = (num_samples, device, dtype)
        if key not in self._plans:
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
            n = self.fft_length(num_samples)
            k = n // self.hop
            scales = torch.tensor(self.scales, dtype=torch.float64)
            lo = torch.ceil(n * (self.center - self.reach) / scales).clamp(0, n // 2).long()
            hi = torch.floor(n * (self.center + self.reach) / scales).clamp(0, n // 2).long()
            chunks = torch.div(hi - lo + k, k, rounding_mode="floor").clamp_min(1)
            owner = torch.repeat_interleave(torch.arange(self.n_scales), chunks)
            first = torch.cumsum(chunks, 0) - chunks
            within = torch.arange(owner.numel()) - first[owner]
            idx = lo[owner, None] + within[:, None] * k + torch.arange(k)
            valid = idx <= hi[owner, None]
            idx = idx.clamp_max(n // 2)
            resp = morlet_response(idx.double() / n, scales[owner, None], self.bandwidth, self.center)
            weight = resp * valid / self.hop
            gather = torch.zeros(self.n_scales, owner.numel(), dtype=torch.float64)
            gather[owner, torch.arange(owner.numel())] = 1.0
            self._plans[key] = (idx.to(device), weight.to(device, dtype), gather.to(device, dtype), n)
        return self._plans[key]

    def coefficients(self, wave: Tensor) -> Tensor:
        """Complex ``W(s, k·hop)``, shaped ``(B, n_scales, frames)``, times a unit-modulus phase
        ramp over frames (from each band's starting bin; magnitudes are exact)."""
        check_waveform(wave)
        x = full_precision(wave).squeeze(1)
        idx, weight, gather, n = self._plan(x.shape[-1], x.device, x.dtype)
        spec = torch.fft.rfft(x, n=n)
        banded = torch.view_as_real(spec[:, idx] * weight)  # (B, chunks, K, 2)
        folded = torch.matmul(gather, banded.flatten(2)).view(x.shape[0], self.n_scales, -1, 2)
        coef = torch.fft.ifft(torch.view_as_complex(folded.contiguous()), dim=-1)
        return coef[..., : self.num_frames(x.shape[-1])]

    @full_precision_forward
    def forward(self, wave: Tensor) -> Tensor:
        coef = self.coefficients(wave)
        return to_db(coef.real.square() + coef.imag.square(), self.amin).unsqueeze(1)

    def output_bounds(self) -> tuple[Tensor, Tensor]:
        """Per scale, ``|W| ≤ ‖h_s‖₁`` for inputs in ``[-1, 1]``, with the filter's impulse response
        ``h_s`` taken on an FFT grid four times the longest wavelet (real inputs reach about
        ``2/π`` of it)."""
        if self._bounds is None:
            n = 1 << math.ceil(math.log2(4 * self.half_support * max(self.scales) + 16))
            freqs = torch.arange(n // 2 + 1, dtype=torch.float64) / n
            scales = torch.tensor(self.scales, dtype=torch.float64).unsqueeze(-1)
            full = torch.zeros(self.n_scales, n, dtype=torch.complex128)
            full[:, : n // 2 + 1] = morlet_response(freqs, scales, self.bandwidth, self.center)
            l1 = torch.fft.ifft(full, dim=-1).abs().sum(dim=-1)
            top = to_db(l1.square(), self.amin)
            self._bounds = torch.full_like(top, db_bound(0.0, self.amin)).float(), top.float()
        return self._bounds[0].clone(), self._bounds[1].clone()
