"""Seconds to find ε* to 5 % for a batch: per-example budgets in one call per step vs one call per
distinct budget, on the same model, batch and attack, and the ratio.

The harness refines each example's bracket at its own geometric midpoint; an attack that takes one
budget per example (``Attack.per_example_budgets``) does that for the whole batch in one call per step,
otherwise examples are grouped by budget (up to one call per example per step). Both runs must find
the same ε* (the script checks it). CUDA: ResNet-18 (timm) on 256 inputs of 1×128×128; CPU: a small CNN
on 96 inputs of 1×64×64 (about a minute on 2 cores). Absolute times count only on a GPU.

Usage: ``python -m benchmarks.harness [--device cpu|cuda] [--batch N] [--attack bim_a|fgsm|pgd]``.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from attacks import ATTACKS
from evaluation.harness import evaluate_attack
from victims.frontends.waveform import Waveform
from victims.victim import Victim


class Image(nn.Module):
    """Backbone on ``(B, 1, F, T)`` from a flat waveform-domain input reshaped to the image."""

    def __init__(self, net: nn.Module, side: int) -> None:
        super().__init__()
        self.net, self.side = net, side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], 1, self.side, self.side))


def build(device: torch.device) -> tuple[Victim, int]:
    if device.type == "cuda":
        import timm

        side, net = 128, timm.create_model("resnet18", num_classes=10, in_chans=1)
    else:
        side = 64
        net = nn.Sequential(nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.ReLU(),
                            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(64, 10))
    victim = Victim(Waveform(16000), Image(net, side), [str(i) for i in range(10)], side * side)
    return victim.to(device).eval(), side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--attack", default="bim_a", choices=("bim_a", "fgsm", "pgd"))
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    victim, side = build(device)
    n = args.batch or (256 if device.type == "cuda" else 96)
    waves = (torch.rand(n, 1, side * side, device=device) * 2 - 1) * 0.5
    with torch.no_grad():
        labels = victim(waves).argmax(dim=1)
    kwargs = {"norm": "l2", "steps": 5} if args.attack != "fgsm" else {"norm": "l2"}
    grouped_cls = type("Grouped", (ATTACKS.get(args.attack),), {"per_example_budgets": False})
    results = {}
    for name, attack in (("per-example", ATTACKS.create(args.attack, **kwargs)), ("grouped", grouped_cls(**kwargs))):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        ev = evaluate_attack(victim, attack, waves, labels, eps_max=10.0, search_eps_max=40.0, n_budgets=6,
                             batch_size=n, seed=0, name=args.attack)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        results[name] = (time.perf_counter() - start, ev)
        print(f"{name:12s} {results[name][0]:8.2f} s  {ev.attack_calls:4d} attack calls  "
              f"resolution {ev.summary['eps_star_resolution']:.3f}", flush=True)
    a, b = results["per-example"][1].eps_star, results["grouped"][1].eps_star
    differ = a != b
    both = differ & a.isfinite() & b.isfinite()
    gap = f", largest relative gap {float(((a - b).abs() / torch.minimum(a, b))[both].max()):.3f}" if both.any() else ""
    why = (f" ({int(differ.sum())} of {n} differ{gap}: batches of other compositions may run other kernels)"
           if differ.any() else "")
    print(f"{args.attack} on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"batch {n}: grouped / per-example = {results['grouped'][0] / results['per-example'][0]:.2f}x; "
          f"same eps*: {not differ.any()}{why}")


if __name__ == "__main__":
    main()
