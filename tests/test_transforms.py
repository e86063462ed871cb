"""Input transforms against scipy/numpy/librosa oracles, and the wrapped victim's BPDA and EoT functions.

Oracles: ``scipy.ndimage.median_filter``/``uniform_filter`` (``mode="nearest"``) for the median and its
approximation, numpy by hand for the quantiser and the brick-wall low-pass, librosa's soxr round trip
for resampling. Then :class:`~defense.defended_victim.TransformedVictim`: it shares the victim's modules,
runs each transform where it belongs, and its BPDA gradients equal the identity's or the
approximation's gradient at the transformed input (Athalye et al. 2018, Sec. 4.1).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
import torch
from torch import Tensor, nn

from defense.defended_victim import TransformedVictim, defend, expected_log_softmax
from defense.transforms import TRANSFORMS, InputTransform
from tiny import tones, trained_victim
from victims.frontends.waveform import Waveform
from victims.registry import ConfigError
from victims.victim import Victim

SR = 8000


def sines(freqs: list[float], amps: list[float], n: int, sr: int = SR, seed: int = 0) -> np.ndarray:
    """A float64 sum of sines with random phases."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    return sum(a * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f, a in zip(freqs, amps))


def as_wave(x: np.ndarray) -> Tensor:
    return torch.from_numpy(np.asarray(x, dtype=np.float64)).view(1, 1, -1)


@pytest.mark.parametrize("bits", [1, 3, 8, 16])
def test_quantize_matches_numpy(bits: int) -> None:
    x = np.concatenate([np.linspace(-1, 1, 4001), np.random.default_rng(bits).uniform(-1, 1, 1000)])
    q = 2.0 ** (bits - 1)
    expected = np.clip(np.round(x * q) / q, -1, 1)  # numpy rounds half to even, as torch does
    out = TRANSFORMS.create("quantize", bits=bits)(as_wave(x))
    np.testing.assert_array_equal(out.view(-1).numpy(), expected)
    assert len(np.unique(expected)) <= 2 ** bits + 1


def test_quantize_has_zero_gradient() -> None:
    x = as_wave(np.linspace(-0.9, 0.9, 64)).requires_grad_(True)
    t = TRANSFORMS.create("quantize", bits=4)
    (grad,) = torch.autograd.grad(t(x).pow(2).sum(), x)
    assert not t.differentiable and not t.random and torch.equal(grad, torch.zeros_like(x))


@pytest.mark.parametrize("kernel", [3, 5])
def test_median_and_its_approximation_match_scipy(kernel: int) -> None:
    x = torch.randn(2, 1, 11, 9, dtype=torch.float64)
    t = TRANSFORMS.create("median", kernel=kernel)
    for b in range(2):
        ref = scipy.ndimage.median_filter(x[b, 0].numpy(), size=kernel, mode="nearest")
        np.testing.assert_array_equal(t(x)[b, 0].numpy(), ref)
        mean = scipy.ndimage.uniform_filter(x[b, 0].numpy(), size=kernel, mode="nearest")
        np.testing.assert_allclose(t.approximation(x)[b, 0].numpy(), mean, rtol=0, atol=1e-12)
    assert t.domain == "representation" and not t.differentiable


def test_lowpass_removes_every_bin_above_the_cutoff_and_keeps_the_rest() -> None:
    n, cutoff = 2000, 1000.0
    x = np.random.default_rng(0).normal(0, 0.1, n)  # white noise, |x| < 1: no clipping
    out = TRANSFORMS.create("lowpass", sample_rate=SR, cutoff_hz=cutoff)(as_wave(x)).view(-1).numpy()
    freqs = np.fft.rfftfreq(n, 1 / SR)
    spec, ref = np.fft.rfft(out), np.fft.rfft(x)
    energy = np.abs(ref) ** 2
    assert np.abs(spec[freqs > cutoff]).max() ** 2 <= 1e-24 * energy.sum()  # float64 round-off only
    np.testing.assert_allclose(spec[freqs <= cutoff], ref[freqs <= cutoff], rtol=0, atol=1e-10)
    np.testing.assert_allclose(out, np.fft.irfft(np.where(freqs <= cutoff, ref, 0), n), rtol=0, atol=1e-12)


def test_resample_matches_librosa_round_trip() -> None:
    """8 kHz → 4 kHz → 8 kHz. Tones at or below rate/4 pass and tones at or above 1.25·rate/2 go;
    torchaudio's Hann-windowed sinc (6 zero crossings, roll-off 0.99) keeps its gain within 1 % below
    rate/4 and lets at most 1 % through above 1.25·rate/2 (checked tone by tone below), so the round
    trip differs from soxr's near-ideal one by at most 1 % of the summed amplitudes, away from the
    ends (the filters' supports: 64 samples)."""
    import librosa

    rate, n, edge = 4000, 2000, 64
    t = TRANSFORMS.create("resample", sample_rate=SR, rate=rate)
    for f, gain in [(250.0, 1.0), (600.0, 1.0), (1000.0, 1.0), (2500.0, 0.0), (3000.0, 0.0), (3800.0, 0.0)]:
        x = sines([f], [0.5], n, seed=int(f))
        out = t(as_wave(x)).view(-1).numpy()
        assert np.abs(out - gain * x)[edge:-edge].max() <= 0.01 * 0.5, f
    amps = [0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    x = sines([300.0, 700.0, 1000.0, 2500.0, 3100.0, 3700.0], amps, n)
    down = librosa.resample(x, orig_sr=SR, target_sr=rate, res_type="soxr_vhq")
    ref = librosa.resample(down, orig_sr=rate, target_sr=SR, res_type="soxr_vhq")[:n]
    out = t(as_wave(x)).view(-1).numpy()
    assert out.shape == x.shape
    assert np.abs(out - ref)[edge:-edge].max() <= 0.01 * sum(amps)


@pytest.mark.parametrize("config", [
    {"name": "quantize", "bits": 6}, {"name": "lowpass", "sample_rate": SR, "cutoff_hz": 3000.0},
    {"name": "resample", "sample_rate": SR, "rate": 6000},
    {"name": "gaussian_noise", "sigma": 0.05, "domain": "waveform"},
])
def test_waveform_transforms_keep_shape_and_the_box(config: dict) -> None:
    cfg = dict(config)
    t = TRANSFORMS.create(cfg.pop("name"), **cfg)
    x = torch.rand(3, 1, 1001) * 2 - 1
    out = t(x)
    assert t.domain == "waveform" and out.shape == x.shape and out.dtype == x.dtype
    assert out.abs().max() <= 1.0
    if t.random:
        assert not torch.equal(out, t(x))
    else:
        assert torch.equal(out, t(x))


def test_gaussian_noise_moments() -> None:
    """Mean and standard deviation of 40 000 draws within 5 standard errors (σ/√n and σ/√(2n))."""
    sigma, n = 0.5, 40_000
    t = TRANSFORMS.create("gaussian_noise", sigma=sigma, domain="representation")
    noise = t(torch.zeros(1, 1, 200, 200, dtype=torch.float64))
    assert abs(float(noise.mean())) <= 5 * sigma / math.sqrt(n)
    assert abs(float(noise.std()) - sigma) <= 5 * sigma / math.sqrt(2 * n)
    assert t.random and t.differentiable and t.domain == "representation"


def test_waveform_noise_clips_unless_told_not_to() -> None:
    """Deployed noise keeps a waveform in [-1, 1]; smoothing's noise (certified unclipped) does not."""
    loud = torch.full((1, 1, 10_000), 0.99, dtype=torch.float64)
    clipped = TRANSFORMS.create("gaussian_noise", sigma=0.1)(loud)
    free = TRANSFORMS.create("gaussian_noise", sigma=0.1, clip=False)(loud)
    assert float(clipped.max()) == 1.0 and float(free.max()) > 1.0


@pytest.mark.parametrize("name, kwargs, message", [
    ("quantize", {"bits": 0}, "bits must be an integer in"),
    ("quantize", {"bits": 4.5}, "bits must be an integer in"),
    ("median", {"kernel": 4}, "odd integer"),
    ("lowpass", {"sample_rate": SR, "cutoff_hz": 4000.0}, "below the Nyquist"),
    ("resample", {"sample_rate": SR, "rate": 8000}, "rate must be an integer in"),
    ("gaussian_noise", {"sigma": -1.0}, "sigma must be"),
    ("gaussian_noise", {"sigma": 1.0, "domain": "spectrum"}, "unknown domain"),
])
def test_bad_parameters_are_one_line_config_errors(name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        TRANSFORMS.create(name, **kwargs)
    assert "\n" not in str(err.value)


# --- the wrapped victim ------------------------------------------------------------------------------


def test_transformed_victim_shares_the_victims_modules_and_places_each_transform() -> None:
    victim = trained_victim()
    waves, _ = tones(4, seed=3)
    for cfg, rep_transform in [({"transform": "quantize", "bits": 5}, False), ({"transform": "median"}, True)]:
        tv = defend(victim, {"name": "input_transform", **cfg})
        assert isinstance(tv, TransformedVictim) and tv.sample_rate == victim.sample_rate
        assert tv.frontend is victim.frontend and tv.normalizer is victim.normalizer and tv.backbone is victim.backbone
        assert tv.state_dict().keys() == victim.state_dict().keys()
        with torch.no_grad():
            expected = (victim.classify(tv.transform(victim.represent(waves))) if rep_transform
                        else victim(tv.transform(waves)))
            torch.testing.assert_close(tv(waves), expected, rtol=0, atol=0)
            torch.testing.assert_close(tv.logits_fn("waveform")(waves), expected, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="already has an input transform"):
        TransformedVictim(tv, tv.transform)
    assert tv.training == victim.training  # the modules are the same objects
    tv.train()
    assert victim.backbone.training
    victim.eval()


def test_a_representation_attack_on_a_waveform_transform_is_refused() -> None:
    tv = defend(trained_victim(), {"name": "input_transform", "transform": "quantize", "bits": 5})
    waves, _ = tones(2)
    for call in (lambda: tv.logits_fn("representation"), lambda: tv.to_domain(waves, "representation")):
        with pytest.raises(ConfigError, match="would bypass the waveform transform") as err:
            call()
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="unknown bpda 'straight'"):
        tv.logits_fn("waveform", bpda="straight")
    with pytest.raises(ConfigError, match="eot_samples must be an integer >= 1"):
        tv.logits_fn("waveform", eot_samples=0)


@pytest.mark.parametrize("config, message", [
    ({"name": "fgsm_mix"}, "builds 'input_transform' defenses"),
    ({"name": "input_transform"}, "needs 'transform:"),
    ({"name": "input_transform", "transform": "quantise", "bits": 8}, "did you mean 'quantize'"),
    ({"name": "input_transform", "transform": "quantize", "bit": 8}, "unknown key 'bit'"),
    ({"name": "input_transform", "transform": "lowpass", "cutoff_hz": 100.0, "sample_rate": 800},
     "sample_rate comes from the victim"),
])
def test_defend_rejects_bad_configs(config: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        defend(trained_victim(), config)
    assert "\n" not in str(err.value)


class _Sum(nn.Module):
    """Logits ``[Σ w·x, −Σ w·x]`` with fixed random weights: a smooth classifier with a known gradient."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(n, dtype=torch.float64), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        s = (x.flatten(1) * self.w).sum(dim=1, keepdim=True)
        return torch.cat([torch.tanh(s), -s ** 2], dim=1)


def _input_grad(fn, x: Tensor) -> Tensor:  # type: ignore[no-untyped-def]
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(x).sum(), x)
    return grad


@pytest.mark.parametrize("transform", [{"transform": "quantize", "bits": 3}, {"transform": "median", "kernel": 3}])
def test_bpda_gradients_are_those_of_the_identity_and_of_the_approximation(transform: dict) -> None:
    """Forward values are the real transform's; the backward pass is the identity's (``bpda="identity"``)
    or the approximation's vector-Jacobian product (``"approx"``), evaluated at the transformed input."""
    n = 24
    victim = Victim(Waveform(SR), _Sum(n), ["a", "b"], n).double()
    tv = defend(victim, {"name": "input_transform", **transform})
    t = tv.transform
    x = torch.rand(3, 1, n, dtype=torch.float64) * 1.6 - 0.8
    domain = t.domain
    x_in = tv.to_domain(x, domain)
    plain = victim.logits_fn(domain)
    y = t(x_in)  # the transformed input at which the classifier's gradient is taken
    g_plain = _input_grad(plain, y)
    for bpda in ("identity", "approx"):
        fn = tv.logits_fn(domain, bpda=bpda)
        torch.testing.assert_close(fn(x_in), tv.logits_fn(domain)(x_in), rtol=0, atol=1e-12)  # g + (t − g) = t up to rounding
        grad = _input_grad(fn, x_in)
        if bpda == "identity":
            expected = g_plain
        else:
            xa = x_in.clone().requires_grad_(True)
            (expected,) = torch.autograd.grad(t.approximation(xa), xa, g_plain)
        torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)
    if transform["transform"] == "quantize":  # the naive gradient is exactly zero: what BPDA repairs
        assert torch.equal(_input_grad(tv.logits_fn(domain), x_in), torch.zeros_like(x_in))
        torch.testing.assert_close(_input_grad(tv.logits_fn(domain, bpda="approx"), x_in), g_plain)


def test_expected_log_softmax_is_the_log_of_the_mean_softmax() -> None:
    """Known answer: draws ``j = 0..k-1`` return log-probabilities ``log p_j``; EoT returns ``log(mean_j p_j)``."""
    k, n, c = 3, 2, 4
    probs = torch.rand(k, n, c, dtype=torch.float64).softmax(dim=-1)
    calls: list[Tensor] = []

    def draws(x: Tensor) -> Tensor:
        calls.append(x)
        return probs.log().reshape(k * n, c) + 7.0  # a per-row shift does not change the softmax

    x = torch.arange(n * 5, dtype=torch.float64).view(n, 1, 5)
    out = expected_log_softmax(draws, x, k)
    torch.testing.assert_close(out, probs.mean(dim=0).log())
    assert len(calls) == 1 and torch.equal(calls[0], x.repeat(k, 1, 1))  # one batched call, copy j = rows j·n…


def test_eot_on_a_random_transform_and_none_on_a_deterministic_one() -> None:
    victim = trained_victim()
    waves, _ = tones(3, seed=4)
    noisy = defend(victim, {"name": "input_transform", "transform": "gaussian_noise", "sigma": 0.1})
    torch.manual_seed(5)
    eot = noisy.logits_fn("waveform", eot_samples=4)(waves)
    torch.manual_seed(5)
    with torch.no_grad():
        draws = noisy(waves.repeat(4, 1, 1)).view(4, waves.shape[0], -1)
    torch.testing.assert_close(eot, draws.softmax(dim=-1).mean(dim=0).log(), rtol=1e-5, atol=1e-6)
    fixed = defend(victim, {"name": "input_transform", "transform": "quantize", "bits": 6})
    torch.testing.assert_close(fixed.logits_fn("waveform", eot_samples=8)(waves), fixed(waves), rtol=0, atol=0)


def test_the_undefended_victim_ignores_the_adaptive_options() -> None:
    victim = trained_victim()
    waves, _ = tones(2)
    torch.testing.assert_close(victim.logits_fn("waveform", bpda="identity", eot_samples=4)(waves), victim(waves))


def test_every_registered_transform_is_an_input_transform() -> None:
    assert {"resample", "quantize", "lowpass", "gaussian_noise", "median"} <= set(TRANSFORMS.names())
    for name in TRANSFORMS.names():
        assert issubclass(TRANSFORMS.get(name), InputTransform)


@pytest.mark.gpu
def test_transforms_and_bpda_run_on_cuda_as_on_cpu() -> None:
    """Float64 throughout (no TF32 in the resampler's convolutions), so CUDA matches CPU to round-off."""
    x = torch.rand(2, 1, 800, dtype=torch.float64) * 2 - 1
    rep = torch.randn(2, 1, 9, 7, dtype=torch.float64)
    for name, kwargs, inp in [("quantize", {"bits": 6}, x), ("lowpass", {"sample_rate": SR, "cutoff_hz": 2000.0}, x),
                              ("resample", {"sample_rate": SR, "rate": 4000}, x), ("median", {"kernel": 3}, rep)]:
        t = TRANSFORMS.create(name, **kwargs)
        torch.testing.assert_close(t(inp.cuda()).cpu(), t(inp), rtol=0, atol=1e-10)
    noisy = TRANSFORMS.create("gaussian_noise", sigma=0.1)(x.cuda())
    assert noisy.is_cuda and noisy.shape == x.shape
    tv = defend(trained_victim().cuda(), {"name": "input_transform", "transform": "quantize", "bits": 4})
    grad = _input_grad(tv.logits_fn("waveform", bpda="identity", eot_samples=2), tones(2)[0].cuda())
    assert grad.is_cuda and float(grad.abs().sum()) > 0
