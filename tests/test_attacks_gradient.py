"""Hand-computed cases for the gradient loop (FGSM, BIM-a/b, PGD, PGDn), DeepFool, JSMA and noise.

Affine models make every answer exact: for ``z = W x + c`` the CE gradient, the iteration at which
a fixed-step attack crosses the boundary, and DeepFool's minimal perturbation are closed forms.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor, nn

from attacks import ATTACKS
from attacks.threat import L2Ball
from tiny import trained_victim, tones
from victims.bounds import Bounds

WIDE = Bounds(-100.0, 100.0)


def affine(n_classes: int = 3, dim: int = 12, seed: int = 0) -> tuple[nn.Linear, callable]:
    torch.manual_seed(seed)
    lin = nn.Linear(dim, n_classes).double()
    return lin, lambda x: lin(x.flatten(1))


def binary(w: Tensor) -> callable:
    """Two classes with ``z = [0, w·x]``: class 1 wins iff ``w·x > 0``."""
    return lambda x: torch.stack([torch.zeros(len(x), dtype=x.dtype), x.flatten(1) @ w], dim=1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_matches_closed_form(norm: str) -> None:
    lin, model = affine()
    x = torch.randn(5, 1, 12, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1])
    p = model(x).softmax(1).detach()
    grad = (p - nn.functional.one_hot(labels, 3).double()) @ lin.weight.detach()  # ∂CE/∂x
    step = grad.sign() if norm == "linf" else grad / grad.norm(dim=1, keepdim=True)
    out = ATTACKS.create("fgsm", norm=norm).run(model, x, labels, None, WIDE, 0.3)
    torch.testing.assert_close(out.adversarial, x + 0.3 * step.view_as(x))
    targets = (labels + 1) % 3
    grad_t = (p - nn.functional.one_hot(targets, 3).double()) @ lin.weight.detach()
    out_t = ATTACKS.create("fgsm", targeted=True).run(model, x, labels, targets, WIDE, 0.3)
    torch.testing.assert_close(out_t.adversarial, x - 0.3 * grad_t.sign().view_as(x))


def test_bim_a_stops_each_example_at_its_first_success() -> None:
    w = torch.tensor([1.0, -2.0, 0.5, 1.5], dtype=torch.float64)  # ‖w‖₁ = 5
    margins = torch.tensor([0.3, 1.2, 2.7, -0.4], dtype=torch.float64)  # w·x = -margin
    x = (-margins[:, None] * w / w.pow(2).sum()).unsqueeze(1)
    labels = torch.zeros(4, dtype=torch.int64)
    step = 0.1  # each step raises w·x by step·‖w‖₁ = 0.5
    bim_a = ATTACKS.create("bim_a", steps=50, abs_stepsize=step)
    out = bim_a.run(binary(w), x, labels, None, WIDE, 10.0)
    expected = torch.tensor([1, 3, 6, 0])  # floor(margin / 0.5) + 1, and 0 for the misclassified one
    assert out.iterations.tolist() == expected.tolist()
    assert (out.adversarial.flatten(1) @ w > 0).all()
    confident = ATTACKS.create("bim_a", steps=50, abs_stepsize=step, confidence=0.9)
    out_c = confident.run(binary(w), x, labels, None, WIDE, 10.0)  # p₁ ≥ 0.9 ⇔ w·x ≥ ln 9
    need = torch.ceil((margins.clamp_min(0) + math.log(9)) / 0.5).long()
    need[3] = math.ceil((math.log(9) - 0.4) / 0.5)
    assert out_c.iterations.tolist() == need.tolist()
    bim_b = ATTACKS.create("bim_b", steps=7, abs_stepsize=step).run(binary(w), x, labels, None, WIDE, 10.0)
    assert bim_b.iterations.tolist() == [7] * 4


def test_bim_projects_onto_the_ball_and_bounds() -> None:
    _, model = affine()
    x = torch.rand(6, 1, 12, dtype=torch.float64) * 2 - 1
    labels = model(x).argmax(1)
    bounds = Bounds(-1.0, 1.0)
    for norm in ("linf", "l2"):
        out = ATTACKS.create("bim_b", norm=norm, steps=20, rel_stepsize=0.5).run(model, x, labels, None, bounds, 0.4)
        delta = (out.adversarial - x).flatten(1)
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        assert (size <= 0.4 + 1e-9).all() and bounds.contains(out.adversarial).all()
        assert torch.allclose(size, torch.full_like(size, 0.4)) or norm == "l2"


def test_l2_random_start_is_uniform_in_the_ball() -> None:
    like = torch.zeros(20000, 2, dtype=torch.float64)
    start = L2Ball().random_start(like, 2.0)
    radius = start.norm(dim=1)
    assert (radius <= 2.0 + 1e-12).all()
    assert abs((radius <= 1.0).double().mean().item() - 0.25) < 0.015  # P(r ≤ ε/2) = (1/2)^d


def test_pgd_random_start_depends_on_the_seed() -> None:
    _, model = affine()
    x = torch.randn(4, 1, 12, dtype=torch.float64)
    labels = model(x).argmax(1)
    pgd = ATTACKS.create("pgd", steps=1, rel_stepsize=0.0)
    torch.manual_seed(1)
    a = pgd.run(model, x, labels, None, WIDE, 0.5).adversarial
    torch.manual_seed(2)
    b = pgd.run(model, x, labels, None, WIDE, 0.5).adversarial
    assert not torch.equal(a, b) and ((a - x).abs() <= 0.5).all()


def test_pgdn_is_sign_adam_clipped_to_eps() -> None:
    w = torch.tensor([1.0, -2.0, 0.5, 1.5], dtype=torch.float64)
    x = (-torch.tensor([[3.0], [40.0]], dtype=torch.float64) * w / w.pow(2).sum()).unsqueeze(1)
    labels = torch.zeros(2, dtype=torch.int64)
    pgdn = ATTACKS.create("pgdn", lr=0.1, steps=50, random_start=False)
    out = pgdn.run(binary(w), x, labels, None, WIDE, 0.8)
    # A constant gradient sign makes every Adam step exactly lr·sign(w): w·x rises 0.5 per step.
    assert out.iterations.tolist() == [7, 50]
    torch.testing.assert_close(out.adversarial[0] - x[0], 0.7 * w.sign().view(1, -1))
    torch.testing.assert_close(out.adversarial[1] - x[1], 0.8 * w.sign().view(1, -1))


@pytest.mark.parametrize("norm,dual", [("l2", 2), ("linf", 1)])
def test_deepfool_on_affine_model_is_the_exact_minimum(norm: str, dual: int) -> None:
    lin, model = affine(n_classes=4, dim=20)
    x = torch.randn(8, 1, 20, dtype=torch.float64)
    labels = model(x).argmax(1)
    out = ATTACKS.create("deepfool", norm=norm, overshoot=0.02).run(model, x, labels, None, WIDE, None)
    z, weight = model(x).detach(), lin.weight.detach()
    exact = torch.tensor([min((abs(z[i, k] - z[i, y]) + 1e-4) / (weight[k] - weight[y]).norm(p=dual)
                              for k in range(4) if k != y) for i, y in enumerate(labels.tolist())])
    delta = (out.adversarial - x).flatten(1)
    size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(1)
    torch.testing.assert_close(size, 1.02 * exact.double())
    assert out.iterations.tolist() == [1] * 8 and (model(out.adversarial).argmax(1) != labels).all()


def test_deepfool_batched_equals_per_example() -> None:
    """DeepFool couples no examples: given the same model arithmetic per example, batched = per-example
    bit for bit, including examples that run out of steps (their path is chaotic, so any difference
    would be amplified and "close" would mean nothing).

    The model is evaluated one (freshly allocated) row at a time in both runs: BLAS kernels sum in a
    batch-size-dependent order (``nn.Linear`` on 6 rows vs 1: 3.6e-15 on the logits, AMD EPYC), which
    is the victim's round-off, not the attack's; DeepFool amplified it to 1.4e-3 over 29 steps.
    """
    victim = trained_victim().double()
    wave, labels = tones(2, seed=4, dtype=torch.float64)
    model = victim.logits_fn("waveform")

    def rowwise(x: Tensor) -> Tensor:
        return torch.cat([model(x[i:i + 1].clone()) for i in range(len(x))])

    attack = ATTACKS.create("deepfool", domain="waveform", steps=20)
    bounds = victim.bounds("waveform")
    batched = attack.run(rowwise, wave, labels, None, bounds, None)
    single = [attack.run(rowwise, wave[i:i + 1], labels[i:i + 1], None, bounds, None) for i in range(len(labels))]
    assert torch.equal(batched.adversarial, torch.cat([s.adversarial for s in single]))
    assert torch.equal(batched.iterations, torch.cat([s.iterations for s in single]))
    with torch.no_grad():
        fooled = model(batched.adversarial).argmax(1) != labels
    unconverged = (batched.iterations == 20) & ~fooled  # contract: last iterate, unsuccessful
    assert unconverged.any() and fooled.any(), (batched.iterations, fooled)


def test_jsma_first_pair_is_papernots_saliency_argmax() -> None:
    lin, model = affine(n_classes=3, dim=8, seed=3)
    x = torch.zeros(1, 1, 8, dtype=torch.float64)
    labels = model(x).argmax(1)
    targets = (labels + 1) % 3
    jac = lin.weight.detach()
    alpha, beta = jac[targets[0]], jac.sum(0) - jac[targets[0]]
    best, pair = -1.0, None
    for p, q in itertools.combinations(range(8), 2):
        a, b = alpha[p] + alpha[q], beta[p] + beta[q]
        if a > 0 and b < 0 and a * -b > best:
            best, pair = float(a * -b), {p, q}
    assert pair is not None
    jsma = ATTACKS.create("jsma", theta=0.1, steps=1, candidates=8, targeted=True)
    out = jsma.run(model, x, labels, targets, Bounds(-1.0, 1.0), None)
    assert set((out.adversarial[0, 0] != 0).nonzero().flatten().tolist()) == pair
    torch.testing.assert_close(out.adversarial[0, 0, sorted(pair)], torch.full((2,), 0.2, dtype=torch.float64))


@pytest.mark.parametrize("theta", [0.5, -0.5])
def test_jsma_changes_few_features_in_one_direction(theta: float) -> None:
    victim = trained_victim()
    wave, labels = tones(2, seed=4)
    targets = (labels + 1) % 3
    jsma = ATTACKS.create("jsma", theta=theta, gamma=0.2, targeted=True)
    result = jsma(victim, wave, labels, targets=targets)
    delta = result.adversarial[0] - result.clean
    n_features = result.clean[0].numel()
    assert (result.norms[0] <= 0.2 * n_features + 2).all()
    assert (delta * theta >= -1e-6).all()
    assert (result.adv_logits[0].argmax(1) == targets).float().mean() >= 0.5
    single = [jsma(victim, wave[i:i + 1], labels[i:i + 1], targets=targets[i:i + 1]) for i in range(len(labels))]
    torch.testing.assert_close(result.adversarial[0], torch.cat([s.adversarial[0] for s in single]))


def test_noise_has_the_requested_norm_and_snr() -> None:
    x = torch.randn(4, 1, 400, dtype=torch.float64) * 0.01
    labels = torch.zeros(4, dtype=torch.int64)
    model = binary(torch.ones(400, dtype=torch.float64))
    out = ATTACKS.create("noise").run(model, x, labels, None, WIDE, 0.05)
    size = (out.adversarial - x).flatten(1).norm(dim=1)
    torch.testing.assert_close(size, torch.full((4,), 0.05, dtype=torch.float64))
    snr = ATTACKS.create("noise", snr_db=15.56).run(model, x, labels, None, WIDE, float("inf"))
    ratio = x.flatten(1).norm(dim=1) / (snr.adversarial - x).flatten(1).norm(dim=1)
    torch.testing.assert_close(20 * ratio.log10(), torch.full((4,), 15.56, dtype=torch.float64))
    capped = ATTACKS.create("noise", snr_db=0.0).run(model, x, labels, None, WIDE, 1e-3)
    size = (capped.adversarial - x).flatten(1).norm(dim=1)
    torch.testing.assert_close(size, torch.full((4,), 1e-3, dtype=torch.float64))
    with pytest.raises(ValueError, match="cannot be targeted"):
        ATTACKS.create("noise", targeted=True)


@pytest.mark.parametrize("name,kwargs,match", [
    ("pgd", {"norm": "l1"}, "unknown norm 'l1'"),
    ("bim_a", {"confidence": 1.5}, "confidence"),
    ("deepfool", {"norm": "l0"}, "unknown norm 'l0'"),
    ("jsma", {"gamma": 0.0}, "gamma"),
])
def test_bad_parameters_are_one_line_errors(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        ATTACKS.create(name, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.gpu
@pytest.mark.parametrize("name,kwargs,eps", [("fgsm", {}, 0.5), ("bim_a", {"norm": "l2"}, 3.0), ("pgd", {}, 0.5),
                                             ("pgdn", {"lr": 0.02, "steps": 20}, 0.2), ("deepfool", {}, None),
                                             ("jsma", {"steps": 50}, None), ("noise", {}, 5.0)])
@pytest.mark.parametrize("domain", ["representation", "waveform"])
def test_attacks_run_on_cuda(name: str, kwargs: dict, eps: float | None, domain: str) -> None:
    victim = trained_victim().cuda()
    wave, labels = tones(2, seed=3)
    attack = ATTACKS.create(name, domain=domain, **kwargs)
    result = attack(victim, wave.cuda(), labels.cuda(), epsilons=None if eps is None else [eps])
    assert result.adversarial.is_cuda and result.success.is_cuda
    assert victim.bounds(domain).contains(result.adversarial[0]).all()


def test_gradient_attacks_survive_a_saturated_softmax() -> None:
    """Logit margins of ~100 make float32 CE gradients exactly zero; the log-odds loss still moves."""
    from attacks import create_attack
    from tiny import trained_victim, tones

    victim = trained_victim()
    victim.backbone.fc.weight.data *= 50
    victim.backbone.fc.bias.data *= 50
    waves, labels = tones(4, seed=3)
    rep = victim.represent(waves).requires_grad_(True)
    ce = torch.nn.functional.cross_entropy(victim.classify(rep), labels, reduction="sum")
    assert (torch.autograd.grad(ce, rep)[0].flatten(1).abs().amax(1) == 0).any(), "no example saturates"
    result = create_attack("pgd", norm="l2", eps=1e3, steps=40, rel_stepsize=0.1)(victim, waves, labels)
    assert result.success.float().mean() == 1.0


@pytest.mark.parametrize("name, kwargs", [
    ("bim_a", {"norm": "l2", "steps": 5}), ("bim_b", {"norm": "linf", "steps": 4}),
    ("pgd", {"norm": "l2", "steps": 3}), ("pgd", {"norm": "linf", "steps": 3}),
    ("nes", {"norm": "l2", "max_iterations": 3, "n_samples": 4}), ("noise", {"domain": "representation"}),
])
def test_per_example_budgets_equal_one_call_per_budget(name: str, kwargs: dict) -> None:
    """A (1, N) tensor of budgets gives each example what a call at its own float budget gives it (the
    harness refines every example's ε* in one call per step instead of one call per distinct budget)."""
    victim = trained_victim()
    waves, labels = tones(2, seed=3)
    waves, labels = waves[:6], labels[:6]
    budgets = torch.tensor([0.05, 0.2, 0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    attack = ATTACKS.create(name, **kwargs)
    assert attack.per_example_budgets
    torch.manual_seed(0)
    together = attack(victim, waves, labels, epsilons=budgets.view(1, -1))
    for i, eps in enumerate(budgets.tolist()):
        torch.manual_seed(0)  # the same random draws as the batched call's row i
        alone = attack(victim, waves, labels, epsilons=[eps])
        assert together.success[0, i] == alone.success[0, i]
        assert torch.allclose(together.adversarial[0, i], alone.adversarial[0, i], atol=1e-5, rtol=1e-5)
        assert together.norms[0, i] <= eps * (1 + 1e-5) + 1e-6
    assert together.epsilons.shape == (1, 6)


def test_per_example_budgets_are_refused_where_unsupported() -> None:
    attack = ATTACKS.create("deepfool", steps=5)
    victim = trained_victim()
    waves, labels = tones(1, seed=3)
    with pytest.raises(ValueError, match="takes no per-example budgets"):
        attack(victim, waves[:2], labels[:2], epsilons=torch.ones(1, 2))
