"""Adaptive attacks on input-transform defenses (Athalye, Carlini & Wagner 2018): known answers.

- BPDA breaks a hard quantiser that defeats the naive gradient attack: ``round`` has zero gradient, so
  naive BIM never moves (success exactly 0), while BIM with the straight-through backward pass fools
  the quantised tiny victim on almost every tone.
- EoT recovers the success rate the naive attack loses on a random transform, on a classifier with
  shattered gradients where the arithmetic is known (see :func:`test_eot_recovers_what_single_draw_gradients_lose`).
- The harness: naive ε* is ∞ everywhere, BPDA's is finite.
- Every attack takes ``bpda``/``eot_samples`` from its config; gradient-free attacks refuse them, and
  NES still runs black-box on a defended victim.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from attacks import ATTACKS, create_attack
from attacks.base import GRADIENT_FREE
from defense.config import CONFIG_ROOT, read_yaml
from defense.defended_victim import TransformedVictim, defend
from defense.transforms import TRANSFORMS, InputTransform
from evaluation.harness import evaluate_attack
from tiny import tones, trained_victim
from victims.frontends.waveform import Waveform
from victims.registry import ConfigError
from victims.victim import Victim

QUANTIZE_4 = {"name": "input_transform", "transform": "quantize", "bits": 4}


def _bim(eps: float, **options: object):  # type: ignore[no-untyped-def]
    return create_attack("bim_b", norm="linf", steps=10, rel_stepsize=0.2, domain="waveform", eps=eps, **options)


def test_bpda_breaks_a_quantiser_that_defeats_the_naive_attack() -> None:
    """60 tones, 4-bit quantiser (step 1/8), L∞ budget 0.4 on the waveform. Naive: the gradient is exactly
    zero, so BIM returns the clean input and fools nothing. BPDA (identity backward, and the quantiser's
    approximation, which is the identity): the attack succeeds on ≥ 80 % (it measures 59/60; the
    undefended victim at this budget: 55/60)."""
    victim = trained_victim()
    waves, labels = tones(20, seed=5)
    tv = defend(victim, QUANTIZE_4)
    with torch.no_grad():
        assert bool((tv(waves).argmax(dim=1) == labels).all())  # the defense keeps clean accuracy here
    naive = _bim(0.4)(tv, waves, labels)
    assert int(naive.success.sum()) == 0 and torch.equal(naive.adversarial[0], waves)
    identity = _bim(0.4, bpda="identity")(tv, waves, labels)
    approx = _bim(0.4, bpda="approx")(tv, waves, labels)
    assert int(identity.success.sum()) >= 0.8 * len(labels)
    assert torch.equal(identity.adversarial, approx.adversarial)  # q's approximation is the identity
    assert float((identity.adversarial[0] - waves).abs().max()) <= 0.4 + 1e-6


class Shattered(nn.Module):
    """Margin ``m(x) = mean(x) + a·mean(sin(ω x))``, logits ``[m, −m]`` (class 0 iff ``m > 0``).

    Its gradient ``(1 + aω cos(ω x_i)) / T`` is dominated by the oscillating term (aω = 10), while under
    Gaussian noise with ωσ = 10 the smoothed margin is ``mean(x)`` (``E sin(ω(x+n)) = sin(ωx)·e^{−(ωσ)²/2}``).
    """

    def __init__(self, a: float = 0.05, omega: float = 200.0) -> None:
        super().__init__()
        self.a, self.omega = a, omega

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        m = x.mean(dim=1) + self.a * torch.sin(self.omega * x).mean(dim=1)
        return torch.stack([m, -m], dim=1)


def test_eot_recovers_what_single_draw_gradients_lose() -> None:
    """40 constant clips at levels c ∈ [0.05, 0.15] (T = 64), waveform noise σ = 0.05, BIM-b L∞ ε = 0.3,
    10 steps of 0.2ε; success needs mean(δ) < −c. Per coordinate and step the step goes the right way
    when ``1 + 10·cos θ > 0``. With one draw θ is uniform mod 2π: P = arccos(−0.1)/π = 0.53, a near coin
    flip, so each coordinate random-walks and mean(δ) stays near 0 (E ≈ 2·0.03 of the walk). Averaging 32
    draws turns the term into ``1.25·Z`` (10/√(2·32)): P = Φ(0.8) = 0.79, and the coordinates run to −ε
    (mean(δ) ≈ −0.25 < −0.15). The deployed model decides on one draw; its margin noise,
    σ/√T + a/√(2T) ≈ 0.01, is small next to both gaps. So naive succeeds on ≤ 1/4 of the clips
    (measured 2/40, the lowest levels) and EoT on ≥ 3/4 (measured 40/40)."""
    n, t = 40, 64
    victim = Victim(Waveform(8000), Shattered(), ["pos", "neg"], t)
    tv = defend(victim, {"name": "input_transform", "transform": "gaussian_noise", "sigma": 0.05})
    waves = torch.linspace(0.05, 0.15, n).view(-1, 1, 1).expand(-1, 1, t).contiguous()
    labels = torch.zeros(n, dtype=torch.long)
    torch.manual_seed(1)
    with torch.no_grad():
        assert bool((tv(waves).argmax(dim=1) == 0).all())
    naive = _bim(0.3)(tv, waves, labels)
    eot = _bim(0.3, eot_samples=32)(tv, waves, labels)
    assert int(naive.success.sum()) <= n // 4
    assert int(eot.success.sum()) >= 3 * n // 4
    assert float((eot.adversarial[0] - waves).mean()) < -0.15 < float((naive.adversarial[0] - waves).mean())


def test_the_harness_finds_finite_eps_star_with_bpda_where_naive_finds_none() -> None:
    victim = trained_victim()
    waves, labels = tones(10, seed=6)
    tv = defend(victim, QUANTIZE_4)
    kwargs = dict(eps_max=0.5, n_budgets=4, rtol=0.1, batch_size=30, seed=0)
    naive = evaluate_attack(tv, _bim(None), waves, labels, name="bim_naive", **kwargs)
    bpda = evaluate_attack(tv, _bim(None, bpda="identity"), waves, labels, name="bim_bpda", **kwargs)
    assert naive.base.sum() == len(labels) and bpda.base.sum() == len(labels)
    assert bool(torch.isinf(naive.eps_star).all()) and naive.summary["fooling_auc"] == 0
    finite = torch.isfinite(bpda.eps_star)
    assert int(finite.sum()) >= 0.8 * len(labels) and bool((bpda.eps_star[finite] <= 0.5).all())
    assert bpda.summary["fooling_auc"] > 0


class _Spy(TransformedVictim):
    """Records the options of every ``logits_fn`` call."""

    def __init__(self, victim: Victim, transform: InputTransform) -> None:
        super().__init__(victim, transform)
        self.calls: list[tuple[str, object, int]] = []

    def logits_fn(self, domain, bpda=None, eot_samples=1):  # type: ignore[no-untyped-def]
        self.calls.append((domain, bpda, eot_samples))
        return super().logits_fn(domain, bpda=bpda, eot_samples=eot_samples)


def test_the_attack_differentiates_the_adaptive_model_and_judges_the_deployed_one() -> None:
    spy = _Spy(trained_victim(), TRANSFORMS.create("gaussian_noise", sigma=0.01))
    waves, labels = tones(2)
    result = _bim(0.1, bpda="identity", eot_samples=3)(spy, waves, labels)
    assert spy.calls == [("waveform", "identity", 3), ("waveform", None, 1)]
    assert result.adv_logits.shape == (1, len(labels), 3)
    assert not torch.allclose(result.adv_logits.logsumexp(dim=-1), torch.zeros(1))  # logits, not EoT log-probs


ATTACK_CONFIGS = sorted((CONFIG_ROOT / "attack").glob("*.yaml"))


@pytest.mark.parametrize("path", ATTACK_CONFIGS, ids=[p.stem for p in ATTACK_CONFIGS])
def test_every_attack_config_takes_the_adaptive_options(path: Path) -> None:
    cfg = read_yaml(path)
    name = cfg.pop("name")
    attack = ATTACKS.create(name, **cfg)
    assert (attack.bpda, attack.eot_samples) == (None, 1)
    if attack.family in GRADIENT_FREE:
        with pytest.raises(ConfigError, match="uses no gradient") as err:
            create_attack(name, **cfg, bpda="identity")
        assert "\n" not in str(err.value)
        with pytest.raises(ConfigError, match="uses no gradient"):
            create_attack(name, **cfg, eot_samples=4)
        return
    adaptive = create_attack(name, **cfg, bpda="approx", eot_samples=4)
    assert (adaptive.bpda, adaptive.eot_samples) == ("approx", 4)


@pytest.mark.parametrize("options, message", [
    ({"bpda": "straight_through"}, "attack 'pgd': unknown bpda 'straight_through'; known: null, identity, approx"),
    ({"eot_samples": 0}, "attack 'pgd': eot_samples must be an integer >= 1"),
    ({"eot_samples": 2.5}, "eot_samples must be an integer >= 1"),
    ({"eot_samples": True}, "eot_samples must be an integer >= 1"),
])
def test_bad_adaptive_options_are_one_line_config_errors(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        create_attack("pgd", eps=0.1, **options)
    assert "\n" not in str(err.value)


def test_nes_stays_black_box_on_a_defended_victim() -> None:
    victim = trained_victim()
    waves, labels = tones(4, seed=7)
    tv = defend(victim, {"name": "input_transform", "transform": "gaussian_noise", "sigma": 0.01})
    nes = create_attack("nes", domain="waveform", eps=0.3, sigma=0.01, n_samples=20, learning_rate=0.05,
                        max_iterations=15)
    torch.manual_seed(0)
    result = nes(tv, waves, labels)
    moved = (result.adversarial[0] - waves).abs().amax(dim=(1, 2))
    assert bool((moved <= 0.3 + 1e-6).all()) and bool((moved > 0).all())
    assert bool((result.adversarial[0].abs() <= 1).all())
    assert bool((result.queries > 0).all()) and int(result.success.sum()) >= 1
    assert math.isfinite(float(result.norms.max()))


def test_transform_defenses_are_refused_for_training_but_wrap_a_grid_model() -> None:
    from defense.grid import load_grid
    from defense.pipeline import build_objective

    with pytest.raises(ConfigError, match="input-transform defenses wrap a trained model at evaluation") as err:
        build_objective(read_yaml(CONFIG_ROOT / "defense" / "quantize_8bit.yaml"))
    assert "advaudio experiment defenses" in str(err.value) and "\n" not in str(err.value)
    grid = load_grid("demo", {"grid.defense": ["none", "median_3"]})
    assert grid.defense_config("median_3")["transform"] == "median"
    with pytest.raises(ConfigError, match="wraps base 'none', which is not a trained defense"):
        load_grid("train", {"defense": "median_3"})
    for defense in ("quantize_8bit", "smooth_wave"):  # waveform defenses: the demo's representation attacks bypass them
        with pytest.raises(ConfigError, match=f"defense '{defense}' acts on the waveform; attack 'bim_a' works on the "
                                              "representation and would bypass it"):
            load_grid("demo", {"grid.defense": ["none", defense]})
