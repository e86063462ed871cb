"""Seed 004's pitch-shift augmentation: length kept, every frequency scaled by the factor."""
from __future__ import annotations

import math

import pytest
import torch

from training.data.augment import SEED_004_FACTORS, AugmentOptions, augment_pitch, pitch_shift
from training.data.base import ClipSet
from victims.registry import ConfigError

RATE = 16000


def sine(freq: float, n: int = 8000) -> torch.Tensor:
    return 0.5 * torch.sin(2 * math.pi * freq * torch.arange(n, dtype=torch.float64) / RATE)


def peak_hz(wave: torch.Tensor) -> float:
    spectrum = torch.fft.rfft(wave * torch.hann_window(wave.shape[-1], dtype=wave.dtype)).abs()
    return float(torch.fft.rfftfreq(wave.shape[-1], 1 / RATE)[spectrum.argmax()])


@pytest.mark.parametrize("factor", SEED_004_FACTORS)
def test_pitch_shift_keeps_length_and_scales_the_peak(factor: float) -> None:
    wave = sine(500.0).reshape(1, 1, -1)
    out = pitch_shift(wave, factor)
    assert out.shape == wave.shape
    valid = int(wave.shape[-1] / factor) if factor > 1 else wave.shape[-1]
    assert abs(peak_hz(out[0, 0, :valid]) - 500.0 * factor) <= 4.0


@pytest.mark.parametrize("factor", SEED_004_FACTORS)
def test_pitch_shift_equals_the_analytic_sine(factor: float) -> None:
    out = pitch_shift(sine(440.0), factor)
    n = int(8000 / max(factor, 1.0))
    middle = slice(200, n - 200)
    expected = sine(440.0 * factor)[middle]
    assert float((out[middle] - expected).abs().max()) < 5e-3
    if factor > 1:
        assert float(out[n + 50:].abs().max()) == 0.0  # zero-padded tail


def test_pitch_shift_is_batched_consistently() -> None:
    batch = torch.stack([sine(300.0), sine(700.0)]).unsqueeze(1).float()
    together = pitch_shift(batch, 1.15)
    alone = torch.cat([pitch_shift(batch[i:i + 1], 1.15) for i in range(2)])
    torch.testing.assert_close(together, alone)


def test_augment_pitch_keeps_label_group_and_fold() -> None:
    clips = ClipSet(torch.stack([sine(300.0), sine(600.0)]).unsqueeze(1).float(), torch.tensor([0, 1]),
                    torch.tensor([10, 11]), torch.tensor([2, 3]), ["a", "b"], RATE, ["x.wav", "y.wav"])
    out = augment_pitch(clips, AugmentOptions(pitch_factors=list(SEED_004_FACTORS)))
    assert len(out) == 10 and out.waves.shape[1:] == (1, 8000)
    assert out.labels.tolist() == [0, 1] * 5 and out.groups.tolist() == [10, 11] * 5 and out.folds.tolist() == [2, 3] * 5
    assert out.names[:4] == ["x.wav", "y.wav", "x.wav@pitch0.75", "y.wav@pitch0.75"]
    shifted = augment_pitch(clips, AugmentOptions(pitch_factors=[1.5], keep_original=False))
    assert len(shifted) == 2 and shifted.names == ["x.wav@pitch1.5", "y.wav@pitch1.5"]
    assert augment_pitch(clips, AugmentOptions()) is clips


def test_bad_factor_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"dataset.augment.pitch_factors must be numbers in \[0.25, 4\], got \[0\]"):
        AugmentOptions(pitch_factors=[0])
