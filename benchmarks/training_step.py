"""Per-step time of clean training vs FGSM-mix adversarial training (seed 004 Eq. 14), PGD-AT, TRADES and MART.

Compares, on the same model and batch:
- ``clean``: one forward + backward (training.step "clean");
- ``fgsm_mix``: ours, reusing the clean forward/backward for the input gradient (two passes);
- ``naive``: FGSM-mix without the reuse (a separate pass for the input gradient: three forwards);
- ``art``: ART's ``AdversarialTrainer`` with ``FastGradientMethod`` (ratio 0.5);
- ``pgd_at``, ``trades``, ``mart``: Madry et al. 2018, Zhang et al. 2019, Wang et al. 2020
  (``defense/trades_mart.py``), each with the same ``--inner-steps`` (7, configs/defense/pgd_at.yaml's).

Prints median seconds per step and the ratios fgsm_mix/clean (target ≤ 2.1), naive/clean,
naive/fgsm_mix, art/fgsm_mix, and pgd_at, trades and mart to clean. By pass counts (a step's input-gradient
pass ≈ a training forward + backward), PGD-AT costs steps + 1 training pass + one forward, TRADES steps + 2
training passes + one forward (its KL target), MART steps + 2 training passes. CPU default: timm ResNet-18 on 1×64×64, batch 16; CUDA default:
1×128×256, batch 128, with mixed precision (ART runs in float32: it has no native-AMP path).

    python -m benchmarks.training_step                 # CPU
    python -m benchmarks.training_step --device cuda   # GPU
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time
from typing import Callable

import timm
import torch
import torch.nn.functional as F
from torch import Tensor

from attacks.threat import ball
from defense.objectives import FGSMMix, PGDTraining
from defense.trades_mart import MART, TRADES
from training.step import CleanObjective
from victims.frontends import FrontEnd
from victims.victim import Victim

CLASSES = 10
EPS, ALPHA = 1.5, 0.5


class Reshape(FrontEnd):
    """``(B, 1, H·W) → (B, 1, H, W)``: lets a waveform-shaped batch stand for a representation."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__(16000)
        self.height, self.width = height, width

    @property
    def n_bands(self) -> int:
        return self.height

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.height

    def output_bounds(self) -> tuple[Tensor, Tensor]:
        return torch.full((self.height,), -1.0), torch.full((self.height,), 1.0)

    def forward(self, wave: Tensor) -> Tensor:
        return wave.view(wave.shape[0], 1, self.height, self.width)


def naive_fgsm_mix(victim: Victim, wave: Tensor, labels: Tensor, backward: Callable[[Tensor], None]) -> None:
    """FGSM-mix without reuse: input-gradient pass, then clean and adversarial passes."""
    with torch.no_grad():
        x = victim.represent(wave)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(victim.classify(xg), labels), xg)
    x_adv = victim.bounds("representation").clip(x + EPS * ball("l2").normalize(grad))
    clean, adv = F.cross_entropy(victim.classify(x), labels), F.cross_entropy(victim.classify(x_adv), labels)
    loss = ALPHA * clean + (1 - ALPHA) * adv
    backward(loss)


def interleaved_medians(steps_by_name: dict[str, Callable[[], None]], rounds: int, warmup: int,
                        device: torch.device) -> dict[str, float]:
    """Median wall time of each step function; the methods take turns every round, so a change in the
    machine's load hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in steps_by_name}
    for r in range(warmup + rounds):
        for name, step in steps_by_name.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def torch_step(victim: Victim, objective: Callable[..., object], wave: Tensor, labels: Tensor,
               opt: torch.optim.Optimizer, amp: bool) -> Callable[[], None]:
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext():
            objective(victim, wave, labels, lambda loss: scaler.scale(loss).backward())
        scaler.step(opt)
        scaler.update()

    return step


def art_step(victim: Victim, wave: Tensor, labels: Tensor, device: torch.device) -> Callable[[], None]:
    """One ART AdversarialTrainer step: FGM on half the batch, then one fit on the mixed batch."""
    from art.attacks.evasion import FastGradientMethod
    from art.defences.trainer import AdversarialTrainer
    from art.estimators.classification import PyTorchClassifier

    x = victim.represent(wave).detach().cpu().numpy()
    y = labels.cpu().numpy()
    opt = torch.optim.SGD(victim.backbone.parameters(), lr=0.01, momentum=0.9)
    clf = PyTorchClassifier(victim.backbone, torch.nn.CrossEntropyLoss(), tuple(x.shape[1:]), CLASSES, optimizer=opt,
                            clip_values=(-1.0, 1.0), device_type="gpu" if device.type == "cuda" else "cpu")
    trainer = AdversarialTrainer(clf, FastGradientMethod(clf, norm=2, eps=EPS, batch_size=x.shape[0]), ratio=0.5)

    def step() -> None:
        with contextlib.redirect_stderr(io.StringIO()):  # ART draws two progress bars per fit call
            trainer.fit(x, y, batch_size=x.shape[0], nb_epochs=1)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per method")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--shape", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 is steadiest on a shared machine)")
    parser.add_argument("--no-art", action="store_true", help="skip ART's AdversarialTrainer")
    parser.add_argument("--inner-steps", type=int, default=7, help="PGD-AT, TRADES and MART attack steps")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.set_num_threads(args.threads)
    height, width = args.shape or ((128, 256) if cuda else (64, 64))
    batch, steps = args.batch or (128 if cuda else 16), args.steps or (20 if cuda else 5)
    torch.manual_seed(0)
    backbone = timm.create_model("resnet18", in_chans=1, num_classes=CLASSES)
    names = [str(i) for i in range(CLASSES)]
    victim = Victim(Reshape(height, width), backbone, names, height * width).to(device).train()
    wave = torch.rand(batch, 1, height * width, device=device) * 2 - 1
    labels = torch.randint(0, CLASSES, (batch,), device=device)
    opt = torch.optim.SGD(victim.parameters(), lr=0.01, momentum=0.9)
    k = args.inner_steps
    methods = {"clean": CleanObjective(), "fgsm_mix": FGSMMix(alpha=ALPHA, eps=EPS), "naive": naive_fgsm_mix,
               "pgd_at": PGDTraining(eps=EPS, steps=k), "trades": TRADES(eps=EPS, steps=k),
               "mart": MART(eps=EPS, steps=k)}
    step_fns = {name: torch_step(victim, obj, wave, labels, opt, amp=cuda) for name, obj in methods.items()}
    if not args.no_art:
        step_fns["art"] = art_step(victim, wave, labels, device)
    times = interleaved_medians(step_fns, steps, 1 if not cuda else 3, device)
    print(f"ResNet-18, 1x{height}x{width}, batch {batch}, {device.type}{' + AMP' if cuda else ''}, {steps} steps")
    for name, sec in times.items():
        print(f"  {name:9s} {1000 * sec:9.1f} ms/step")
    print(f"  fgsm_mix / clean    {times['fgsm_mix'] / times['clean']:.2f}  (target <= 2.1)")
    print(f"  naive / clean       {times['naive'] / times['clean']:.2f}")
    print(f"  naive / fgsm_mix    {times['naive'] / times['fgsm_mix']:.2f}")
    if "art" in times:
        print(f"  art / fgsm_mix      {times['art'] / times['fgsm_mix']:.2f}")
    for name in ("pgd_at", "trades", "mart"):
        print(f"  {name} / clean{' ' * (13 - len(name))}{times[name] / times['clean']:.2f}  ({k} inner steps)")


if __name__ == "__main__":
    main()
