"""Seconds per clip of the psychoacoustic masker against one forward pass of a victim, and against ART's masker.

On a batch of FSDD clips (1 s at 8 kHz, the fsdd data set's length, cropped or zero-padded at the end) it times,
per clip: the masking threshold of the clip (paid once per clip by an attack or a quality score), the perceptual
distance of a perturbation forward + backward (paid at every step of a perceptual-budget attack), and one forward
pass of the FSDD grid's victim (ResNet-18 on the 128-point STFT-dB, random weights: the time does not depend on
them). Ratios are masker / forward, both in the same run on the same device. ART's ``PsychoacousticMasker``
(numpy, one clip at a time, CPU) on the first ``--art-clips`` clips is the reference implementation's time.

Usage: ``python -m benchmarks.perceptual [--device cpu|cuda] [--batch 32] [--n-fft 256] [--hop 64] [--reps 5]
[--threads N]``
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import torch

from attacks.psychoacoustic import PsychoacousticModel
from benchmarks.attack_speed import timed
from defense.config import load_option
from victims.victim import build_victim

RATE = 8000
SAMPLES = 8000
FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd" / "recordings"


def fsdd_batch(count: int) -> torch.Tensor:
    """The first ``count`` FSDD recordings in name order, ``(count, 1, SAMPLES)`` float32."""
    files = sorted(FSDD.glob("*.wav"))[:count]
    if len(files) < count:
        raise SystemExit(f"need {count} FSDD recordings in {FSDD}, found {len(files)}")
    clips = np.zeros((count, 1, SAMPLES), dtype=np.float32)
    for i, path in enumerate(files):
        wave, rate = sf.read(path, dtype="float32")
        if rate != RATE:
            raise SystemExit(f"{path} is at {rate} Hz, not {RATE}")
        clips[i, 0, :min(SAMPLES, len(wave))] = wave[:SAMPLES]
    return torch.from_numpy(clips)


def speech_victim(device: torch.device) -> torch.nn.Module:
    """The reference victim the per-clip costs are a ratio to: an untrained ResNet-18 on the demo's 128-point
    STFT-dB of :func:`fsdd_batch`'s clips, in eval mode."""
    return build_victim(load_option("frontend", "stft_db_128"), load_option("victim", "resnet18"),
                        [str(d) for d in range(10)], RATE, SAMPLES).to(device).eval()


def median_seconds(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    """Median wall seconds of ``reps`` calls after one warm-up call."""
    fn()
    return sorted(timed(fn, device)[0] for _ in range(reps))[reps // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--n-fft", type=int, default=256)
    parser.add_argument("--hop", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--art-clips", type=int, default=1, help="clips for ART's masker (0: skip it)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clean = fsdd_batch(args.batch).to(device)
    delta = (1e-3 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).to(device)
    victim = speech_victim(device)
    model = PsychoacousticModel(RATE, args.n_fft, args.hop)
    masking = model.masking(clean)

    def forward() -> None:
        with torch.no_grad():
            victim(clean)

    def distance_step() -> None:
        d = delta.clone().requires_grad_()
        model.distance(d, masking).sum().backward()

    per_clip = {"victim forward": median_seconds(forward, device, args.reps) / args.batch,
                "masking threshold": median_seconds(lambda: model.masking(clean), device, args.reps) / args.batch,
                "distance fwd+bwd": median_seconds(distance_step, device, args.reps) / args.batch}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{name}: {args.batch} FSDD clips of {SAMPLES / RATE:g} s at {RATE} Hz, masker n_fft {args.n_fft} "
          f"hop {args.hop} ({model.frames(SAMPLES)} frames x {args.n_fft // 2 + 1} bins)")
    base = per_clip["victim forward"]
    for key, seconds in per_clip.items():
        print(f"  {key:<20} {seconds * 1e3:9.3f} ms/clip   {seconds / base:8.2f}x the victim's forward")
    if args.art_clips:
        from art.attacks.evasion.imperceptible_asr.imperceptible_asr import PsychoacousticMasker

        art = PsychoacousticMasker(args.n_fft, args.hop, RATE)
        waves = clean[:args.art_clips, 0].double().cpu().numpy()
        start = time.perf_counter()
        for wave in waves:
            art.calculate_threshold_and_psd_maximum(wave)
        seconds = (time.perf_counter() - start) / len(waves)
        print(f"  {'ART masker (CPU)':<20} {seconds * 1e3:9.3f} ms/clip   {seconds / base:8.2f}x the victim's forward;"
              f" ours {seconds / per_clip['masking threshold']:.1f}x faster")


if __name__ == "__main__":
    main()
