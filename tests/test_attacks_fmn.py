"""FMN (Pintor et al. 2021): known answers on an affine model in L2, L∞ and L1 (the exact distance to the
boundary), the projections it uses, foolbox's FMN on the same model and clips at equal steps (our median ε*
at most 1.02 × theirs), and the minimum-norm contract with the harness."""
from __future__ import annotations

import foolbox
import pytest
import torch

from affine import BOUNDS, affine_case
from attacks import create_attack
from attacks.threat import perturbation_norm, project_l0, project_l1
from tiny import tones, trained_victim
from victims.bounds import Bounds


@pytest.mark.timeout(120)
@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
def test_finds_the_exact_distance_to_an_affine_boundary(norm: str, targeted: bool) -> None:
    """Every example is fooled at a norm within 1 % above the exact distance ``|w·x + b| / ‖w‖_dual`` (and
    never below it, which no perturbation can be). 1 %: in its last steps FMN moves ε by ``γ ≈ 0.001`` per
    step around the boundary and keeps the smallest adversarial iterate, so it ends a few γ above it."""
    case = affine_case(n=8)
    dist = case.distance(norm)
    targets = 1 - case.labels if targeted else None
    out = create_attack("fmn", norm=norm, steps=100, targeted=targeted).run(
        case.model, case.x, case.labels, targets, BOUNDS, None)
    assert bool((case.model(out.adversarial).argmax(dim=1) != case.labels).all())
    found = perturbation_norm(out.adversarial - case.x, norm)
    assert bool((found >= dist * (1 - 1e-9)).all()) and bool((found <= 1.01 * dist).all()), found / dist
    assert bool((out.iterations == 100).all())


def test_l1_and_l0_projections_by_hand() -> None:
    """L1 (Duchi et al. 2008): soft-thresholding at θ with Σ max(|v| − θ, 0) = ε; L0: the ⌊ε⌋ largest entries."""
    v = torch.tensor([[[3.0, -1.0, 0.5, 2.0]], [[0.1, 0.2, -0.1, 0.0]]])
    eps = torch.tensor([4.0, 1.0])
    # row 0: θ = 2/3 (7/3 + 1/3 + 0 + 4/3 = 4); row 1 lies inside its ball and stays
    expect = torch.tensor([[[7 / 3, -1 / 3, 0.0, 4 / 3]], [[0.1, 0.2, -0.1, 0.0]]])
    assert torch.allclose(project_l1(v, eps), expect)
    assert torch.equal(project_l0(v, torch.tensor([2.0, 0.0])), torch.tensor([[[3.0, 0.0, 0.0, 2.0]], [[0.0] * 4]]))


@pytest.mark.timeout(120)
def test_l0_changes_few_entries_on_an_affine_model() -> None:
    """The fewest entries that flip the decision: the greedy count of the largest gains ``|w_i| · room_i``
    (room: how far entry ``i`` can move towards the boundary inside the box [−2, 2]). FMN-L0 must fool every
    example with at most two entries more than that minimum."""
    case = affine_case(n=6, dim=12, seed=1)
    bounds = Bounds(-2.0, 2.0)
    x = case.x.clamp(-2, 2)
    labels = case.model(x).argmax(dim=1)
    out = create_attack("fmn", norm="l0", steps=200).run(case.model, x, labels, None, bounds, None)
    m = case.model(x)[:, 0]
    w = case.model.w
    direction = torch.where(m[:, None] > 0, -w.sign(), w.sign())  # towards the boundary
    room = torch.where(direction > 0, 2 - x.flatten(1), x.flatten(1) + 2)
    gains = (w.abs() * room).sort(dim=1, descending=True).values.cumsum(dim=1)
    fewest = (gains <= m.abs()[:, None]).sum(dim=1) + 1
    assert bool((case.model(out.adversarial).argmax(dim=1) != labels).all())
    changed = perturbation_norm(out.adversarial - x, "l0")
    assert bool((changed >= fewest).all()) and bool((changed <= fewest + 2).all()), (changed, fewest)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("norm", ["l2", "linf", "l1", "l0"])
def test_median_eps_star_at_most_1_02_times_foolbox(norm: str) -> None:
    """Same tiny victim (its backbone on the representation, in one scalar box for foolbox: the widest band's
    range), same 30 clips, same 100 steps, foolbox's default step sizes and γ: our median ε* (∞ where an attack
    failed) is at most 1.02 × foolbox's.

    It measures 0.94 (L2: foolbox 3.3.4's L2 projection rescales by ``norms / norms`` and never projects),
    1.0 (L∞, L1: both run the same iteration and agree on every clip to 1e-3) and 1.0 (L0). On the waveform the
    log-STFT front-end makes the iteration chaotic (round-off grows ~5× per step), so two correct
    implementations end on different clips' local minima and the ratio scatters (0.97-1.05 at 50-200 steps):
    not a comparison a test can make.
    """
    victim = trained_victim()
    waves, labels = tones(10, seed=11)
    x = victim.to_domain(waves, "representation")
    box = victim.bounds("representation")
    lo, hi = float(box.lower.min()), float(box.upper.max())
    out = create_attack("fmn", norm=norm, steps=100).run(victim.classify, x, labels, None, Bounds(lo, hi), None)
    with torch.no_grad():
        ours_ok = victim.classify(out.adversarial).argmax(dim=1) != labels
    ours_eps = torch.where(ours_ok, perturbation_norm(out.adversarial - x, norm), torch.inf)
    peer = {"l2": foolbox.attacks.L2FMNAttack, "linf": foolbox.attacks.LInfFMNAttack,
            "l1": foolbox.attacks.L1FMNAttack, "l0": foolbox.attacks.L0FMNAttack}[norm](steps=100)
    _, adv, ok = peer(foolbox.PyTorchModel(victim.backbone, bounds=(lo, hi)), x, labels, epsilons=None)
    theirs_eps = torch.where(ok, perturbation_norm(adv - x, norm), torch.inf)
    assert bool(ours_ok.float().mean() >= 0.9)
    assert float(ours_eps.median()) <= 1.02 * float(theirs_eps.median()), (ours_eps.median(), theirs_eps.median())


@pytest.mark.timeout(120)
def test_a_minimum_norm_result_counts_success_within_each_budget() -> None:
    """The base reports a minimum-norm attack successful at budget ε exactly where its norm is ≤ ε."""
    victim = trained_victim()
    waves, labels = tones(2, seed=3)
    result = create_attack("fmn", norm="l2", steps=30, domain="waveform")(victim, waves, labels,
                                                                          epsilons=[0.5, 1.5, 100.0])
    assert torch.equal(result.norms[0], result.norms[2])
    for k, eps in enumerate([0.5, 1.5, 100.0]):
        assert torch.equal(result.success[k], result.success[2] & (result.norms[k] <= eps))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"norm": "l3"}, "norm"),
    ({"steps": 0}, "steps"),
    ({"gamma": 1.5}, "gamma"),
    ({"min_stepsize": 2.0, "max_stepsize": 1.0}, "stepsize"),
])
def test_bad_settings_are_one_line_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        create_attack("fmn", **kwargs)
    assert "\n" not in str(err.value)
