"""Perceptual quality scores of waveform pairs (evaluation/quality.py) against pesq and pystoi as oracles."""
from __future__ import annotations

import importlib.util
import math
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from attacks.psychoacoustic import perceptual_distance
from evaluation.quality import NotApplicable, batch_quality, clip_quality, pesq_score, stoi_score
from tests.conftest import needs
from victims.registry import ConfigError

HAS_PESQ = needs("pesq (the audio-quality extra)", importlib.util.find_spec("pesq") is not None)
HAS_STOI = needs("pystoi (the audio-quality extra)", importlib.util.find_spec("pystoi") is not None)


def speech(fsdd_root, name: str = "3_jackson_5.wav") -> torch.Tensor:
    wave, rate = sf.read(fsdd_root / "recordings" / name)
    assert rate == 8000
    return torch.from_numpy(wave)


def white_noise_at(clean: torch.Tensor, snr: float, seed: int = 0) -> torch.Tensor:
    noise = torch.from_numpy(np.random.default_rng(seed).standard_normal(clean.shape[-1]))
    return noise * clean.norm() / noise.norm() * 10 ** (-snr / 20)


@HAS_PESQ
@HAS_STOI
@pytest.mark.timeout(60)
def test_identical_speech_gets_the_packages_maximum(fsdd_root) -> None:
    import pesq
    import pystoi

    clean = speech(fsdd_root)
    narrow = clip_quality(clean, clean.clone(), 8000, n_fft=256, hop=64)
    assert narrow.pesq == pesq.pesq(8000, clean.numpy(), clean.numpy(), "nb")
    assert narrow.pesq > 4.5  # P.862.1's MOS-LQO ceiling, 4.549
    assert narrow.stoi == pystoi.stoi(clean.numpy(), clean.numpy(), 8000)
    assert narrow.stoi == pytest.approx(1.0, abs=1e-6)
    assert narrow.snr_db == math.inf and narrow.perceptual_db == -math.inf and narrow.not_applicable == {}
    wide_clip = torch.from_numpy(resample_poly(clean.numpy(), 2, 1))
    wide = clip_quality(wide_clip, wide_clip.clone(), 16000, n_fft=512, hop=128)
    assert wide.pesq == pesq.pesq(16000, wide_clip.numpy(), wide_clip.numpy(), "wb")
    assert wide.pesq > 4.6  # P.862.2's ceiling, 4.644
    assert wide.stoi == pytest.approx(1.0, abs=1e-6)


@HAS_PESQ
@HAS_STOI
@pytest.mark.timeout(60)
def test_white_noise_at_0_db_gets_what_the_packages_give(fsdd_root) -> None:
    import pesq
    import pystoi

    clean = speech(fsdd_root)
    noisy = clean + white_noise_at(clean, 0.0)
    score = clip_quality(clean, noisy, 8000, n_fft=256, hop=64)
    assert score.pesq == pesq.pesq(8000, clean.numpy(), noisy.numpy(), "nb")
    assert score.stoi == pystoi.stoi(clean.numpy(), noisy.numpy(), 8000)
    assert score.pesq < 2.5 and score.stoi < 0.8  # 0 dB white noise is a heavy degradation for both
    assert score.snr_db == pytest.approx(0.0, abs=1e-9)
    expected = perceptual_distance(clean[None], noisy[None], 8000, 256, 64).item()
    assert score.perceptual_db == pytest.approx(expected) and score.perceptual_db > 0


@HAS_PESQ
@HAS_STOI
@pytest.mark.timeout(60)
def test_a_batch_scores_each_pair_as_alone(fsdd_root) -> None:
    clips = [speech(fsdd_root, name)[:3600] for name in ("3_jackson_5.wav", "0_jackson_0.wav")]
    clean = torch.stack(clips)
    noisy = clean + torch.stack([white_noise_at(c, snr, seed) for seed, (c, snr) in enumerate(zip(clips, (20, 5)))])
    batched = batch_quality(clean.unsqueeze(1), noisy.unsqueeze(1), 8000, n_fft=256, hop=64)
    for i in range(2):
        alone = clip_quality(clean[i], noisy[i], 8000, n_fft=256, hop=64)
        assert alone.not_applicable == batched[i].not_applicable == {}
        for name in ("snr_db", "perceptual_db", "pesq", "stoi"):
            assert getattr(batched[i], name) == pytest.approx(getattr(alone, name), rel=1e-9)
    assert batched[0].snr_db == pytest.approx(20.0) and batched[1].snr_db == pytest.approx(5.0)
    assert batched[0].pesq > batched[1].pesq


@HAS_STOI
@pytest.mark.timeout(60)
def test_pesq_is_not_applicable_at_other_rates_and_says_why(fsdd_root) -> None:
    clean = torch.from_numpy(resample_poly(speech(fsdd_root).numpy(), 441, 80))
    score = clip_quality(clean, clean + white_noise_at(clean, 10.0), 44100, n_fft=1024, hop=512)
    assert score.pesq is None
    assert score.not_applicable == {"pesq": "PESQ is defined at 8 kHz (narrow band) and 16 kHz (wide band), "
                                            "not 44100 Hz"}
    assert 0 < score.stoi < 1
    with pytest.raises(NotApplicable, match="not 22050 Hz"):
        pesq_score(clean.numpy(), clean.numpy(), 22050)


@HAS_PESQ
@HAS_STOI
@pytest.mark.timeout(60)
def test_short_and_silent_clips_are_not_applicable_with_a_reason(fsdd_root) -> None:
    short = speech(fsdd_root)[:1200]  # 0.15 s: under PESQ's 1/4 s and STOI's 30 frames
    score = clip_quality(short, short + white_noise_at(short, 10.0), 8000, n_fft=256, hop=64)
    assert score.pesq is None and score.stoi is None
    assert "1/4 of a second" in score.not_applicable["pesq"]
    assert "30 non-silent frames" in score.not_applicable["stoi"]
    silent = torch.zeros(4000, dtype=torch.float64)
    score = clip_quality(silent, silent + 1e-3 * torch.randn(4000, dtype=torch.float64), 8000, n_fft=256, hop=64)
    assert score.not_applicable == {"pesq": "the reference clip is silent", "stoi": "the reference clip is silent"}
    assert score.perceptual_db > 0  # silence masks nothing
    for reason in score.not_applicable.values():
        assert "\n" not in reason
    with pytest.raises(NotApplicable, match="silent"):
        stoi_score(silent.numpy(), silent.numpy(), 8000)


@pytest.mark.timeout(30)
def test_a_missing_package_is_not_applicable_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pesq", None)  # import pesq raises ImportError
    monkeypatch.setitem(sys.modules, "pystoi", None)
    clean = torch.sin(torch.arange(4000, dtype=torch.float64) * 0.3)
    score = clip_quality(clean, clean * 0.9, 8000, n_fft=256, hop=64)
    assert score.pesq is None and score.stoi is None
    assert "advaudio[audio-quality]" in score.not_applicable["pesq"]
    assert "advaudio[audio-quality]" in score.not_applicable["stoi"]
    assert score.snr_db == pytest.approx(20.0)  # ‖x‖/‖0.1 x‖ by hand


@pytest.mark.timeout(30)
def test_bad_input_is_a_one_line_error() -> None:
    clean = torch.zeros(2, 4000)
    with pytest.raises(ValueError, match="differ in shape"):
        batch_quality(clean, torch.zeros(2, 3999), 8000)
    bad = clean.clone()
    bad[1, 7] = math.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        batch_quality(clean, bad, 8000, n_fft=256, hop=64)
    with pytest.raises(ConfigError, match="shorter than one STFT frame"):
        batch_quality(torch.zeros(1, 1000), torch.zeros(1, 1000), 8000)  # default n_fft 2048
