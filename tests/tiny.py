"""Tiny, quickly trained victims on synthetic tones, a small victim built from registry names, and white noise for
audio files, shared by the attack, harness, training and bad-input tests.

The front-end here is a deliberately small log-power STFT (n_fft 32) so tests stay fast; the real
front-ends are tested on their own in ``tests/test_frontends*.py``.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from victims.frontends import FrontEnd
from victims.victim import Victim, build_victim

SAMPLE_RATE = 800
NUM_SAMPLES = 160
CLASS_NAMES = ["low", "mid", "high"]


class TinyLogSpec(FrontEnd):
    """``10·log10(|STFT|² + 1e-6)`` with n_fft 32, hop 16: ``(B, 1, T) → (B, 1, 17, frames)``."""

    def __init__(self, sample_rate: int = SAMPLE_RATE, n_fft: int = 32, hop: int = 16) -> None:
        super().__init__(sample_rate)
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft))

    @property
    def n_bands(self) -> int:
        return self.n_fft // 2 + 1

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop + 1

    def output_bounds(self) -> tuple[Tensor, Tensor]:
        top = 10 * math.log10(float(self.window.sum()) ** 2 + 1e-6)
        return torch.full((self.n_bands,), -60.0), torch.full((self.n_bands,), top)

    def forward(self, wave: Tensor) -> Tensor:
        spec = torch.stft(wave.squeeze(1), self.n_fft, self.hop, window=self.window.to(wave.dtype),
                          return_complex=True)
        return (10 * torch.log10(spec.abs().pow(2) + 1e-6)).unsqueeze(1)


class TinyNet(nn.Module):
    """Conv → ReLU → average pool to 4 frequency cells × 1 frame → linear."""

    def __init__(self, num_classes: int = 3, width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((4, 1))
        self.fc = nn.Linear(width * 4, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(F.relu(self.conv(x))).flatten(1))


def tones(n_per_class: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Sine tones at 80 / 200 / 320 Hz with random phase, amplitude and a little noise."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(NUM_SAMPLES, dtype=torch.float64) / SAMPLE_RATE
    waves, labels = [], []
    for label, freq in enumerate((80.0, 200.0, 320.0)):
        phase = torch.rand(n_per_class, 1, generator=gen, dtype=torch.float64) * 2 * math.pi
        amp = 0.2 + 0.5 * torch.rand(n_per_class, 1, generator=gen, dtype=torch.float64)
        noise = 0.02 * torch.randn(n_per_class, NUM_SAMPLES, generator=gen, dtype=torch.float64)
        waves.append(amp * torch.sin(2 * math.pi * freq * t + phase) + noise)
        labels.append(torch.full((n_per_class,), label))
    return torch.cat(waves).unsqueeze(1).clamp(-1, 1).to(dtype), torch.cat(labels)


def make_victim(seed: int = 0) -> Victim:
    """An untrained tiny victim (normaliser fitted on tones)."""
    torch.manual_seed(seed)
    fe = TinyLogSpec()
    victim = Victim(fe, TinyNet(len(CLASS_NAMES)), CLASS_NAMES, NUM_SAMPLES)
    waves, _ = tones(20, seed=seed)
    victim.normalizer.fit([fe(waves)])
    return victim


@lru_cache(maxsize=4)
def _trained_state(seed: int, steps: int) -> dict[str, Tensor]:
    victim = make_victim(seed)
    waves, labels = tones(30, seed=seed + 1)
    opt = torch.optim.Adam(victim.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(victim(waves), labels).backward()
        opt.step()
    return {k: v.clone() for k, v in victim.state_dict().items()}


def trained_victim(seed: int = 0, steps: int = 60) -> Victim:
    """A tiny victim trained to near-perfect accuracy on :func:`tones` (cached per process)."""
    victim = make_victim(seed)
    victim.load_state_dict(_trained_state(seed, steps))
    return victim.eval()


def registry_victim() -> Victim:
    """A small victim built from registry names (so its checkpoint rebuilds from its spec)."""
    torch.manual_seed(0)
    return build_victim({"name": "stft_db", "n_fft": 64, "hop": 32}, {"backbone": "koerich_cnn2d", "dense": 16},
                        CLASS_NAMES, SAMPLE_RATE, NUM_SAMPLES)


def noise(seed: int, seconds: float, rate: int) -> np.ndarray:
    """White noise (standard deviation 0.3, clipped to [-1, 1]) as float32 samples, for writing audio files."""
    return np.clip(0.3 * np.random.default_rng(seed).standard_normal(round(rate * seconds)), -1, 1).astype(np.float32)
