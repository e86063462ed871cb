"""Optimality of a grid's attacks (AttackBench, Cinà et al. 2024) and ours vs foolbox's FMN and
torchattacks' APGD at equal iterations, on the grid's own trained models and clips.

Reads a finished grid's store (default the demo's: ``advaudio experiment demo --outputs DIR`` first). For each model
of its first column, on the first ``--clips`` evaluation clips (the runner's seeded selection):

1. every stored attack run of the representation-L2 group (FGSM, BIM-a, DeepFool, C&W, NES...: their per-clip ε*
   records, nothing re-run) plus two long reference runs of our FMN-L2 (``--reference-steps``, initial step 1 and
   0.1: a restart with another schedule), all through the harness with the grid's own budgets and per-band bounds;
   each attack's optimality against the per-clip best (:mod:`evaluation.optimality`: share within 5 % of the best
   with its Wilson interval, mean and median excess, clips missed);
2. peers at equal iterations (100), on one scalar box for every library (the widest band's range; torchattacks
   needs [0, 1], so APGD runs on ``u`` with representation ``lo + u·(hi − lo)``): our FMN-L2 vs foolbox's
   ``L2FMNAttack`` (median per-clip ε* ratio, ∞ where one failed; wall-time ratio) and our APGD-CE L2 vs
   torchattacks' ``APGD`` at the grid's ε_max (robust accuracy each; wall-time ratio).

Usage: ``python -m benchmarks.optimality --outputs DIR [--experiment demo] [--clips 40] [--reference-steps 500]
[--device cpu|cuda]``.
"""
from __future__ import annotations

import argparse

import foolbox
import numpy as np
import pandas as pd
import torch
import torchattacks
from torch import Tensor, nn

from attacks import create_attack
from attacks.threat import perturbation_norm
from benchmarks.attack_speed import timed
from benchmarks.stored_models import store_arguments, stored_models
from evaluation.harness import evaluate
from evaluation.optimality import optimality
from victims.bounds import Bounds
from victims.victim import Victim

PEER_STEPS = 100


class UnitBox(nn.Module):
    """A victim's backbone on ``u ∈ [0, 1]``: representation ``lo + u·(hi − lo)`` (torchattacks' box).

    Built in eval mode: torchattacks puts a model back into the mode it found it in, and a wrapper left in
    nn.Module's default training mode would come back with its victim's batch norm in training mode.
    """

    def __init__(self, victim: Victim, lo: float, hi: float) -> None:
        super().__init__()
        self.victim, self.lo, self.width = victim, lo, hi - lo
        self.eval()

    def forward(self, u: Tensor) -> Tensor:
        return self.victim.classify(self.lo + u * self.width)


def model_table(victim: Victim, stored: dict[str, np.ndarray], waves: Tensor, labels: Tensor, grid, steps: int
                ) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """Optimality of the stored attacks and two long FMN reference runs on ``waves``."""
    eps = dict(stored)
    for stepsize in (1.0, 0.1):
        attack = create_attack("fmn", domain="representation", norm="l2", steps=steps, max_stepsize=stepsize)
        seconds, ev = timed(lambda: evaluate(victim, attack, waves, labels, grid.evaluation, name="fmn_l2"),
                           waves.device)
        eps[f"fmn_l2 x{steps} (step {stepsize:g})"] = ev.eps_clip().numpy()
        print(f"  reference FMN-L2, {steps} steps, initial step {stepsize:g}: {seconds:.0f} s")
    return optimality(eps)


def peers(victim: Victim, waves: Tensor, labels: Tensor, eps_max: float) -> list[str]:
    """Ours vs foolbox's FMN and torchattacks' APGD at equal iterations on one scalar box."""
    x = victim.to_domain(waves, "representation")
    box = victim.bounds("representation")
    lo, hi = float(box.lower.min()), float(box.upper.max())
    with torch.no_grad():
        keep = victim.classify(x).argmax(dim=1) == labels
    x, labels = x[keep], labels[keep]

    def fooled(model: nn.Module, adv: Tensor) -> Tensor:
        with torch.no_grad():
            return model(adv).argmax(dim=1) != labels

    fmn = create_attack("fmn", norm="l2", steps=PEER_STEPS)
    t_ours, out = timed(lambda: fmn.run(victim.classify, x, labels, None, Bounds(lo, hi), None), x.device)
    ours = torch.where(fooled(victim.classify, out.adversarial), perturbation_norm(out.adversarial - x, "l2"), torch.inf)
    peer = foolbox.attacks.L2FMNAttack(steps=PEER_STEPS)
    t_fb, (_, adv, ok) = timed(lambda: peer(foolbox.PyTorchModel(victim.backbone, bounds=(lo, hi)), x, labels,
                                            epsilons=None), x.device)
    theirs = torch.where(ok, perturbation_norm(adv - x, "l2"), torch.inf)
    ratio = float(ours.median() / theirs.median())
    lines = [f"FMN-L2, {PEER_STEPS} steps, {len(labels)} clips: median eps* ours {float(ours.median()):.4g}, "
             f"foolbox {float(theirs.median()):.4g} (ratio {ratio:.3f}); broken {int(torch.isfinite(ours).sum())} vs "
             f"{int(torch.isfinite(theirs).sum())}; time ours {t_ours:.1f} s, foolbox {t_fb:.1f} s "
             f"(foolbox / ours {t_fb / t_ours:.2f}x)"]
    unit = UnitBox(victim, lo, hi)
    u = ((x - lo) / (hi - lo)).clamp(0, 1)
    eps_u = eps_max / (hi - lo)  # the same L2 ball in u's units
    torch.manual_seed(0)
    apgd = create_attack("apgd", norm="l2", loss="ce", steps=PEER_STEPS)
    t_ours, out = timed(lambda: apgd.run(unit, u, labels, None, Bounds(0.0, 1.0), eps_u), u.device)
    ta = torchattacks.APGD(unit, norm="L2", eps=eps_u, steps=PEER_STEPS, loss="ce", seed=0)
    t_ta, adv = timed(lambda: ta(u, labels), u.device)
    robust_ours, robust_ta = (1 - float(fooled(unit, a).double().mean()) for a in (out.adversarial, adv))
    lines.append(f"APGD-CE L2 at eps {eps_max:g}, {PEER_STEPS} steps: robust accuracy ours {robust_ours:.3f}, "
                 f"torchattacks {robust_ta:.3f}; time ours {t_ours:.1f} s, torchattacks {t_ta:.1f} s "
                 f"(torchattacks / ours {t_ta / t_ours:.2f}x)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    store_arguments(parser)
    parser.add_argument("--reference-steps", type=int, default=500)
    args = parser.parse_args()
    torch.manual_seed(0)
    grid, models = stored_models(args.outputs, args.experiment, args.clips, args.device)
    eps_max, _ = grid.evaluation.budgets("representation", "l2", "")
    for model in models:
        print(f"\n## {model.defense}")
        table = model_table(model.victim, model.stored, model.waves, model.labels, grid, args.reference_steps)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        for line in peers(model.victim, model.waves, model.labels, eps_max):
            print(line)


if __name__ == "__main__":
    main()
