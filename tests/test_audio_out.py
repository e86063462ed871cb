"""Adversarial WAV files: soundfile round trips, clipping, and the way back from a representation."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import Tensor, nn

from evaluation import audio_out as A
from evaluation.metrics import snr_db
from victims.frontends import FrontEnd
from victims.frontends.spectral import MelDb, StftDb
from victims.frontends.waveform import Waveform
from victims.registry import ConfigError
from victims.victim import Victim

SR, T = 8000, 2048


def _tone(batch: int = 1) -> Tensor:
    t = torch.arange(T) / SR
    freqs = torch.tensor([440.0, 1250.0])[:batch].view(-1, 1, 1)
    return 0.3 * torch.sin(2 * math.pi * freqs * t) + 0.05 * torch.randn(batch, 1, T)


def _victim(frontend: FrontEnd) -> Victim:
    victim = Victim(frontend, nn.Sequential(nn.Flatten(), nn.LazyLinear(3)), ["a", "b", "c"], T)
    victim.normalizer.fit([frontend(_tone(2))])
    return victim


def test_write_wav_round_trip_and_formats(tmp_path: Path) -> None:
    wave = _tone()[0, 0]
    path = A.write_wav(tmp_path / "sub" / "x.wav", wave, SR, subtype="FLOAT")
    back, rate = sf.read(path, dtype="float32")
    assert rate == SR and back.shape == (T,)
    np.testing.assert_array_equal(back, wave.numpy())
    back16, _ = sf.read(A.write_wav(tmp_path / "y.wav", wave.view(1, 1, T), SR), dtype="float64")
    assert sf.info(tmp_path / "y.wav").subtype == "PCM_16"
    np.testing.assert_allclose(back16, wave.double().numpy(), atol=1 / 32768)


def test_write_wav_clips_with_warning_and_rejects_bad_input(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="evaluation.audio_out"):
        path = A.write_wav(tmp_path / "c.wav", np.array([0.5, 1.5, -2.0, 0.0]), SR, subtype="FLOAT")
    assert "clipped 2 of 4 samples" in caplog.text
    np.testing.assert_array_equal(sf.read(path)[0], [0.5, 1.0, -1.0, 0.0])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="evaluation.audio_out"):
        A.write_wav(tmp_path / "ok.wav", np.array([0.5, -1.0]), SR)
    assert caplog.text == ""
    with pytest.raises(ValueError, match="NaN or infinite"):
        A.write_wav(tmp_path / "n.wav", np.array([0.1, math.nan]), SR)
    with pytest.raises(ValueError, match="must be"):
        A.write_wav(tmp_path / "s.wav", np.zeros((2, 8)), SR)
    with pytest.raises(ValueError, match="subtype"):
        A.write_wav(tmp_path / "s.wav", np.zeros(8), SR, subtype="MP3")


def test_write_adversarial_wavs_amplifies_perturbation(tmp_path: Path) -> None:
    clean = _tone()
    delta = 0.01 * torch.randn_like(clean)
    out = A.write_adversarial_wavs(tmp_path, "bim_a_0", clean, clean + delta, SR, subtype="FLOAT")
    assert out.gain == pytest.approx(0.5 / float(delta.abs().max()), rel=1e-6)
    assert out.perturbation.name == f"bim_a_0_perturbation_x{out.gain:.3g}.wav"
    assert out.snr_db == pytest.approx(float(snr_db(clean, clean + delta)[0]), rel=1e-5)
    orig, adv, pert = (sf.read(p, dtype="float64")[0] for p in (out.original, out.adversarial, out.perturbation))
    np.testing.assert_allclose(adv - orig, delta.flatten().numpy(), atol=1e-6)
    assert np.abs(pert).max() == pytest.approx(0.5, rel=1e-6)
    np.testing.assert_allclose(pert, out.gain * (adv - orig), atol=1e-5)
    same = A.write_adversarial_wavs(tmp_path, "zero", clean, clean, SR)
    assert same.gain == 1.0 and same.snr_db == math.inf
    with pytest.raises(ValueError, match="differ in length"):
        A.write_adversarial_wavs(tmp_path, "bad", clean, clean[..., :-1], SR)


def test_stft_representation_inverts_with_kept_phase() -> None:
    victim = _victim(StftDb(SR, n_fft=256, hop=64))
    wave = _tone()
    rep = victim.represent(wave)
    ref, same = A.to_waveforms(victim, wave, rep, "representation")
    assert torch.equal(ref, wave)
    assert float(snr_db(wave, same)[0]) >= 60.0
    # +20·log10(2) dB on every bin doubles every magnitude: with the phase kept, the clip doubles
    louder = victim.normalizer(victim.features(wave) + 20 * math.log10(2.0))
    _, doubled = A.to_waveforms(victim, wave, louder, "representation")
    assert float(snr_db(2 * wave, doubled)[0]) >= 50.0


@pytest.mark.gpu
def test_stft_inverse_on_cuda_matches_cpu() -> None:
    victim = _victim(StftDb(SR, n_fft=256, hop=64))
    wave = _tone()
    adv = victim.represent(wave) + 0.1 * torch.randn(1, 1, 129, T // 64 + 1)
    _, cpu = A.to_waveforms(victim, wave, adv, "representation")
    _, gpu = A.to_waveforms(victim.cuda(), wave, adv.cuda(), "representation")
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)


@pytest.mark.timeout(60)
def test_mel_representation_uses_griffin_lim_on_both_sides() -> None:
    """Oracle: librosa's Griffin-Lim (same zero initial phase, momentum, reflect padding) of the least-squares linear
    spectrogram of the clean clip's mel power; +20·log10(2) dB on every mel bin quadruples the power, so the
    adversarial side is exactly twice that (Griffin-Lim is positively homogeneous). Float64 keeps Griffin-Lim's
    amplified rounding (about 34 dB SNR in float32) far below the tolerance."""
    import librosa

    victim = _victim(MelDb(SR, n_fft=256, hop=64, n_mels=32)).double()
    wave = _tone().double()
    frontend = victim.frontend
    linear = np.sqrt(np.maximum(np.linalg.pinv(frontend.fb.double().numpy()) @ frontend.mel(wave)[0].numpy(), 0.0))
    oracle = torch.from_numpy(librosa.griffinlim(
        linear, n_iter=64, hop_length=frontend.hop, win_length=frontend.n_fft, n_fft=frontend.n_fft,
        window=frontend.window.double().numpy(), center=True, pad_mode="reflect", momentum=0.99, init=None,
        length=T)).view(1, 1, T)  # n_iter and momentum: victims.inverse.mel_db_griffinlim's defaults
    louder = victim.normalizer(victim.features(wave) + 20 * math.log10(2.0))
    ref, adv = A.to_waveforms(victim, wave, louder, "representation")
    assert ref.shape == adv.shape == wave.shape
    assert float(snr_db(oracle, ref)[0]) >= 100.0  # the reference is the clean clip through Griffin-Lim
    assert float(snr_db(2 * oracle, adv)[0]) >= 100.0  # the adversarial side inverts its own input
    same_ref, same = A.to_waveforms(victim, wave, victim.represent(wave), "representation")
    torch.testing.assert_close(same_ref, same, rtol=0, atol=1e-9)  # the clean representation: no difference


def test_waveform_domain_passes_through_and_unknown_inverse_fails() -> None:
    victim = _victim(Waveform(SR))
    wave, adv = _tone(), _tone()
    ref, out = A.to_waveforms(victim, wave, adv, "waveform")
    assert ref is wave and out is adv
    with pytest.raises(ConfigError, match="no waveform inverse for the Waveform representation"):
        A.to_waveforms(victim, wave, victim.represent(wave), "representation")
    assert A.why_inaudible(victim, "waveform") is None
    assert "has no inverse" in A.why_inaudible(_victim(StftDb(SR, n_fft=64, hop=64)), "representation")
