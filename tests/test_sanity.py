"""Sanity checks flag deliberately broken cases and pass healthy ones."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.base import Attack, RunOutput
from attacks.losses import class_margin
from evaluation import sanity as S
from evaluation.harness import evaluate_attack
from known_eps import Threshold, line_victim, waves_with_thresholds
from tiny import CLASS_NAMES, NUM_SAMPLES, TinyLogSpec, make_victim, tones, trained_victim
from victims.victim import Victim

THRESHOLDS = [0.1, 0.3, 0.5, 0.7, 0.9, 1.1, 1.3, 1.5, 1.7, 3.0]


def evaluation(scale: float, **kw: object):  # type: ignore[no-untyped-def]
    attack = Threshold(scale=scale)
    return evaluate_attack(line_victim(), attack, waves_with_thresholds(THRESHOLDS),
                           torch.zeros(len(THRESHOLDS), dtype=torch.long), eps_max=2.0, n_budgets=5, n_bisect=2,
                           name=f"x{scale}", **kw)


def test_monotone_success() -> None:
    healthy = torch.tensor([[0, 0, 1], [0, 1, -1], [1, 1, -1]], dtype=torch.int8)
    assert S.check_monotone(healthy).status == "pass"
    broken = torch.tensor([[0, 1], [1, 1], [0, 1]], dtype=torch.int8)  # example 0: success then failure
    rec = S.check_monotone(broken)
    assert rec.status == "warn" and rec.detail.startswith("1 of 2") and rec.name == "monotone_success"
    assert S.check_monotone(evaluation(1.0, sweep_chunk=5)).status == "pass"
    assert "by construction" in S.check_monotone(replace(evaluation(1.0), fixed_budget=False)).detail
    unchecked = S.check_monotone(evaluation(1.0, sweep_chunk=1))  # pure cascade: one budget per example
    assert unchecked.status == "warn" and "not checked" in unchecked.detail
    assert set(unchecked.as_dict()) == {"name", "status", "detail"}


class Band(Threshold):
    """Moves by ε only while ε < 1, else not at all: success falls once ε passes 1."""

    def run(self, model, x, labels, targets, bounds, eps) -> RunOutput:  # type: ignore[no-untyped-def]
        return super().run(model, x, labels, targets, bounds, eps if eps < 1 else 0.0)


def test_monotone_sweep_reattacks_every_budget() -> None:
    waves, labels = waves_with_thresholds(THRESHOLDS), torch.zeros(len(THRESHOLDS), dtype=torch.long)
    eps = [0.25, 0.5, 2.0, 1.0]
    assert S.check_monotone_sweep(line_victim(), Threshold(), waves, labels, epsilons=eps).status == "pass"
    rec = S.check_monotone_sweep(line_victim(), Band(), waves, labels, epsilons=eps, batch_size=3)
    # thresholds 0.1 and 0.3 break at budget 0.5, then fail at 1 and 2 where Band stops moving
    assert rec.status == "warn" and rec.detail.startswith("2 of 2")


class PGD2(Attack):
    """Plain L2 PGD on the margin loss in the representation domain (20 steps of ε/4)."""

    norm = "l2"
    fixed_budget = True

    def run(self, model, x, labels, targets, bounds, eps) -> RunOutput:  # type: ignore[no-untyped-def]
        adv = x.clone()
        for _ in range(20):
            adv.requires_grad_(True)
            (g,) = torch.autograd.grad(-class_margin(model(adv), labels).sum(), adv)
            g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            d = adv.detach() + eps / 4 * g - x
            d = d * (eps / d.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1).view(-1, 1, 1, 1)
            adv = bounds.clip(x + d)
        return RunOutput(adv.detach(), torch.full((x.shape[0],), 20))


class Null(Attack):
    """Returns the clean input: an attack that is broken."""

    norm = "l2"
    fixed_budget = True

    def run(self, model, x, labels, targets, bounds, eps) -> RunOutput:  # type: ignore[no-untyped-def]
        return RunOutput(x.clone(), torch.zeros(x.shape[0], dtype=torch.long))


def test_unbounded_attack_reaches_full_success() -> None:
    victim = trained_victim()
    waves, labels = tones(3, seed=11)
    rec = S.check_unbounded(victim, PGD2(), waves, labels, eps=1000.0, threshold=0.99, batch_size=4)
    assert rec.status == "pass", rec.detail
    rec = S.check_unbounded(victim, Null(), waves, labels, eps=1000.0)
    assert rec.status == "warn" and "fools 0.000" in rec.detail
    targeted = PGD2(targeted=True)
    with pytest.raises(ValueError, match="untargeted"):
        S.check_unbounded(victim, targeted, waves, labels, eps=1.0)


def test_iterative_beats_single_step_and_ordering() -> None:
    strong, mid, weak = evaluation(2.0), evaluation(1.0), evaluation(0.5)
    assert S.check_iterative_beats_single(strong, weak).status == "pass"
    rec = S.check_iterative_beats_single(weak, strong)
    assert rec.status == "warn" and "worst FR deficit" in rec.detail
    assert S.check_attack_ordering(strong, mid, weak).status == "pass"
    assert S.check_attack_ordering(strong, None, weak).status == "pass"
    assert S.check_attack_ordering(strong, weak, mid).status == "warn"
    other = evaluation(1.0)
    other.norm = "linf"
    rec = S.check_iterative_beats_single(strong, other)
    assert rec.status == "warn" and "not comparable" in rec.detail


class DeadReLU(nn.Module):
    """Every unit is dead: the input gradient is exactly zero."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.LazyLinear(len(CLASS_NAMES))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(F.relu(x.flatten(1) - 1e6))


class WhereSqrt(nn.Module):
    """``where(x > big, sqrt(x), x)``: the untaken sqrt branch makes the gradient NaN for x < 0."""

    def forward(self, x: Tensor) -> Tensor:
        h = torch.where(x > 1e6, x.sqrt(), x).flatten(1)
        return torch.stack([h.mean(dim=1), -h.mean(dim=1), h[:, 0]], dim=1)


def _victim(backbone: nn.Module) -> Victim:
    victim = Victim(TinyLogSpec(), backbone, CLASS_NAMES, NUM_SAMPLES)
    victim.normalizer.fit([victim.frontend(tones(5)[0])])
    return victim


def test_gradients_finite_and_nonzero() -> None:
    waves, labels = tones(2, seed=3)
    for domain in ("representation", "waveform"):
        assert S.check_gradients(make_victim(), waves, labels, domain).status == "pass"
        assert S.check_gradients(trained_victim(), waves, labels, domain, loss="margin").status == "pass"
    saturated = S.check_gradients(trained_victim(), waves, labels)  # softmax is exactly 1 in float32
    assert saturated.status == "warn" and "0 of 6 examples with non-finite" in saturated.detail
    assert saturated.name == "gradients_representation_ce"
    for loss in ("ce", "margin"):
        dead = S.check_gradients(_victim(DeadReLU()), waves, labels, loss=loss)
        assert dead.status == "warn" and "6 with zero gradient" in dead.detail
        nan = S.check_gradients(_victim(WhereSqrt()), waves, labels, loss=loss)
        assert nan.status == "warn" and "6 examples with non-finite" in nan.detail


class Noisy(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)[:, :3] + torch.randn(x.shape[0], 3)


def test_deterministic() -> None:
    waves, _ = tones(2)
    assert S.check_deterministic(trained_victim(), waves).status == "pass"
    assert S.check_deterministic(_victim(Noisy()), waves).status == "warn"


def test_gradient_masking_flags_a_naive_attack_that_needs_clearly_more() -> None:
    adaptive = evaluation(1.0)
    same = S.check_gradient_masking(evaluation(1.0), adaptive, n_boot=200)
    assert same.status == "pass" and same.name == "gradient_masking.x1.0"
    masked = S.check_gradient_masking(evaluation(0.5), adaptive, n_boot=200)  # naive eps* = 2 x adaptive eps*
    assert masked.status == "warn" and "robustness from gradient masking" in masked.detail
    assert masked.detail.startswith("median naive/adaptive eps* 2")
    stronger_naive = S.check_gradient_masking(evaluation(2.0), adaptive, n_boot=200)
    assert stronger_naive.status == "pass"
    blind = S.check_gradient_masking(evaluation(1e-6), adaptive, n_boot=200)  # naive never breaks a clip
    assert blind.status == "warn" and "inf [inf, inf]" in blind.detail
    nothing = S.check_gradient_masking(adaptive, evaluation(1e-6), n_boot=200)
    assert nothing.status == "pass" and "not compared" in nothing.detail
