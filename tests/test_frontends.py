"""Every registered front-end: shapes, batching, float64 gradcheck, gradients, output bounds, configs."""
from __future__ import annotations

import math

import pytest
import torch

from defense.config import load_option, options
from victims.frontends import FRONTENDS
from victims.frontends.tonnetz import resample_frames
from victims.registry import ConfigError

RATE = 1000
# Tiny settings per registered name (gradcheck-sized); a new front-end must add one here.
TINY = {
    "stft_db": {"n_fft": 16, "hop": 4},
    "mel_db": {"n_fft": 32, "hop": 8, "n_mels": 6, "fmin": 20.0},
    "cwt": {"n_scales": 4, "fmin": 40.0, "fmax": 200.0, "hop": 8},
    "tonnetz": {"n_fft": 32, "hop": 8},
    "stft_tonnetz": {"stft": {"n_fft": 16, "hop": 4}},
    "cwt_tonnetz": {"cwt": {"n_scales": 4, "fmin": 40.0, "fmax": 200.0, "hop": 8},
                    "tonnetz": {"n_fft": 32, "hop": 16}},
    "waveform": {},
}
NAMES = FRONTENDS.names()
CONFIGS = options("frontend")


def tiny(name: str) -> torch.nn.Module:
    return FRONTENDS.create(name, sample_rate=RATE, **TINY[name])


def test_every_frontend_has_tiny_settings_and_a_config() -> None:
    assert sorted(TINY) == NAMES
    assert set(NAMES) <= set(CONFIGS)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("length", [64, 67])
def test_output_shape(name: str, length: int) -> None:
    fe = tiny(name)
    out = fe(torch.rand(3, 1, length) * 2 - 1)
    assert out.shape == (3, 1, *fe.output_shape(length))
    lo, hi = fe.output_bounds()
    assert lo.shape == hi.shape == (fe.n_bands,) and bool((lo < hi).all())


@pytest.mark.parametrize("name", NAMES)
def test_batched_equals_per_item(name: str) -> None:
    fe = tiny(name).double()
    wave = torch.rand(4, 1, 80, dtype=torch.float64) * 2 - 1
    batched = fe(wave)
    single = torch.cat([fe(wave[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_float64(name: str) -> None:
    fe = tiny(name).double()
    wave = (torch.rand(2, 1, 40, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()
    assert torch.autograd.gradcheck(fe, (wave,), eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_finite_and_nonzero(name: str) -> None:
    fe = tiny(name)
    wave = (torch.rand(2, 1, 64) * 2 - 1).requires_grad_()
    fe(wave).square().mean().backward()
    assert torch.isfinite(wave.grad).all()
    assert (wave.grad.abs().sum(dim=(1, 2)) > 0).all()


def full_scale_signals(length: int, rate: int) -> torch.Tensor:
    """Silence, ±DC, alternating ±1, full-scale sines and square waves at several frequencies."""
    t = torch.arange(length) / rate
    rows = [torch.zeros(length), torch.ones(length), -torch.ones(length),
            (-1.0) ** torch.arange(length).float()]
    for freq in (55.0, 440.0, 1000.0, 3000.0):
        rows += [torch.sin(2 * math.pi * freq * t), torch.sign(torch.sin(2 * math.pi * freq * t + 0.1))]
    rows += [torch.rand(length) * 2 - 1 for _ in range(3)]
    return torch.stack(rows).unsqueeze(1)


@pytest.mark.parametrize("option", CONFIGS)
def test_config_builds_and_stays_within_bounds(option: str) -> None:
    """Each YAML config at 16 kHz on 0.25 s: shape, and every output inside ``output_bounds``."""
    cfg = load_option("frontend", option)
    fe = FRONTENDS.create(cfg.pop("name"), sample_rate=16000, **cfg)
    wave = full_scale_signals(4000, 16000)
    out = fe(wave)
    assert out.shape == (wave.shape[0], 1, *fe.output_shape(4000))
    lo, hi = fe.output_bounds()
    assert torch.isfinite(out).all()
    assert bool((out >= lo.view(1, 1, -1, 1) - 1e-3).all()) and bool((out <= hi.view(1, 1, -1, 1) + 1e-3).all())


def test_stft_bound_is_reached_by_dc() -> None:
    fe = FRONTENDS.create("stft_db", sample_rate=16000, n_fft=256, hop=64)
    out = fe(torch.ones(1, 1, 1024))
    assert abs(float(out[0, 0, 0, 8]) - float(fe.output_bounds()[1][0])) < 1e-3


def test_cwt_bound_is_tight() -> None:
    """A ±1 input matched to the real part of one wavelet reaches ``2/π`` of that row's ℓ1 bound
    (-3.9 dB), so the bound is not loose by more than that."""
    fe = FRONTENDS.create("cwt", sample_rate=8000, n_scales=3, fmin=200.0, fmax=800.0, hop=100).double()
    s = fe.scales[1]
    n = torch.arange(2001, dtype=torch.float64) - 1000
    u = n / s
    psi = torch.exp(-u ** 2 / fe.bandwidth) * torch.cos(2 * math.pi * fe.center * u)
    out = fe(torch.sign(psi).view(1, 1, -1))
    top = fe.output_bounds()[1][1]
    assert top - 4.0 < float(out[0, 0, 1, 10]) <= top + 1e-3


def test_waveform_is_identity() -> None:
    wave = torch.rand(2, 1, 50) * 2 - 1
    assert torch.equal(FRONTENDS.create("waveform", sample_rate=RATE)(wave), wave.view(2, 1, 1, 50))


def test_stft_tonnetz_stacks_its_parts() -> None:
    fe = FRONTENDS.create("stft_tonnetz", sample_rate=RATE, stft={"n_fft": 32, "hop": 8})
    wave = torch.rand(2, 1, 100) * 2 - 1
    stft = FRONTENDS.create("stft_db", sample_rate=RATE, n_fft=32, hop=8)(wave)
    ton = FRONTENDS.create("tonnetz", sample_rate=RATE, n_fft=32, hop=8)(wave)
    torch.testing.assert_close(fe(wave), torch.cat([stft, ton], dim=2))


def test_cwt_tonnetz_resamples_tonnetz_frames() -> None:
    fe = tiny("cwt_tonnetz")
    wave = torch.rand(1, 1, 96) * 2 - 1
    ton = FRONTENDS.create("tonnetz", sample_rate=RATE, n_fft=32, hop=16)(wave)  # frames at 0, 16, ..., 96
    out = fe(wave)
    torch.testing.assert_close(out[..., 4:, ::2], ton)  # CWT frames at 0, 8, ..., 96
    torch.testing.assert_close(out[..., 4:, 1], (ton[..., 0] + ton[..., 1]) / 2)


def test_resample_frames_hand_computed() -> None:
    x = torch.tensor([[0.0, 10.0, 20.0]])
    torch.testing.assert_close(resample_frames(x, 4, 2, 6), torch.tensor([[0.0, 5.0, 10.0, 15.0, 20.0, 20.0]]))
    torch.testing.assert_close(resample_frames(x, 2, 4, 2), torch.tensor([[0.0, 20.0]]))


def test_bad_inputs_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="shaped"):
        tiny("stft_db")(torch.zeros(2, 64))
    with pytest.raises(ConfigError, match="unknown key 'nfft'"):
        FRONTENDS.create("stft_db", sample_rate=RATE, nfft=16)
    with pytest.raises(ConfigError, match="fmax"):
        FRONTENDS.create("cwt", sample_rate=RATE, fmax=600.0)
    with pytest.raises(ConfigError, match="ref"):
        FRONTENDS.create("mel_db", sample_rate=RATE, n_fft=32, n_mels=4, ref="peak")
    with pytest.raises(ConfigError, match="unknown key 'hopp'"):
        FRONTENDS.create("stft_tonnetz", sample_rate=RATE, tonnetz={"hopp": 4})


@pytest.mark.parametrize("name", ["mel_db", "cwt_tonnetz"])
def test_half_precision_and_autocast_run_in_float32(name: str) -> None:
    fe = tiny(name)
    wave = torch.rand(2, 1, 64) * 2 - 1
    torch.testing.assert_close(fe(wave.bfloat16()), fe(wave.bfloat16().float()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fe(wave)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, fe(wave))


@pytest.mark.gpu
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu(name: str) -> None:
    fe = tiny(name).double()
    wave = torch.rand(3, 1, 96, dtype=torch.float64) * 2 - 1
    out = fe.cuda()(wave.cuda())
    torch.testing.assert_close(out.cpu(), fe.cpu()(wave), rtol=1e-7, atol=1e-7)
    lo, hi = fe.cuda().output_bounds()
    assert lo.shape == (fe.n_bands,) and hi.shape == (fe.n_bands,)


@pytest.mark.parametrize("option", ["stft_db_small", "mel_db_seed003", "cwt_tonnetz_small", "waveform"])
def test_victim_representation_bounds_contain_clean_inputs(option: str) -> None:
    """Through :class:`Victim`, the normalised representation of full-scale signals lies in the
    representation-domain box built from ``output_bounds``."""
    from victims.victim import Victim

    cfg = load_option("frontend", option)
    fe = FRONTENDS.create(cfg.pop("name"), sample_rate=16000, **cfg)
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d((1, 2)), torch.nn.Flatten(), torch.nn.Linear(2, 3))
    victim = Victim(fe, net, ["a", "b", "c"], 4000)
    wave = full_scale_signals(4000, 16000)
    victim.normalizer.fit([fe(wave)])
    rep = victim.to_domain(wave, "representation")
    assert victim.bounds("representation").contains(rep, atol=1e-3).all()


def test_mel_top_db_floors_at_max_minus_top_db() -> None:
    fe = FRONTENDS.create("mel_db", sample_rate=RATE, n_fft=32, hop=8, n_mels=6, top_db=20.0)
    wave = torch.rand(2, 1, 64) * 2 - 1
    wave[1] *= 1e-4
    free = FRONTENDS.create("mel_db", sample_rate=RATE, n_fft=32, hop=8, n_mels=6)(wave)
    peak = free.amax(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(fe(wave), torch.maximum(free, peak - 20.0))
