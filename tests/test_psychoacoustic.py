"""Psychoacoustic masking threshold and perceptual distance (attacks/psychoacoustic.py).

Oracle: ART's ``PsychoacousticMasker`` (Qin et al. 2019's model as ART implements it), with its 0.5-Bark
decimation corrected to compare the maskers' own Bark values (see ``FixedMasker``); hand cases for masking.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch
from art.attacks.evasion.imperceptible_asr.imperceptible_asr import PsychoacousticMasker

from attacks.psychoacoustic import SPL_REFERENCE_DB, PsychoacousticModel, perceptual_distance
from victims.registry import ConfigError

# float64 on both sides: the same sums of exponentials and logs of values below ~400 dB, rounded at 2^-53 a
# few dozen times, agree to ~1e-11 dB; 1e-9 leaves a margin without hiding a formula error (>= 1e-3 dB).
FLOAT64_DB = 1e-9


class FixedMasker(PsychoacousticMasker):
    """ART's masker with the 0.5-Bark decimation of Qin et al.'s code: ART's ``filter_maskers`` compares
    ``self.bark[i]`` (the Bark of FFT bin ``i``, with ``i`` the masker's ordinal) and, when it drops the
    earlier masker, moves to ``i_prev + 1`` instead of the survivor ``i``. Only those two indices change."""

    def filter_maskers(self, maskers: np.ndarray, masker_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        audible = maskers > self.absolute_threshold_hearing[masker_idx]
        masker_idx, maskers = masker_idx[audible], maskers[audible]
        keep = np.ones(masker_idx.shape, dtype=bool)
        i_prev = 0
        for i in range(1, len(masker_idx)):
            if self.bark[masker_idx[i]] - self.bark[masker_idx[i_prev]] < 0.5:
                i_todelete, i_prev = (i_prev, i) if maskers[i_prev] < maskers[i] else (i, i_prev)
                keep[i_todelete] = False
            else:
                i_prev = i
        return maskers[keep], masker_idx[keep]


def tones(sample_rate: int, seconds: float, parts: list[tuple[float, float]], noise: float = 0.0,
          seed: int = 0) -> np.ndarray:
    """Sum of ``amplitude·sin(2π f t)`` for ``(f, amplitude)`` in ``parts`` plus seeded white noise."""
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    wave = sum(a * np.sin(2 * np.pi * f * t) for f, a in parts)
    return wave + noise * np.random.default_rng(seed).standard_normal(t.shape)


def fsdd_clip(root, samples: int) -> np.ndarray:
    wave, rate = sf.read(root / "recordings" / "3_jackson_5.wav")
    assert rate == 8000
    return wave[:samples]


def art_threshold(masker: PsychoacousticMasker, psd: np.ndarray) -> np.ndarray:
    """ART's global threshold of each column (frame) of a normalised PSD ``(bins, frames)``."""
    return np.stack([masker.calculate_global_threshold(masker.calculate_individual_threshold(
        *masker.filter_maskers(*masker.find_maskers(psd[:, f])))) for f in range(psd.shape[1])], axis=1)


SETTINGS = [(8000, 256, 64), (16000, 2048, 512), (44100, 512, 256)]


def clip_for(sample_rate: int, fsdd_root) -> np.ndarray:
    if sample_rate == 8000:
        return fsdd_clip(fsdd_root, 2400)
    return tones(sample_rate, 0.15, [(440, 0.3), (1250, 0.05), (5300, 0.02)], noise=1e-2)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("sample_rate", "n_fft", "hop"), SETTINGS)
def test_threshold_matches_art_on_the_same_psd(sample_rate: int, n_fft: int, hop: int, fsdd_root) -> None:
    masker = FixedMasker(n_fft, hop, sample_rate)
    psd, _ = masker.power_spectral_density(clip_for(sample_rate, fsdd_root))
    ours = PsychoacousticModel(sample_rate, n_fft, hop).threshold(torch.from_numpy(psd.T.astype(np.float64)))
    np.testing.assert_allclose(ours.numpy().T, art_threshold(masker, psd), rtol=0, atol=FLOAT64_DB)


def fft_error_bound_db(frames: np.ndarray, n_fft: int) -> np.ndarray:
    """Per-bin bound on |10·log10 p̂ − 10·log10 p| between two float32 STFTs of the same frames.

    Higham (2002), Thm 24.2: a radix-2 FFT in precision u has ‖ŝ − s‖₂ ≤ log2(N)·η/(1 − log2(N)·η)·‖s‖₂ with
    η = u + γ₄(√2 + u); each bin errs by at most that; ‖s‖₂ = √N·‖w·x‖₂ (Parseval); windowing and squaring add
    a few u. An error e on |s_k| moves the power by ≤ 20·log10(1 + e/|s_k|) dB; two implementations, twice that.
    """
    u = 2.0 ** -24
    eta = u + 4 * u / (1 - 4 * u) * (math.sqrt(2) + u)
    rel = math.log2(n_fft) * eta / (1 - math.log2(n_fft) * eta) + 4 * u
    window = np.hanning(n_fft + 1)[:-1]
    spectrum = np.fft.rfft(frames * window, axis=-1)
    energy = math.sqrt(n_fft) * np.linalg.norm(frames * window, axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        return 2 * 20 * np.log10(1 + rel * energy / np.abs(spectrum))


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("sample_rate", "n_fft", "hop"), SETTINGS)
def test_psd_its_maximum_and_the_threshold_of_a_float32_clip_match_art_within_rounding(
        sample_rate: int, n_fft: int, hop: int, fsdd_root) -> None:
    clip = clip_for(sample_rate, fsdd_root).astype(np.float32)
    masker = FixedMasker(n_fft, hop, sample_rate)
    art_psd, art_max = masker.power_spectral_density(clip)
    art_theta, _ = masker.calculate_threshold_and_psd_maximum(clip)
    model = PsychoacousticModel(sample_rate, n_fft, hop)
    wave = torch.from_numpy(clip)[None]
    ours = (10 * model.power(wave).double().log10()).clamp(min=-200)[0].numpy()
    masking = model.masking(wave)
    bound = fft_error_bound_db(np.lib.stride_tricks.sliding_window_view(clip.astype(np.float64), n_fft)[::hop], n_fft)
    art_raw = (art_psd - SPL_REFERENCE_DB + art_max).T
    checked = bound < 1.0  # the first-order bound holds while the error is small against the bin
    assert checked.mean() > 0.9
    assert np.all(np.abs(ours - art_raw)[checked] <= bound[checked])
    assert abs(masking.reference.item() - art_max) <= bound.min()
    # θ(k) is a power sum of spreads T_j = P_TM_j + shift(z_j) + slope·Δz; the upper slope moves by 0.37·Δz per dB
    # of P_TM_j, so a frame's θ errs by at most (1 + 0.37·z_max)·(its maskers' largest PSD error) plus the
    # normalising maximum's error, twice (once in p̄_x, once through P_TM), as long as both find the same maskers.
    slope = 1 + 0.37 * masker.bark[-1]
    for t in range(art_psd.shape[1]):
        _, bins = masker.filter_maskers(*masker.find_maskers(art_psd[:, t]))
        tol = slope * max((bound[t, k - 1:k + 2].max() for k in bins), default=0.0) + 2 * bound.min()
        finite = np.isfinite(art_theta[:, t])
        assert np.all(np.abs(masking.threshold[0, t].double().numpy() - art_theta[:, t])[finite] <= tol), t


def level_of(frequency: float, amplitude: float, sample_rate: int = 16000) -> torch.Tensor:
    return torch.from_numpy(tones(sample_rate, 0.5, [(frequency, amplitude)]))[None]


@pytest.mark.timeout(30)
def test_a_loud_tone_masks_a_quieter_nearby_tone_but_not_a_far_or_louder_one() -> None:
    model = PsychoacousticModel(16000)
    masking = model.masking(level_of(1000, 0.5))
    quiet_near = model.distance(level_of(1100, 0.5 * 10 ** (-30 / 20)), masking)
    quiet_far = model.distance(level_of(4000, 0.5 * 10 ** (-30 / 20)), masking)
    loud_near = model.distance(level_of(1100, 0.5 * 10 ** (-5 / 20)), masking)
    # Model 1 by hand: the 1 kHz masker (96 dB, z = 8.5 Bark) puts its threshold 6.025 + 0.275·8.5 = 8.4 dB
    # below itself and falls 27 − 0.37·56 = 6.3 dB/Bark above it: ~84 dB at 1.1 kHz (+0.6 Bark), ~33 dB at
    # 4 kHz (+8.8 Bark). A tone 30 dB down (66 dB) sits ~18 dB under it near and ~33 dB over it far away;
    # 5 dB down (91 dB) is ~7 dB over it near.
    assert quiet_near.item() < -10
    assert quiet_far.item() > 20
    assert loud_near.item() > 3


@pytest.mark.timeout(30)
def test_distance_moves_by_the_gain_in_db_and_is_minus_infinity_for_no_perturbation() -> None:
    model = PsychoacousticModel(8000, 256, 64)
    clean = torch.from_numpy(tones(8000, 0.3, [(300, 0.4), (900, 0.1)], noise=1e-2))[None]
    masking = model.masking(clean)
    delta = 1e-3 * torch.randn(1, clean.shape[1], dtype=torch.float64)
    base = model.distance(delta, masking)
    for gain in (0.1, 3.0):
        assert model.distance(gain * delta, masking).item() == pytest.approx(base.item() + 20 * math.log10(gain),
                                                                             abs=1e-9)
    assert model.distance(torch.zeros_like(delta), masking).item() == -math.inf


@pytest.mark.timeout(30)
def test_silence_masks_nothing() -> None:
    model = PsychoacousticModel(8000, 256, 64)
    silence = torch.zeros(1, 2400)
    masking = model.masking(silence)
    assert masking.reference.item() == -200.0  # log10 0 reads as the floor, as in ART
    audible = torch.from_numpy(np.linspace(0, 4000, 129))
    audible = (audible >= 20) & (audible <= 20000)
    np.testing.assert_allclose(masking.threshold[0][:, audible].numpy(),
                               np.broadcast_to(model._ath[audible].numpy(), (masking.threshold.shape[1],
                                                                             int(audible.sum()))), atol=1e-4)
    faint = 1e-6 * torch.randn(1, 2400)
    assert 100 < perceptual_distance(silence, faint, 8000, 256, 64).item() < math.inf
    assert model.distance(torch.zeros(1, 2400), masking).item() == -math.inf


def single_peak_row(bins: int, peaks: dict[int, float], floor: float = -50.0) -> torch.Tensor:
    row = torch.full((1, bins), floor, dtype=torch.float64)
    for k, level in peaks.items():
        row[0, k] = level
    return row


@pytest.mark.timeout(30)
def test_decimation_drops_the_weaker_of_two_maskers_under_half_a_bark_apart() -> None:
    model = PsychoacousticModel(16000, 512, 128)  # 31.25 Hz bins: 0.3 Bark per bin near 0 Hz ... 0.1 at 4 kHz
    bark = model._bark
    near = next(k for k in range(41, 257) if bark[k] - bark[40] > 0.3)  # > 0.3 and < 0.5 Bark above bin 40
    far = next(k for k in range(41, 257) if bark[k] - bark[40] > 1.0)
    assert bark[near] - bark[40] < 0.5
    strong, weak = 80.0, 70.0
    alone = model.threshold(single_peak_row(257, {40: strong}))
    pair_near = model.threshold(single_peak_row(257, {40: strong, near: weak}))
    pair_far = model.threshold(single_peak_row(257, {40: strong, far: weak}))
    weak_alone = model.threshold(single_peak_row(257, {far: weak}))
    torch.testing.assert_close(pair_near, alone, rtol=0, atol=1e-9)  # the weaker one was dropped
    both = 10 * torch.log10(10 ** (alone / 10) + 10 ** (weak_alone / 10) - 10 ** (model._ath / 10))
    audible = model._audible
    torch.testing.assert_close(pair_far[0, audible], both[0, audible], rtol=1e-9, atol=1e-9)


@pytest.mark.timeout(60)
def test_distance_is_differentiable_in_the_perturbation() -> None:
    model = PsychoacousticModel(8000, 16, 8)
    clean = torch.randn(2, 48, dtype=torch.float64)
    masking = model.masking(clean)
    delta = (0.1 * torch.randn(2, 48, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda d: model.distance(d, masking), (delta,))
    audible = model._audible
    assert torch.autograd.gradcheck(lambda d: model.excess(d, masking)[..., audible], (delta,))


@pytest.mark.timeout(30)
def test_zero_power_bins_give_finite_gradients() -> None:
    model = PsychoacousticModel(8000, 64, 32)
    clean = torch.randn(1, 256)
    delta = torch.zeros(1, 256)
    delta[0, :64] = 1e-2 * torch.randn(64)  # only the first frame has power
    delta.requires_grad_()
    masking = model.masking(clean)
    model.excess(delta, masking).clamp(min=-1e4).sum().backward()
    assert torch.isfinite(delta.grad).all() and delta.grad.abs().sum() > 0


@pytest.mark.timeout(30)
def test_a_batch_gives_each_clips_own_threshold_and_distance() -> None:
    model = PsychoacousticModel(16000, 512, 256)
    clean = torch.stack([torch.from_numpy(tones(16000, 0.1, [(f, a)], noise=1e-3, seed=i)).float()
                         for i, (f, a) in enumerate([(300, 0.5), (2000, 0.05), (7000, 0.2)])])
    delta = 1e-3 * torch.randn_like(clean)
    masking = model.masking(clean.unsqueeze(1))  # (B, 1, T) like the victims' waveforms
    batched = model.distance(delta, masking)
    for i in range(3):
        alone = model.masking(clean[i:i + 1])
        torch.testing.assert_close(masking.threshold[i:i + 1], alone.threshold)
        torch.testing.assert_close(batched[i:i + 1], model.distance(delta[i:i + 1], alone))


@pytest.mark.timeout(30)
def test_bad_settings_and_short_clips_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="n_fft must be even"):
        PsychoacousticModel(16000, 255)
    with pytest.raises(ConfigError, match="hop must be in"):
        PsychoacousticModel(16000, 256, 0)
    with pytest.raises(ConfigError, match="sample_rate must be positive"):
        PsychoacousticModel(0)
    model = PsychoacousticModel(8000, 256, 64)
    with pytest.raises(ConfigError, match="100 samples is shorter than one STFT frame") as error:
        model.masking(torch.zeros(1, 100))
    assert "\n" not in str(error.value)
    masking = model.masking(torch.zeros(1, 400))
    with pytest.raises(ValueError, match="do not match"):
        model.distance(torch.zeros(1, 600), masking)


@pytest.mark.gpu
@pytest.mark.timeout(60)
def test_cuda_matches_cpu() -> None:
    model = PsychoacousticModel(16000, 512, 128)
    clean = torch.from_numpy(tones(16000, 0.3, [(500, 0.3), (3000, 0.05)], noise=1e-3))[None]
    delta = 1e-3 * torch.randn_like(clean)
    cpu = model.distance(delta, model.masking(clean))
    gpu = model.distance(delta.cuda(), model.masking(clean.cuda()))
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-9)
