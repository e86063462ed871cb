"""TRADES and MART (defense/trades_mart.py) against their losses written out in numpy, their inner attacks,
a few training steps and their configs."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from defense import objectives as O
from defense import trades_mart as T
from defense.config import load_option
from tiny import CLASS_NAMES, NUM_SAMPLES, TinyLogSpec, make_victim, tones, trained_victim
from victims.bounds import Bounds
from victims.registry import ConfigError
from victims.victim import Victim

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
Objective = T.TRADES | T.MART


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def trades_numpy(clean: np.ndarray, adv: np.ndarray, y: np.ndarray, beta: float) -> float:
    """Zhang et al. 2019: mean −log p_y(x) + β · mean Σ_k p_k(x) log(p_k(x) / p_k(x'))."""
    p, q = softmax(clean), softmax(adv)
    rows = np.arange(len(y))
    return float(np.mean(-np.log(p[rows, y])) + beta * np.mean(np.sum(p * np.log(p / q), axis=1)))


def mart_numpy(clean: np.ndarray, adv: np.ndarray, y: np.ndarray, lam: float) -> float:
    """Wang et al. 2020: mean [−log q_y − log(1 − max_{k≠y} q_k)] + λ · mean KL(p ‖ q)·(1 − p_y), q = f(x')."""
    p, q = softmax(clean), softmax(adv)
    total = 0.0
    for i, label in enumerate(y):
        q_other = max(q[i, k] for k in range(q.shape[1]) if k != label)
        bce = -math.log(q[i, label]) - math.log(1 - q_other)
        kl = sum(p[i, k] * math.log(p[i, k] / q[i, k]) for k in range(p.shape[1]))
        total += bce + lam * kl * (1 - p[i, label])
    return total / len(y)


CLEAN = np.array([[2.0, 0.5, -1.0], [0.1, 0.3, 0.2], [-1.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
ADV = np.array([[0.5, 1.5, -0.5], [1.0, -0.2, 0.4], [-2.0, 1.0, 1.5], [2.5, 0.0, 2.0]])
LABELS = np.array([0, 1, 1, 0])  # row 3: misclassified on x, its top class on x' is y; the others' is not


def _t(a: np.ndarray) -> Tensor:
    return torch.from_numpy(a)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("beta", [1.0, 6.0])
def test_trades_loss_equals_its_formula_on_fixed_logits(beta: float) -> None:
    got = T.TRADES(beta=beta).loss(_t(CLEAN), _t(ADV), _t(LABELS))
    assert got.item() == pytest.approx(trades_numpy(CLEAN, ADV, LABELS, beta), rel=1e-12)
    same = T.TRADES(beta=beta).loss(_t(CLEAN), _t(CLEAN), _t(LABELS))  # x' = x: the KL vanishes, CE remains
    assert same.item() == pytest.approx(trades_numpy(CLEAN, CLEAN, LABELS, 0.0), rel=1e-12)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("lam", [0.0, 5.0, 6.0])
def test_mart_loss_equals_its_formula_on_fixed_logits(lam: float) -> None:
    got = T.MART(lam=lam).loss(_t(CLEAN), _t(ADV), _t(LABELS))
    assert got.item() == pytest.approx(mart_numpy(CLEAN, ADV, LABELS, lam), rel=1e-12)
    # the boosted CE's second term: row 3's top class on x' is y, so the runner-up (class 2) is boosted
    q = softmax(ADV[3:])[0]
    assert T.boosted_ce(_t(ADV[3:]), _t(LABELS[3:])).item() == pytest.approx(-math.log(q[0]) - math.log(1 - q[2]))
    # the misclassification weight: a clean prediction certain of y switches the KL term off
    sure = np.array([[40.0, 0.0, 0.0]])
    lone = T.MART(lam=lam).loss(_t(sure), _t(ADV[:1]), _t(LABELS[:1])).item()
    assert lone == pytest.approx(T.boosted_ce(_t(ADV[:1]), _t(LABELS[:1])).item(), rel=1e-9)


@pytest.mark.timeout(30)
def test_boosted_ce_stays_finite_where_the_wrong_class_is_certain() -> None:
    """1 − q_k rounds to 0 in float64 at a logit gap of 40; log(1 − q_k) = log 2 − logsumexp(0, 40, 0)."""
    got = T.boosted_ce(torch.tensor([[0.0, 40.0, 0.0]], dtype=torch.float64), torch.tensor([0]))
    lse = 40 + math.log1p(2 * math.exp(-40))
    assert got.item() == pytest.approx((lse - 0.0) - (math.log(2) - lse), rel=1e-12)


def _reference_loss(name: str, clean: Tensor, adv: Tensor, labels: Tensor, weight: float) -> Tensor:
    """The reference implementations' loss in plain probabilities (nothing detached)."""
    p, q = F.softmax(clean, dim=1), F.softmax(adv, dim=1)
    kl = (p * (p.log() - q.log())).sum(dim=1)
    rows = torch.arange(len(labels))
    if name == "trades":
        return -p[rows, labels].log().mean() + weight * kl.mean()
    q_other = q.masked_fill(F.one_hot(labels, q.shape[1]).bool(), -1.0).amax(dim=1)
    bce = -q[rows, labels].log() - (1 - q_other).log()
    return (bce + weight * kl * (1 - p[rows, labels])).mean()


def _build(name: str, domain: str, norm: str = "l2", steps: int = 3) -> Objective:
    eps = {("representation", "l2"): 1.0, ("representation", "linf"): 0.3,
           ("waveform", "l2"): 0.3, ("waveform", "linf"): 0.03}[domain, norm]
    if name == "trades":
        return T.TRADES(beta=6.0, eps=eps, steps=steps, norm=norm, domain=domain)
    return T.MART(lam=5.0, eps=eps, steps=steps, norm=norm, domain=domain)


def _inputs(victim: Victim, waves: Tensor, domain: str) -> tuple[Tensor, nn.Module]:
    if domain == "representation":
        return victim.represent(waves).detach(), victim.classify
    return waves, victim.forward


@pytest.mark.timeout(60)
@pytest.mark.parametrize("domain", ["representation", "waveform"])
@pytest.mark.parametrize("name", ["trades", "mart"])
def test_step_loss_and_gradient_on_the_tiny_model(name: str, domain: str) -> None:
    """One step's loss equals the numpy formula on the tiny model's logits at x and at x' (crafted again from
    the same seed), and its parameter gradient equals autograd of the reference formula."""
    victim = trained_victim(steps=5).train()  # not saturated: both terms matter
    waves, labels = tones(3, seed=5)
    objective = _build(name, domain)
    torch.manual_seed(1)
    out = objective(victim, waves, labels, lambda loss: loss.backward())
    got = [p.grad.clone() for p in victim.parameters()]
    victim.zero_grad(set_to_none=True)

    x, model = _inputs(victim, waves, domain)
    torch.manual_seed(1)
    with O.eval_mode(victim):
        x_adv = objective.perturb(model, x, labels, victim.bounds(domain))
    clean, adv = model(x), model(x_adv)
    formula = trades_numpy if name == "trades" else mart_numpy
    weight = objective.beta if isinstance(objective, T.TRADES) else objective.lam
    expected = formula(clean.detach().double().numpy(), adv.detach().double().numpy(), labels.numpy(), weight)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(out.logits, clean.detach())
    _reference_loss(name, clean, adv, labels, weight).backward()
    for g, p in zip(got, victim.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("domain", ["representation", "waveform"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_inner_attacks_raise_their_loss_inside_the_budget_and_bounds(norm: str, domain: str) -> None:
    """TRADES' attack raises KL(f(x) ‖ f(x')), MART's raises CE(f(x'), y), both above a random point of the same
    ball, and x' stays in the ε-ball and the bounds."""
    victim = trained_victim(steps=10)
    waves, labels = tones(4, seed=3)
    x, model = _inputs(victim, waves, domain)
    bounds = victim.bounds(domain)
    torch.manual_seed(0)
    for name in ("trades", "mart"):
        objective = _build(name, domain, norm, steps=5)
        x_adv = objective.perturb(model, x, labels, bounds)
        x_rand = bounds.clip(x + O.ball(norm).random_start(x, objective.eps))
        with torch.no_grad():
            clean, adv, rand = model(x), model(x_adv), model(x_rand)
        if name == "trades":
            gained, random = T.kl_rows(clean, adv).sum(), T.kl_rows(clean, rand).sum()
        else:
            gained, random = F.cross_entropy(adv, labels), F.cross_entropy(rand, labels)
            assert gained > F.cross_entropy(clean, labels)
        assert gained > 1.5 * random > 0
        size = (x_adv - x).flatten(1)
        size = size.abs().amax(dim=1) if norm == "linf" else size.norm(dim=1)
        assert (size <= objective.eps * (1 + 1e-5)).all() and bounds.contains(x_adv).all()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_zero_gradient_steps_in_a_random_direction(norm: str) -> None:
    """Where the input gradient vanishes (the KL's at x' = x; one underflowing in half precision) the attack
    steps along a Gaussian direction, as TRADES' L2 attack does, instead of staying at its start."""
    x = torch.zeros(2, 1, 4, 5)
    fixed = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    objective = T.TRADES(eps=1.0, steps=3, norm=norm)
    torch.manual_seed(0)
    x_adv = objective.ascend(lambda z: fixed + 0 * z.sum(), x, Bounds(-10.0, 10.0), lambda logits: logits.sum())
    size = (x_adv - x).flatten(1)
    size = size.abs().amax(dim=1) if norm == "linf" else size.norm(dim=1)
    assert (size > 0.5).all() and (size <= 1.0 + 1e-6).all()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("domain", ["representation", "waveform"])
@pytest.mark.parametrize("name", ["trades", "mart"])
def test_training_steps_lower_the_loss(name: str, domain: str) -> None:
    victim = make_victim(seed=1).train()
    waves, labels = tones(4, seed=2)
    objective = _build(name, domain, steps=2)
    opt = torch.optim.Adam(victim.parameters(), lr=0.03)

    def loss_at_seed() -> float:
        torch.manual_seed(7)
        return objective(victim, waves, labels, lambda loss: None).loss.item()

    before = loss_at_seed()
    for _ in range(15):
        opt.zero_grad()
        objective(victim, waves, labels, lambda loss: loss.backward())
        opt.step()
    assert loss_at_seed() < 0.7 * before


class BNNet(nn.Module):
    """Conv → BatchNorm → ReLU → pool → linear: a backbone whose training-mode forward moves running statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.pool, self.fc = nn.AdaptiveAvgPool2d((4, 1)), nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(F.relu(self.bn(self.conv(x)))).flatten(1))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["trades", "mart"])
def test_attack_runs_in_eval_mode_and_robust_logits_leave_no_trace(name: str) -> None:
    """A step moves BatchNorm's statistics exactly as two training forwards (x, then x') after an eval-mode
    attack; robust_logits moves nothing and returns the eval-mode logits of the same x'."""
    torch.manual_seed(0)
    victim = Victim(TinyLogSpec(), BNNet(), CLASS_NAMES, NUM_SAMPLES)
    victim.normalizer.fit([victim.features(tones(20)[0])])
    waves, labels = tones(3, seed=5)
    objective = _build(name, "representation")
    reference = copy.deepcopy(victim)
    torch.manual_seed(1)
    objective(victim.train(), waves, labels, lambda loss: loss.backward())
    torch.manual_seed(1)
    x = reference.represent(waves)
    x_adv = objective.perturb(reference.eval().classify, x, labels, reference.bounds("representation"))
    reference.train().classify(x)
    reference.classify(x_adv)
    for a, b in ((victim.backbone.bn.running_mean, reference.backbone.bn.running_mean),
                 (victim.backbone.bn.running_var, reference.backbone.bn.running_var)):
        torch.testing.assert_close(a, b)
    victim.zero_grad(set_to_none=True)
    state = copy.deepcopy(victim.backbone.bn.state_dict())
    torch.manual_seed(2)
    logits = objective.robust_logits(victim, waves, labels)
    assert victim.training and not logits.requires_grad and all(p.grad is None for p in victim.parameters())
    assert all(torch.equal(v, state[k]) for k, v in victim.backbone.bn.state_dict().items())
    torch.manual_seed(2)
    x = victim.represent(waves)
    with O.eval_mode(victim):
        x_adv = objective.perturb(victim.classify, x, labels, victim.bounds("representation"))
        torch.testing.assert_close(logits, victim.classify(x_adv).detach())


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("name", "kwargs", "match"), [
    ("trades", {"beta": 0.0}, "trades beta must be a finite number > 0, got 0.0"),
    ("trades", {"beta": float("nan")}, "trades beta"),
    ("mart", {"lam": -1.0}, "mart lam must be a finite number >= 0, got -1.0"),
    ("trades", {"steps": 0}, "trades steps must be >= 1, got 0"),
    ("mart", {"step_size": 0.0}, "mart step_size must be > 0"),
    ("mart", {"eps": -0.1}, "defense eps must be > 0"),
    ("trades", {"norm": "l1"}, "unknown defense norm 'l1'"),
    ("mart", {"domain": "spectrum"}, "unknown defense domain 'spectrum'"),
    ("mart", {"beta": 6.0}, "unknown key 'beta' for defense 'mart'"),
    ("trades", {"lam": 6.0}, "unknown key 'lam' for defense 'trades'"),
])
def test_bad_config_keys_are_one_line_config_errors(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        O.OBJECTIVES.create(name, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.timeout(30)
def test_configs_build_the_objectives_in_pgd_at_threat_models() -> None:
    for option, cls in (("trades", T.TRADES), ("mart", T.MART), ("trades_wave", T.TRADES), ("mart_wave", T.MART)):
        cfg = load_option("defense", option, CONFIGS)
        pgd = load_option("defense", "pgd_at_wave" if option.endswith("_wave") else "pgd_at", CONFIGS)
        assert {k: cfg[k] for k in ("eps", "steps", "norm", "domain")} == {k: pgd[k] for k in ("eps", "steps", "norm",
                                                                                               "domain")}
        if cfg["eps"] == "auto":
            assert cfg.pop("eps_fraction") == pgd["eps_fraction"]
            cfg["eps"] = 1.0
        objective = O.OBJECTIVES.create(cfg.pop("name"), **cfg)
        assert isinstance(objective, cls) and objective.step_size == pytest.approx(2.5 * objective.eps / objective.steps)
