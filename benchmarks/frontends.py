"""Clips per second of every registered front-end, against same-run baselines.

Each front-end is built from ``configs/frontend/<name>.yaml`` and run on a batch of 5 s clips at
22.05 kHz, forward only and forward + backward (what a waveform-domain attack needs), on CPU and,
when available, CUDA (timed with ``torch.cuda.synchronize``). Baselines measured in the same run:
torchaudio's ``Spectrogram`` (batched, same device), librosa's ``feature.tonnetz`` (CQT chroma, its
default) and PyWavelets' ``cwt`` (the config's scales, ``method='fft'``), each per clip on one CPU
core as they are used in practice. Ratios are ours / baseline in clips per second.

Usage: ``python -m benchmarks.frontends [--device cpu|cuda|all] [--batch 64] [--reps 3]``
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np
import torch
import torchaudio

from defense.config import load_option
from victims.frontends import FRONTENDS

RATE = 22050
SECONDS = 5.0
BASELINES = {"stft_db": ("torchaudio Spectrogram",), "mel_db": ("torchaudio Spectrogram",),
             "tonnetz": ("librosa tonnetz",), "stft_tonnetz": ("torchaudio Spectrogram", "librosa tonnetz"),
             "cwt": ("pywt cwt",), "cwt_tonnetz": ("pywt cwt", "librosa tonnetz")}


def clips_per_second(fn: Callable[[], object], clips: int, reps: int, device: torch.device) -> float:
    """Best of ``reps`` timed calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return clips / best


def build(name: str, device: torch.device) -> torch.nn.Module:
    cfg = load_option("frontend", name)
    return FRONTENDS.create(cfg.pop("name"), sample_rate=RATE, **cfg).to(device)


def ours(name: str, wave: torch.Tensor, reps: int) -> tuple[float, float]:
    fe = build(name, wave.device)
    with torch.no_grad():
        fwd = clips_per_second(lambda: fe(wave), wave.shape[0], reps, wave.device)
    grad_wave = wave.clone().requires_grad_()

    def step() -> None:
        grad_wave.grad = None
        fe(grad_wave).mean().backward()

    return fwd, clips_per_second(step, wave.shape[0], reps, wave.device)


def baselines(wave: torch.Tensor, cpu_clips: int, reps: int) -> dict[str, float]:
    """Clips/s of the reference implementations (librosa and pywt per clip on CPU)."""
    import librosa
    import pywt

    spec = torchaudio.transforms.Spectrogram(n_fft=2048, hop_length=512, power=2.0).to(wave.device)
    with torch.no_grad():
        out = {"torchaudio Spectrogram": clips_per_second(lambda: spec(wave), wave.shape[0], reps, wave.device)}
    clips = wave[:cpu_clips, 0].double().cpu().numpy()
    cwt = build("cwt", torch.device("cpu"))
    scales = np.array(cwt.scales)
    cpu = torch.device("cpu")
    out["librosa tonnetz"] = clips_per_second(
        lambda: [librosa.feature.tonnetz(y=c, sr=RATE) for c in clips], len(clips), 1, cpu)
    out["pywt cwt"] = clips_per_second(
        lambda: [pywt.cwt(c, scales, f"cmor{cwt.bandwidth}-{cwt.center}", method="fft") for c in clips],
        len(clips), 1, cpu)
    return out


def combined(rates: list[float]) -> float:
    """Clips/s of running several baselines one after the other."""
    return 1.0 / sum(1.0 / r for r in rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--batch", type=int, default=64, help="clips per batch on CUDA")
    parser.add_argument("--cpu-batch", type=int, default=8, help="clips per batch on CPU")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--baseline-clips", type=int, default=2, help="clips for librosa / pywt")
    args = parser.parse_args()
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    gen = torch.Generator().manual_seed(0)
    for dev in devices:
        device = torch.device(dev)
        batch = args.batch if dev == "cuda" else args.cpu_batch
        wave = (torch.rand(batch, 1, int(RATE * SECONDS), generator=gen) * 2 - 1).mul(0.5).to(device)
        base = baselines(wave, args.baseline_clips, args.reps)
        name_ = torch.cuda.get_device_name(device) if dev == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        print(f"\n{name_}: batch {batch} x {SECONDS:g} s at {RATE} Hz (clips/s; ratio = ours fwd / baseline)")
        for key, rate in base.items():
            print(f"  baseline {key:<24} {rate:12.1f}")
        print(f"  {'front-end':<14} {'fwd':>12} {'fwd+bwd':>12}   baseline")
        for name in FRONTENDS.names():
            fwd, both = ours(name, wave, args.reps)
            ref = BASELINES.get(name)
            note = ""
            if ref:
                ratio = fwd / combined([base[r] for r in ref])
                note = f"{ratio:10.1f}x  vs {' + '.join(ref)}"
            print(f"  {name:<14} {fwd:12.1f} {both:12.1f}   {note}")


if __name__ == "__main__":
    main()
