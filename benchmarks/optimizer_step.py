"""Seconds per optimizer step: PyTorch's default implementation vs its fused kernels (``fused=True``), as
:func:`training.trainer.build_optimizer` builds Adam, AdamW and SGD, and the ratio.

An optimizer step is one pass over every parameter. The default loop on a CPU runs several small ops per tensor, while
the fused kernel runs one. For a backbone with a large dense layer (VGG-16: 134 M parameters at 50 classes), that
step can cost more than the forward and backward of a small batch. Each backbone gets random gradients (the step's
time does not depend on their values). Each pair is timed as the median of interleaved rounds
(``benchmarks/training_step.py``'s ``interleaved_medians``). After those steps (one warm-up plus ``--rounds``), taken
by both from the same weights and gradients, the script also prints the largest difference between the two
implementations' weights, relative to the largest weight.

Usage: ``python -m benchmarks.optimizer_step [--device cpu|cuda] [--backbones resnet18 vgg16] [--rounds 5]``
"""
from __future__ import annotations

import argparse
import copy

import torch
from torch import nn

from benchmarks.training_step import interleaved_medians
from victims.victim import build_backbone

OPTIMIZERS = {"adam": (torch.optim.Adam, {"lr": 1e-3, "weight_decay": 1e-4}),
              "adamw": (torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 1e-4}),
              "sgd": (torch.optim.SGD, {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4})}
CLASSES = 50  # ESC-50, seed 004's largest head


def with_gradients(net: nn.Module, seed: int) -> nn.Module:
    """``net`` with random gradients laid out as autograd lays them out: with the parameter's strides (a
    channels-last weight gets a channels-last gradient). PyTorch 2.11's fused CPU kernels assume that layout: given a
    contiguous gradient for a channels-last weight, fused SGD's update differed from the default one by 0.45."""
    gen = torch.Generator().manual_seed(seed)
    for p in net.parameters():
        p.grad = torch.empty_like(p).copy_(torch.randn(p.shape, generator=gen))
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "vgg16", "alexnet"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 is steadiest on a shared machine)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"optimizer step on {device} ({torch.get_num_threads()} CPU threads), {CLASSES} classes, median of "
          f"{args.rounds} interleaved rounds; ratio = default / fused")
    print(f"{'backbone':10} {'params':>8} {'optimizer':9} {'default s':>10} {'fused s':>9} {'ratio':>6}  weight diff")
    for name in args.backbones:
        net = build_backbone({"backbone": name}, CLASSES, (128, 128), 8000).to(device)
        count = sum(p.numel() for p in net.parameters())
        for label, (cls, kwargs) in OPTIMIZERS.items():
            nets = {kind: with_gradients(copy.deepcopy(net), 0) for kind in ("default", "fused")}
            opts = {kind: cls(nets[kind].parameters(), **kwargs, fused=kind == "fused") for kind in nets}
            times = interleaved_medians({kind: opt.step for kind, opt in opts.items()}, args.rounds, 1, device)
            pairs = zip(nets["default"].parameters(), nets["fused"].parameters())  # the same steps from the same start
            diff = max(float((a - b).detach().abs().max()) for a, b in pairs)
            scale = max(float(p.detach().abs().max()) for p in nets["default"].parameters())
            print(f"{name:10} {count / 1e6:7.1f}M {label:9} {times['default']:10.4f} {times['fused']:9.4f} "
                  f"{times['default'] / times['fused']:6.1f}  {diff / scale:.1e}")


if __name__ == "__main__":
    main()
