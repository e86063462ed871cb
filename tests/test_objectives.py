"""Adversarial-training objectives against naive two-graph computations, pass counts and configs."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from defense import objectives as O
from tiny import CLASS_NAMES, NUM_SAMPLES, TinyLogSpec, make_victim, tones, trained_victim
from defense.config import load_option, options
from defense.defended_victim import INPUT_TRANSFORM, defend
from victims.registry import ConfigError
from victims.frontends.waveform import Waveform
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
        size = (adv - x).flatten(1)
        size = size.abs().amax(dim=1) if norm == "linf" else size.norm(dim=1)
        assert (size <= 0.8 + 1e-5).all() and bounds.contains(adv).all()
        assert not torch.equal(adv, x)
    fast = O.FastFGSM(eps=0.8, norm=norm)
    assert fast.steps == 1 and fast.step_size == pytest.approx(1.0) and fast.random_start


class BNDropNet(nn.Module):
    """Conv → BatchNorm → ReLU → dropout → pool → linear: a backbone whose train mode has side effects."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.drop, self.pool, self.fc = nn.Dropout(0.5), nn.AdaptiveAvgPool2d((4, 1)), nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.drop(F.relu(self.bn(self.conv(x))))).flatten(1))


def _bn_victim() -> Victim:
    torch.manual_seed(0)
    victim = Victim(TinyLogSpec(), BNDropNet(), CLASS_NAMES, NUM_SAMPLES)
    victim.normalizer.fit([victim.features(tones(20)[0])])
    with torch.no_grad():
        victim.train()(tones(4, seed=9)[0])  # running statistics away from their initial values
    return victim


def _bn_state(victim: Victim) -> list[Tensor]:
    bn = victim.backbone.bn
    return [bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()]


PGD, FAST, FGSM_ONLY = O.PGDTraining(eps=0.5, steps=3), O.FastFGSM(eps=0.5), O.FGSMMix(alpha=0.0, eps=0.5)
Craft = Callable[[Victim, Tensor, Tensor], Tensor]
CRAFTS: dict[str, tuple[O.FGSMMix | O.PGDTraining, Craft]] = {  # objective, its attack written out
    "pgd_at": (PGD, lambda v, x, y: PGD.perturb(v.classify, x, y, v.bounds("representation"))),
    "fast_fgsm": (FAST, lambda v, x, y: FAST.perturb(v.classify, x, y, v.bounds("representation"))),
    "fgsm_only": (FGSM_ONLY, lambda v, x, y: O.fgsm(v.classify, x, y, 0.5, "l2", v.bounds("representation"))[0]),
}


@pytest.mark.parametrize("name", list(CRAFTS))
def test_attack_and_bookkeeping_passes_have_no_batchnorm_or_dropout_side_effects(name: str) -> None:
    """One step = x' crafted in eval mode, then exactly one training forward on x'; the reported
    clean logits are the eval-mode ones (deterministic)."""
    objective, craft = CRAFTS[name]
    victim = _bn_victim()
    waves, labels = tones(3, seed=5)
    before = copy.deepcopy(victim).eval()
    torch.manual_seed(1)
    out = objective(victim, waves, labels, lambda loss: loss.backward())
    assert victim.training
    reference = copy.deepcopy(before)
    torch.manual_seed(1)
    x = reference.represent(waves)
    x_adv = craft(reference, x, labels)
    reference.train().classify(x_adv)  # the step's one training forward
    for got, want in zip(_bn_state(victim), _bn_state(reference)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(out.logits, before.classify(x))


@pytest.mark.parametrize("name", list(CRAFTS))
def test_robust_logits_are_eval_mode_and_leave_no_trace(name: str) -> None:
    objective, craft = CRAFTS[name]
    victim = _bn_victim()
    waves, labels = tones(3, seed=5)
    state = _bn_state(victim)
    torch.manual_seed(2)
    logits = objective.robust_logits(victim, waves, labels)
    assert victim.training and not logits.requires_grad
    assert all(p.grad is None for p in victim.parameters())
    assert all(torch.equal(a, b) for a, b in zip(_bn_state(victim), state))
    torch.manual_seed(2)
    x_adv = craft(victim.eval(), victim.represent(waves), labels)
    with torch.no_grad():
        torch.testing.assert_close(logits, victim.classify(x_adv))


def test_defense_configs_build_registered_objectives() -> None:
    names = options("defense", CONFIGS)
    assert {"none", "fgsm_mix", "fgsm_only", "pgd_at", "fast_fgsm"} <= set(names)
    for option in names:
        cfg = load_option("defense", option, CONFIGS)
        if cfg["name"] == INPUT_TRANSFORM:  # not an objective: wraps a trained 8 kHz model at evaluation
            wave_victim = Victim(Waveform(8000), nn.Flatten(), ["a"], 400)
            assert defend(wave_victim, cfg)(torch.zeros(2, 1, 400)).shape == (2, 400)
            continue
        if cfg.get("eps") == "auto":  # resolved by the grid runner from the original model
            cfg.update(eps=1.0)
            del cfg["eps_fraction"]
        objective = O.OBJECTIVES.create(cfg.pop("name"), **cfg)
        assert callable(objective)
    fgsm_only = load_option("defense", "fgsm_only", CONFIGS)
    assert fgsm_only.pop("name") == "fgsm_mix" and O.FGSMMix(**fgsm_only).alpha == 0
    with pytest.raises(ConfigError, match="alpha"):
        O.OBJECTIVES.create("fgsm_mix", alpha=1.5)
    with pytest.raises(ConfigError, match="norm"):
        O.OBJECTIVES.create("pgd_at", norm="l1")
    with pytest.raises(ConfigError, match="domain"):
        O.OBJECTIVES.create("fast_fgsm", domain="spectrum")
    with pytest.raises(ConfigError):
        O.OBJECTIVES.create("fgsm_mix", epsilon=0.1)


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


def test_auto_eps_needs_a_grid() -> None:
    from defense.pipeline import build_objective
    from victims.registry import ConfigError

    with pytest.raises(ConfigError, match="eps: auto is measured on the original model"):
        build_objective({"name": "fgsm_mix", "eps": "auto"})
