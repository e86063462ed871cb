"""Pieces shared by the spectral front-ends: full-precision guard, centred STFT power, dB."""
from __future__ import annotations

import functools
import math
from typing import Callable, TypeVar

import torch
from torch import Tensor

F = TypeVar("F", bound=Callable[..., Tensor])


def full_precision(wave: Tensor) -> Tensor:
    """``wave`` as float32 (or float64 if it already is): half precision overflows dB of power."""
    return wave if wave.dtype in (torch.float32, torch.float64) else wave.float()


def full_precision_forward(forward: F) -> F:
    """Run a front-end's ``forward(wave)`` with autocast off and a float32/float64 waveform.

    Mixed-precision training would otherwise run the filter-bank products in float16, where a
    full-scale power (up to ``(Σ w)² ≈ 10⁶``) overflows; the output stays float32 and the
    backbone after it still autocasts.
    """

    @functools.wraps(forward)
    def wrapper(self: torch.nn.Module, wave: Tensor) -> Tensor:
        with torch.autocast(device_type=wave.device.type, enabled=False):
            return forward(self, full_precision(wave))

    return wrapper  # type: ignore[return-value]


def stft_complex(wave: Tensor, window: Tensor, n_fft: int, hop: int) -> Tensor:
    """Centred STFT with zero padding (librosa ≥ 0.10's ``pad_mode='constant'``).

    Args:
        wave: ``(B, 1, T)`` waveform.
        window: ``(n_fft,)`` analysis window.
        n_fft: FFT size (= window length).
        hop: hop length in samples.

    Returns:
        ``(B, n_fft // 2 + 1, T // hop + 1)`` complex spectrum.
    """
    x = full_precision(wave).squeeze(1)
    return torch.stft(x, n_fft, hop, window=window.to(x.dtype), center=True, pad_mode="constant",
                      return_complex=True)


def stft_power(wave: Tensor, window: Tensor, n_fft: int, hop: int) -> Tensor:
    """``|STFT|²`` as ``re² + im²`` (no ``abs``, so the gradient is defined at zero)."""
    spec = stft_complex(wave, window, n_fft, hop)
    return spec.real.square() + spec.imag.square()


def to_db(value: Tensor, amin: float, power: float = 2.0) -> Tensor:
    """``(20 / power) · log10(value + amin)``: dB of a power (power 2) or a magnitude (power 1).

    ``amin`` is added rather than used as a floor (librosa's ``maximum(amin, S)``), so no input
    ever gets a zero gradient; the two agree to within ``10·log10(1 + amin/S)`` dB.
    """
    return (20.0 / power) * torch.log10(value + amin)


def db_bound(value: float, amin: float, power: float = 2.0) -> float:
    """The scalar :func:`to_db` of ``value``, for output bounds."""
    return (20.0 / power) * math.log10(value + amin)


def db_to_value(db: Tensor, amin: float, power: float = 2.0) -> Tensor:
    """Inverse of :func:`to_db`, floored at zero (a perturbed dB value may fall below the floor)."""
    return (torch.pow(10.0, db * (power / 20.0)) - amin).clamp_min(0.0)

