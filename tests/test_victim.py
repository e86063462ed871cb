"""Victims built from real front-ends and backbones: forward shape, the represent/classify split,
domain bounds, the per-band normaliser, and gradients that reach the waveform."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from victims.bounds import Bounds
from victims.registry import ConfigError
from victims.victim import Victim, build_victim, victim_from_spec

SAMPLE_RATE = 8000
NUM_SAMPLES = 800
CLASSES = ["a", "b", "c"]
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "stft_db+resnet56": ({"name": "stft_db", "n_fft": 64, "hop": 32}, {"backbone": "resnet56"}),
    "mel_db+averagepool_cnn": ({"name": "mel_db", "n_fft": 256, "hop": 64, "n_mels": 16},
                               {"backbone": "averagepool_cnn"}),
    "stft_tonnetz+koerich_cnn2d": ({"name": "stft_tonnetz", "stft": {"n_fft": 128, "hop": 64}},
                                   {"backbone": "koerich_cnn2d", "dense": 32}),
    "cwt+resnet18": ({"name": "cwt", "n_scales": 8, "hop": 64}, {"backbone": "resnet18"}),
    "waveform+abdoli_cnn1d": ({"name": "waveform"}, {"backbone": "abdoli_cnn1d", "sample_rate": SAMPLE_RATE,
                                                      "high_hz": 3500.0}),
}


def waves(n: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Noise plus a random tone, strictly inside [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(NUM_SAMPLES, dtype=torch.float64) / SAMPLE_RATE
    freq = 100 + 3000 * torch.rand(n, 1, generator=gen, dtype=torch.float64)
    tone = 0.5 * torch.sin(2 * torch.pi * freq * t)
    noise = 0.1 * torch.randn(n, NUM_SAMPLES, generator=gen, dtype=torch.float64)
    return (tone + noise).clamp(-0.99, 0.99).unsqueeze(1).to(dtype)


@pytest.fixture(scope="module", params=list(CASES))
def victim(request: pytest.FixtureRequest) -> Victim:
    """A victim per case with its normaliser fitted on two training batches, in eval mode."""
    torch.manual_seed(0)
    frontend, backbone = CASES[request.param]
    built = build_victim(frontend, backbone, CLASSES, SAMPLE_RATE, NUM_SAMPLES)
    built.normalizer.fit(built.features(w) for w in (waves(4, 1), waves(4, 2)))
    return built.eval()


def test_forward_shape_and_rebuild_from_spec(victim: Victim) -> None:
    wave = waves(2, 3)
    with torch.no_grad():
        logits = victim(wave)
    assert logits.shape == (2, len(CLASSES)) and torch.isfinite(logits).all()
    rep = victim.represent(wave)
    assert rep.shape == (2, 1, *victim.frontend.output_shape(NUM_SAMPLES))
    rebuilt = victim_from_spec(victim.spec)
    rebuilt.load_state_dict(victim.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(wave), logits)


def test_represent_classify_round_trip(victim: Victim) -> None:
    wave = waves(2, 4)
    with torch.no_grad():
        logits = victim(wave)
        rep = victim.to_domain(wave, "representation")
        torch.testing.assert_close(victim.classify(rep), logits)
        torch.testing.assert_close(victim.logits_fn("representation")(rep), logits)
        torch.testing.assert_close(victim.logits_fn("waveform")(victim.to_domain(wave, "waveform")), logits)
        torch.testing.assert_close(victim.normalizer.inverse(rep), victim.features(wave), atol=1e-3, rtol=1e-5)


def test_bounds_per_domain(victim: Victim) -> None:
    wave = waves(3, 5)
    assert victim.bounds("waveform") == Bounds(-1.0, 1.0)
    box = victim.bounds("representation")
    n_bands = victim.frontend.n_bands
    assert box.lower.shape == box.upper.shape == (1, 1, n_bands, 1)
    assert (box.lower <= box.upper).all()
    lo, hi = victim.frontend.output_bounds()
    mean, std = victim.normalizer.mean.flatten(), victim.normalizer.std.flatten()
    torch.testing.assert_close(box.lower.flatten(), (lo - mean) / std)
    torch.testing.assert_close(box.upper.flatten(), (hi - mean) / std)
    assert box.contains(victim.to_domain(wave, "representation"), atol=1e-3).all()
    with pytest.raises(ValueError, match="unknown domain"):
        victim.bounds("spectrum")  # type: ignore[arg-type]


def test_bandnorm_fit_gives_zero_mean_unit_std_per_band() -> None:
    frontend, backbone = CASES["stft_db+resnet56"]
    v = build_victim(frontend, backbone, CLASSES, SAMPLE_RATE, NUM_SAMPLES)
    batches = [waves(5, 10), waves(3, 11)]
    v.normalizer.fit(v.features(w) for w in batches)
    with torch.no_grad():
        z = v.represent(torch.cat(batches)).double()
    per_band = z.transpose(0, 2).reshape(z.shape[2], -1)  # (F, examples · frames)
    torch.testing.assert_close(per_band.mean(dim=1), torch.zeros(z.shape[2], dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(per_band.std(dim=1, unbiased=False), torch.ones(z.shape[2], dtype=torch.float64),
                               atol=1e-3, rtol=0)


def test_waveform_gradient_matches_finite_differences() -> None:
    """Float64 victim: ``<∇_x f, v>`` against a central difference of the true-class logit."""
    frontend, backbone = CASES["stft_db+resnet56"]
    v = build_victim(frontend, backbone, CLASSES, SAMPLE_RATE, NUM_SAMPLES).double()
    v.normalizer.fit([v.features(waves(6, 12, torch.float64))])
    v.eval()
    x = waves(1, 13, torch.float64).requires_grad_(True)
    v.logits_fn("waveform")(x)[0, 1].backward()
    grad = x.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    direction = torch.randn_like(x) / NUM_SAMPLES ** 0.5
    h = 1e-6
    with torch.no_grad():
        numeric = (v(x + h * direction)[0, 1] - v(x - h * direction)[0, 1]) / (2 * h)
    torch.testing.assert_close((grad * direction).sum(), numeric, rtol=1e-4, atol=1e-8)


def test_waveform_gradient_reaches_a_1d_model_through_the_frozen_gammatone() -> None:
    frontend, backbone = CASES["waveform+abdoli_cnn1d"]
    v = build_victim(frontend, backbone, CLASSES, SAMPLE_RATE, NUM_SAMPLES).eval()
    x = waves(2, 14).requires_grad_(True)
    torch.nn.functional.cross_entropy(v(x), torch.tensor([0, 2])).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad.flatten(1).abs().sum(dim=1) > 0).all()
    assert v.backbone.gammatone.weight.grad is None


def test_build_victim_rejects_unknown_names_and_keys() -> None:
    frontend = {"name": "stft_db", "n_fft": 64, "hop": 32}
    with pytest.raises(ConfigError, match="unknown backbone 'resnet57'.*did you mean"):
        build_victim(frontend, {"backbone": "resnet57"}, CLASSES, SAMPLE_RATE, NUM_SAMPLES)
    with pytest.raises(ConfigError, match="unknown key 'dropout' for backbone 'resnet18'"):
        build_victim(frontend, {"backbone": "resnet18", "dropout": 0.1}, CLASSES, SAMPLE_RATE, NUM_SAMPLES)
