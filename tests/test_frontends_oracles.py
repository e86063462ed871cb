"""Front-ends against their reference implementations: librosa (STFT, mel, chroma, tonnetz),
PyWavelets (CWT) and the CWT's defining sum, with the tolerances stated per test."""
from __future__ import annotations

import math

import librosa
import numpy as np
import pytest
import pywt
import torch

from victims.frontends import FRONTENDS
from victims.frontends.tonnetz import chroma_filters

RATE = 22050


def chord(length: int, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """A C-major-ish chord with a moving partial and a little noise, float64."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / rate
    y = sum(a * np.sin(2 * np.pi * f * t + p) for a, f, p in ((0.3, 261.6, 0.0), (0.2, 329.6, 1.0), (0.2, 392.0, 2.0)))
    y = y + 0.1 * np.sin(2 * np.pi * (800 + 1500 * t) * t) + 0.02 * rng.standard_normal(length)
    return y * np.minimum(1.0, 10 * t)


def assert_db_close(out: np.ndarray, ref: np.ndarray, value: np.ndarray, amin: float, power: float) -> None:
    """Where librosa's value ``S ≥ amin``, ours (``log10(S + amin)``) and librosa's
    (``log10(max(S, amin))``) differ by exactly ``(20/power)·log10(1 + amin/S)``; allow 1e-4 dB more."""
    mask = value >= amin
    assert mask.mean() > 0.9
    allowed = (20 / power) * np.log10(1 + amin / value[mask]) + 1e-4
    assert np.all(np.abs(out - ref)[mask] <= allowed)


def ours(name: str, y: np.ndarray, rate: int = RATE, **kwargs) -> np.ndarray:
    fe = FRONTENDS.create(name, sample_rate=rate, **kwargs).double()
    return fe(torch.from_numpy(y).view(1, 1, -1))[0, 0].numpy()


@pytest.mark.parametrize("n_fft,hop", [(2048, 512), (512, 256)])
def test_stft_db_matches_librosa(n_fft: int, hop: int) -> None:
    """Within 1e-4 dB of librosa beyond the amin difference (see :func:`assert_db_close`)."""
    y = chord(11025)
    power = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop)) ** 2
    ref = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None)
    out = ours("stft_db", y, n_fft=n_fft, hop=hop, amin=1e-10)
    assert out.shape == ref.shape
    assert_db_close(out, ref, power, 1e-10, 2.0)


@pytest.mark.parametrize("kwargs,rate", [
    ({"n_fft": 2048, "hop": 512, "n_mels": 100, "fmin": 40.0}, 16000),  # seed 000
    ({"n_fft": 1024, "hop": 256, "n_mels": 40, "fmin": 100.0, "fmax": 6000.0, "htk": True, "norm": None}, 16000),
])
def test_mel_power_db_matches_librosa(kwargs: dict, rate: int) -> None:
    """Mel power dB within 1e-4 dB of librosa beyond the amin difference."""
    y = chord(8000, rate)
    mel = librosa.feature.melspectrogram(
        y=y, sr=rate, n_fft=kwargs["n_fft"], hop_length=kwargs["hop"], n_mels=kwargs["n_mels"],
        fmin=kwargs["fmin"], fmax=kwargs.get("fmax"), htk=kwargs.get("htk", False),
        norm=kwargs.get("norm", "slaney"), power=2.0)
    ref = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    out = ours("mel_db", y, rate, **kwargs)
    assert out.shape == ref.shape
    assert_db_close(out, ref, mel, 1e-10, 2.0)


def test_mel_seed003_magnitude_relative_to_max_matches_librosa() -> None:
    """Seed 003: magnitude mel, ``amplitude_to_db(ref=np.max)``, within 1e-4 dB of librosa beyond
    the amin difference (the maximum bin is far above amin, so the reference shifts agree)."""
    y = chord(22050)
    mel = librosa.feature.melspectrogram(y=y, sr=RATE, n_fft=512, hop_length=256, n_mels=64, power=1.0)
    ref = librosa.amplitude_to_db(mel, ref=np.max, amin=1e-5, top_db=None)
    out = ours("mel_db", y, n_fft=512, hop=256, n_mels=64, power=1.0, amin=1e-5, ref="max")
    assert out.shape == ref.shape == (64, 87)
    assert_db_close(out, ref, mel, 1e-5, 1.0)
    assert out.max() == 0.0


@pytest.mark.parametrize("rate,n_fft,tuning", [(22050, 2048, 0.0), (16000, 512, -0.3), (8000, 256, 0.25)])
def test_chroma_filters_match_librosa(rate: int, n_fft: int, tuning: float) -> None:
    ref = librosa.filters.chroma(sr=rate, n_fft=n_fft, tuning=tuning, dtype=np.float64)
    np.testing.assert_allclose(chroma_filters(rate, n_fft, tuning).numpy(), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-8), (torch.float32, 1e-4)])
def test_tonnetz_matches_librosa(dtype: torch.dtype, atol: float) -> None:
    """``librosa.feature.tonnetz`` of ``chroma_stft(tuning=0)``: within 1e-8 in float64, 1e-4 in
    float32, on frames whose chroma energy is ≥ 1e-3 (tonnetz values are in [-1, 1])."""
    y = chord(22050)
    chroma = librosa.feature.chroma_stft(y=y, sr=RATE, n_fft=2048, hop_length=512, tuning=0.0)
    ref = librosa.feature.tonnetz(y=None, sr=RATE, chroma=chroma)
    fe = FRONTENDS.create("tonnetz", sample_rate=RATE).to(dtype)
    out = fe(torch.from_numpy(y).to(dtype).view(1, 1, -1))[0, 0].double().numpy()
    power = np.abs(librosa.stft(y, n_fft=2048, hop_length=512)) ** 2
    mask = librosa.filters.chroma(sr=RATE, n_fft=2048).dot(power).sum(axis=0) >= 1e-3
    assert out.shape == ref.shape == (6, 44) and mask.mean() > 0.9
    assert np.abs(out - ref)[:, mask].max() < atol


def test_cwt_matches_its_defining_sum() -> None:
    """``|W(s, t)| = |s^(-1/2) Σ_n x[n] ψ*((n − t)/s)|`` for cmor1.5-1.0, every scale, at frame
    positions; relative error ≤ 1e-6 of each scale's peak."""
    y = chord(4000, 8000)
    fe = FRONTENDS.create("cwt", sample_rate=8000, n_scales=6, fmin=60.0, fmax=2000.0, hop=250).double()
    out = 10 ** (fe(torch.from_numpy(y).view(1, 1, -1))[0, 0].numpy() / 20)
    n = np.arange(y.size)
    for row, s in enumerate(fe.scales):
        for col, t in enumerate(range(0, y.size + 1, 250)):
            u = (n - t) / s
            psi = (np.pi * 1.5) ** -0.5 * np.exp(-u ** 2 / 1.5) * np.exp(2j * np.pi * u)
            ref = abs(np.sum(y * np.conj(psi))) / math.sqrt(s)
            assert abs(out[row, col] - ref) <= 1e-6 * math.sqrt(s) + 1e-6 * ref


def test_cwt_matches_pywavelets() -> None:
    """``pywt.cwt(..., 'cmor1.5-1.0', method='fft', precision=18)`` magnitudes at the frame positions:
    within 3 % of each scale's peak for scales ≥ 16 samples (pywt integrates the wavelet on a grid
    and differentiates the convolution, which attenuates and shifts shorter scales by up to ~0.5
    sample); frequencies equal ``pywt.scale2frequency``."""
    y = chord(11025)
    fe = FRONTENDS.create("cwt", sample_rate=RATE, n_scales=10, fmin=50.0, fmax=1300.0, hop=128).double()
    out = 10 ** (fe(torch.from_numpy(y).view(1, 1, -1))[0, 0].numpy() / 20)
    scales = np.array(fe.scales)
    assert scales.min() >= 16
    coef, freqs = pywt.cwt(y, scales, "cmor1.5-1.0", method="fft", sampling_period=1 / RATE, precision=18)
    ref = np.abs(coef)[:, ::128]
    np.testing.assert_allclose(freqs, fe.frequencies.numpy(), rtol=1e-5)
    err = np.abs(out[:, : ref.shape[1]] - ref) / ref.max(axis=1, keepdims=True)
    assert err.max() < 0.03
