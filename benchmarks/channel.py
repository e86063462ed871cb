"""Seconds per clip of the over-the-air channel against one forward pass of a victim.

On a batch of FSDD clips (1 s at 8 kHz, cropped or zero-padded at the end) it times, per clip: one channel draw
(loudspeaker band, room impulse response by FFT convolution, noise; paid for every draw of an over-the-air evaluation
and every EoT sample of an attack step; the random draw included), a draw's forward + backward (what EoT adds to a gradient step), and one
forward pass of the FSDD grid's victim (ResNet-18 on the 128-point STFT-dB, random weights: the time does not depend
on them). Ratios are channel / forward, both in the same run on the same device. The rooms' one-off simulation by
pyroomacoustics (CPU, once per seed and rate, then cached) is printed per room.

Usage: ``python -m benchmarks.channel [--device cpu|cuda] [--batch 32] [--channel room] [--reps 5] [--threads N]``
"""
from __future__ import annotations

import argparse
import time

import torch

from benchmarks.perceptual import RATE, SAMPLES, fsdd_batch, median_seconds, speech_victim
from defense.channel import build_channel, channel_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channel", default="room", help="a configs/channel option")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clean = fsdd_batch(args.batch).to(device)
    victim = speech_victim(device)
    cfg = channel_config(args.channel)
    start = time.perf_counter()
    channel = build_channel(cfg, RATE).to(device)
    simulation = time.perf_counter() - start
    generator = torch.Generator().manual_seed(0)
    draw = channel.draw(args.batch, SAMPLES, generator=generator)  # the fixed draw of the backward timing

    def forward() -> None:
        with torch.no_grad():
            victim(clean)

    def through() -> None:
        with torch.no_grad():
            channel(clean, channel.draw(args.batch, SAMPLES, generator=generator))

    def through_backward() -> None:
        x = clean.clone().requires_grad_()
        channel(x, draw).sum().backward()

    per_clip = {"victim forward": median_seconds(forward, device, args.reps) / args.batch,
                "channel draw": median_seconds(through, device, args.reps) / args.batch,
                "channel fwd+bwd": median_seconds(through_backward, device, args.reps) / args.batch}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    rooms = len(channel.rooms) or channel.responses.shape[0]
    print(f"{name}: {args.batch} FSDD clips of {SAMPLES / RATE:g} s at {RATE} Hz, channel '{args.channel}': "
          f"{rooms} responses of {channel.responses.shape[1]} samples, noise "
          f"{'none' if cfg.snr_db is None else f'{cfg.snr_db:g} dB SNR'}")
    base = per_clip["victim forward"]
    for key, seconds in per_clip.items():
        print(f"  {key:<20} {seconds * 1e3:9.3f} ms/clip   {seconds / base:8.2f}x the victim's forward")
    print(f"  {'room simulation':<20} {simulation / rooms * 1e3:9.3f} ms/room   (once per seed and rate, CPU)")


if __name__ == "__main__":
    main()
