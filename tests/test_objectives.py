"""Adversarial-training objectives against naive two-graph computations, pass counts and configs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from defense import objectives as O
from tiny import make_victim, tones, trained_victim
from training.objective import OBJECTIVES
from victims.config import load_option, options
from victims.registry import ConfigError
from victims.victim import Victim

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _batch() -> tuple[Victim, Tensor, Tensor]:
    victim = trained_victim(steps=5).train()  # not yet saturated: clean and adversarial gradients both matter
    waves, labels = tones(3, seed=5)
    return victim, waves, labels


def _grads(victim: Victim) -> list[Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in victim.parameters()]


def naive_fgsm_mix(victim: Victim, wave: Tensor, labels: Tensor, alpha: float, eps: float, norm: str,
                   domain: str) -> list[Tensor]:
    """∇θ of α·CE(x) + (1−α)·CE(fgsm(x)) with the FGSM example from its own, separate graph."""
    model = victim.classify if domain == "representation" else victim.forward
    x = victim.represent(wave).detach() if domain == "representation" else wave.detach()
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xg), labels), xg)
    step = g.sign() if norm == "linf" else g / g.flatten(1).norm(dim=1).view(-1, *[1] * (g.dim() - 1))
    x_adv = victim.bounds(domain).clip(x + eps * step)
    victim.zero_grad(set_to_none=True)
    (alpha * F.cross_entropy(model(x), labels) + (1 - alpha) * F.cross_entropy(model(x_adv), labels)).backward()
    return _grads(victim)


@pytest.mark.parametrize("domain,norm,eps", [("representation", "l2", 1.5), ("representation", "linf", 0.3),
                                             ("waveform", "linf", 0.01)])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_fgsm_mix_gradient_equals_naive(alpha: float, domain: str, norm: str, eps: float) -> None:
    victim, waves, labels = _batch()
    expected = naive_fgsm_mix(victim, waves, labels, alpha, eps, norm, domain)
    objective = O.FGSMMix(alpha=alpha, eps=eps, norm=norm, domain=domain)
    for scale in (1.0, 1024.0):  # a GradScaler-like backward multiplies every gradient by its scale
        victim.zero_grad(set_to_none=True)
        out = objective(victim, waves, labels, lambda loss: (scale * loss).backward())
        for got, want in zip(_grads(victim), expected):
            assert torch.allclose(got, scale * want, rtol=1e-4, atol=1e-6 * scale)
    with torch.no_grad():
        assert torch.allclose(out.logits, victim(waves))
    assert out.loss.dim() == 0 and not out.loss.requires_grad


def _count_forwards(victim: Victim) -> dict[str, int]:
    counts = {"frontend": 0, "backbone": 0}
    for name in counts:
        getattr(victim, name).register_forward_hook(lambda *_, n=name: counts.__setitem__(n, counts[n] + 1))
    return counts


@pytest.mark.parametrize("alpha,passes", [(0.0, 2), (0.5, 2), (1.0, 1)])
def test_fgsm_mix_forward_passes(alpha: float, passes: int) -> None:
    waves, labels = tones(2)
    for domain, frontend in (("representation", 1), ("waveform", passes)):
        victim = make_victim().train()
        counts = _count_forwards(victim)
        O.FGSMMix(alpha=alpha, domain=domain)(victim, waves, labels, lambda loss: loss.backward())
        assert counts == {"frontend": frontend, "backbone": passes}


def naive_pgd(victim: Victim, x: Tensor, labels: Tensor, eps: float, steps: int, step_size: float) -> Tensor:
    """Textbook L∞ PGD from the clean point (no random start), in the representation domain."""
    bounds = victim.bounds("representation")
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(victim.classify(adv), labels), adv)
        adv = bounds.clip(torch.min(torch.max(adv.detach() + step_size * g.sign(), x - eps), x + eps))
    return adv


def test_pgd_at_gradient_equals_training_on_naive_pgd_examples() -> None:
    victim, waves, labels = _batch()
    x = victim.represent(waves).detach()
    x_adv = naive_pgd(victim, x, labels, eps=0.5, steps=3, step_size=0.2)
    victim.zero_grad(set_to_none=True)
    F.cross_entropy(victim.classify(x_adv), labels).backward()
    expected = _grads(victim)
    victim.zero_grad(set_to_none=True)
    objective = O.PGDTraining(eps=0.5, steps=3, step_size=0.2, norm="linf", random_start=False)
    out = objective(victim, waves, labels, lambda loss: loss.backward())
    for got, want in zip(_grads(victim), expected):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)
    assert out.loss > F.cross_entropy(victim.classify(x), labels)
    assert objective.step_size == 0.2 and O.PGDTraining(eps=1.4, steps=7).step_size == pytest.approx(0.5)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_adversarial_examples_stay_in_ball_and_bounds(norm: str) -> None:
    victim, waves, labels = _batch()
    x = victim.represent(waves).detach()
    bounds = victim.bounds("representation")
    for objective in (O.FastFGSM(eps=0.8, norm=norm), O.PGDTraining(eps=0.8, steps=4, norm=norm)):
        adv = objective.perturb(victim.classify, x, labels, bounds)
        size = O.project(adv - x, 1e9, norm).flatten(1)
        size = size.abs().amax(dim=1) if norm == "linf" else size.norm(dim=1)
        assert (size <= 0.8 + 1e-5).all() and bounds.contains(adv).all()
        assert not torch.equal(adv, x)
    fast = O.FastFGSM(eps=0.8, norm=norm)
    assert fast.steps == 1 and fast.step_size == pytest.approx(1.0) and fast.random_start


def test_l2_random_start_lies_in_the_ball() -> None:
    x = torch.zeros(500, 1, 2, 1)
    r = O.random_start(x, 2.0, "l2").flatten(1).norm(dim=1)
    assert (r <= 2.0 + 1e-6).all()
    assert float((r <= 2.0 / 2 ** 0.5).double().mean()) == pytest.approx(0.5, abs=0.08)  # area ∝ r² in 2-D


def test_defense_configs_build_registered_objectives() -> None:
    names = options("defense", CONFIGS)
    assert {"none", "fgsm_mix", "fgsm_only", "pgd_at", "fast_fgsm"} <= set(names)
    for option in names:
        cfg = load_option("defense", option, CONFIGS)
        objective = OBJECTIVES.create(cfg.pop("name"), **cfg)
        assert callable(objective)
    fgsm_only = load_option("defense", "fgsm_only", CONFIGS)
    assert fgsm_only.pop("name") == "fgsm_mix" and O.FGSMMix(**fgsm_only).alpha == 0
    with pytest.raises(ConfigError, match="alpha"):
        OBJECTIVES.create("fgsm_mix", alpha=1.5)
    with pytest.raises(ConfigError, match="norm"):
        OBJECTIVES.create("pgd_at", norm="l1")
    with pytest.raises(ConfigError, match="domain"):
        OBJECTIVES.create("fast_fgsm", domain="spectrum")
    with pytest.raises(ConfigError):
        OBJECTIVES.create("fgsm_mix", epsilon=0.1)


@pytest.mark.gpu
def test_fgsm_mix_on_cuda_with_amp_matches_cpu() -> None:
    victim, waves, labels = _batch()
    expected = naive_fgsm_mix(victim, waves, labels, 0.5, 1.5, "l2", "representation")
    victim, waves, labels = victim.cuda(), waves.cuda(), labels.cuda()
    scaler = torch.amp.GradScaler("cuda")
    victim.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.float16):
        O.FGSMMix(alpha=0.5, eps=1.5, norm="l2")(victim, waves, labels, lambda loss: scaler.scale(loss).backward())
    got = torch.cat([p.grad.flatten() for p in victim.parameters()]).float().cpu() / scaler.get_scale()
    want = torch.cat([g.flatten() for g in expected])
    assert torch.isfinite(got).all() and F.cosine_similarity(got, want, dim=0) > 0.99
