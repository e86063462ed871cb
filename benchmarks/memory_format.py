"""Channels-last vs contiguous (NCHW) weights for every 2D backbone: forward, input gradient, training step.

Attacks spend their time in forwards and in gradients with respect to the input (``torch.autograd.grad`` on the
representation), training in forward + backward with weight gradients. oneDNN (CPU) and cuDNN (GPU) run
convolutions faster on NHWC ("channels-last") tensors; :func:`victims.victim.build_backbone` therefore builds every
2D backbone with channels-last weights (PyTorch's memory-format tutorial; the input may stay NCHW: the first
convolution converts it). This script measures what that buys on the same model, batch and input, each format's
median over interleaved rounds (so a change in the machine's load hits both alike), and prints the ratio
NCHW / channels-last (> 1: channels-last is faster) and the largest logit difference between the formats, relative
to the largest logit. The timing loop is ``benchmarks/training_step.py``'s ``interleaved_medians`` (one warm-up round).

CPU default: the demo's input (STFT-dB, 128-point window at 8 kHz on 0.25 s clips: 65 × 32), batch 150 for the
attack passes (the demo's ``evaluation.batch_size``) and 32 for a training step. ``--device cuda``: seed 004's
input size for a 2048-point STFT on 5 s clips at 16 kHz (1025 × 157) with bfloat16 autocast, batch 64 / 32.

    python -m benchmarks.memory_format                  # CPU, every 2D backbone
    python -m benchmarks.memory_format --device cuda
    python -m benchmarks.memory_format --backbones resnet18 vgg16 --rounds 5
"""
from __future__ import annotations

import argparse
import contextlib
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.training_step import interleaved_medians
from victims.victim import build_backbone

BACKBONES_2D = ("resnet18", "resnet34", "resnet56", "vgg16", "alexnet", "googlenet", "averagepool_cnn",
                "koerich_cnn2d")
CLASSES = 6


def passes(net: nn.Module, x: Tensor, labels: Tensor, train_batch: int, amp: bool) -> dict[str, Callable[[], None]]:
    """The three timed passes of one model: forward, input gradient, training step."""
    autocast = (lambda: torch.autocast(x.device.type, dtype=torch.bfloat16)) if amp else contextlib.nullcontext

    def forward() -> None:
        with torch.no_grad(), autocast():
            net.eval()(x)

    def input_gradient() -> None:
        xg = x.clone().requires_grad_(True)
        with autocast():
            loss = F.cross_entropy(net.eval()(xg).float(), labels)
        torch.autograd.grad(loss, xg)

    def train_step() -> None:
        net.train().zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(net(x[:train_batch]).float(), labels[:train_batch])
        loss.backward()

    return {"forward": forward, "input gradient": input_gradient, "training step": train_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES_2D))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=2, default=None, help="input (bands, frames)")
    parser.add_argument("--batch", type=int, default=None, help="batch of the attack passes")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    shape = tuple(args.shape or ((1025, 157) if cuda else (65, 32)))
    batch = args.batch or (64 if cuda else 150)
    train_batch = min(32, batch)
    torch.manual_seed(0)
    x = torch.randn(batch, 1, *shape, device=device)
    labels = torch.randint(0, CLASSES, (batch,), device=device)
    print(f"# Channels-last vs NCHW weights on {device} ({torch.get_num_threads()} threads), input {shape}, "
          f"batch {batch} (training step {train_batch}){', bfloat16 autocast' if cuda else ''}, "
          f"median of {args.rounds} interleaved rounds; ratio = NCHW / channels-last")
    print("backbone         pass              NCHW s  channels-last s  ratio   logit diff (rel.)")
    for name in args.backbones:
        net = build_backbone({"backbone": name}, CLASSES, shape, 8000).to(device)
        reference = build_backbone({"backbone": name}, CLASSES, shape, 8000).to(device)
        reference.load_state_dict(net.state_dict())
        reference = reference.to(memory_format=torch.contiguous_format)  # build_backbone's weights are NHWC
        with torch.no_grad():
            logits = reference.eval()(x[:8])
            diff = ((net.eval()(x[:8]) - logits).abs().max() / logits.abs().max()).item()
        formats = {"nchw": passes(reference, x, labels, train_batch, cuda),
                   "channels_last": passes(net, x, labels, train_batch, cuda)}
        steps = {f"{fmt}/{p}": fns[p] for p in formats["nchw"] for fmt, fns in formats.items()}  # formats alternate
        found = interleaved_medians(steps, args.rounds, 1, device)
        for pass_name in formats["nchw"]:
            nchw, nhwc = found[f"nchw/{pass_name}"], found[f"channels_last/{pass_name}"]
            print(f"{name:16s} {pass_name:16s} {nchw:8.4f}  {nhwc:15.4f}  {nchw / nhwc:5.2f}×  {diff:.2e}")


if __name__ == "__main__":
    main()
