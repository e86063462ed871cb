"""Our attacks against ART's (the reference oracle) on the same tiny victim, data and budget.

Tolerance: ours succeed on at least as many examples as ART's minus one (of 30; of 10 for C&W). Budgets are
chosen so that success is neither 0 nor 100 %. ART's DeepFool multiplies every step by the width
of ``clip_values`` (ART 1.20, ``deepfool.py``), which inflates its perturbations on boxes wider
than 1 (dB spectrograms, waveforms in [-1, 1]); a second DeepFool check therefore uses a box of
width 1, where ART's DeepFool is the textbook algorithm.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from attacks import ATTACKS
from tiny import trained_victim, tones
from victims.bounds import Bounds

TOLERANCE = 1  # examples out of N
EPS_LINF = 0.7  # representation-domain L∞ budget: FGSM fools ~57 % here


@pytest.fixture(scope="module")
def data() -> tuple:
    wave, labels = tones(10, seed=7)
    return trained_victim(), wave, labels


def _wins(ours: torch.Tensor, art: torch.Tensor) -> None:
    n_ours, n_art = int(ours.sum()), int(art.sum())
    assert 0 < n_ours < len(ours) or 0 < n_art < len(art), "budget is not informative (0 or 100 %)"
    assert n_ours >= n_art - TOLERANCE, f"ours {n_ours} < ART {n_art} - {TOLERANCE} of {len(ours)}"


def test_fgsm_equals_art(data: tuple) -> None:
    """On a victim whose softmax does not saturate, ours equals ART's FGSM (same gradient sign: our
    log-odds loss has the cross-entropy's gradient direction). On the saturated tiny victim the float32
    cross-entropy gradient is rounding noise, so there ours must only fool at least as often."""
    victim, wave, labels = data
    soft = copy.deepcopy(victim)
    soft.backbone.fc.weight.data *= 0.05
    soft.backbone.fc.bias.data *= 0.05
    assert soft(wave).softmax(-1).max() < 0.999
    ours = ATTACKS.create("fgsm")(soft, wave, labels, epsilons=[EPS_LINF])
    art = ATTACKS.create("art", attack="FastGradientMethod", params={"norm": "inf"})(
        soft, wave, labels, epsilons=[EPS_LINF])
    torch.testing.assert_close(ours.adversarial, art.adversarial, atol=1e-5, rtol=1e-5)
    ours = ATTACKS.create("fgsm")(victim, wave, labels, epsilons=[EPS_LINF])
    art = ATTACKS.create("art", attack="FastGradientMethod", params={"norm": "inf"})(
        victim, wave, labels, epsilons=[EPS_LINF])
    _wins(ours.success[0], art.success[0])


@pytest.mark.parametrize("ours_name,ours_kw,art_name,art_params", [
    ("bim_b", {"norm": "linf", "steps": 10, "rel_stepsize": 0.2}, "BasicIterativeMethod", {"max_iter": 10}),
    ("pgd", {"norm": "linf", "steps": 10, "rel_stepsize": 0.2}, "ProjectedGradientDescent",
     {"norm": "inf", "max_iter": 10, "num_random_init": 1}),
    ("pgd", {"norm": "l2", "steps": 10, "rel_stepsize": 0.2}, "ProjectedGradientDescent",
     {"norm": 2, "max_iter": 10, "num_random_init": 1}),
])
def test_iterative_at_least_as_strong_as_art(data: tuple, ours_name: str, ours_kw: dict, art_name: str,
                                             art_params: dict) -> None:
    victim, wave, labels = data
    eps = EPS_LINF if ours_kw["norm"] == "linf" else 7.0
    ours = ATTACKS.create(ours_name, **ours_kw)(victim, wave, labels, epsilons=[eps])
    norm = ours_kw["norm"]
    art = ATTACKS.create("art", attack=art_name, params=art_params, norm=norm, rel_eps_step=0.2)(
        victim, wave, labels, epsilons=[eps])
    _wins(ours.success[0], art.success[0])


@pytest.mark.parametrize("domain,eps", [("representation", EPS_LINF), ("waveform", 0.1)])
def test_iterative_beats_fgsm(data: tuple, domain: str, eps: float) -> None:
    victim, wave, labels = data
    fgsm = ATTACKS.create("fgsm", domain=domain)(victim, wave, labels, epsilons=[eps]).success.sum()
    for name in ("bim_a", "bim_b", "pgd"):
        iterative = ATTACKS.create(name, domain=domain, steps=10, rel_stepsize=0.2)
        assert iterative(victim, wave, labels, epsilons=[eps]).success.sum() >= fgsm, name


def test_deepfool_at_least_as_strong_as_art(data: tuple) -> None:
    victim, wave, labels = data
    ours = ATTACKS.create("deepfool", steps=50)(victim, wave, labels, epsilons=[7.0])
    art = ATTACKS.create("art", attack="DeepFool", params={"max_iter": 50, "epsilon": 0.02})(
        victim, wave, labels, epsilons=[7.0])
    _wins(ours.success[0], art.success[0])


def test_deepfool_matches_art_on_a_unit_box() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(20, 16), nn.Tanh(), nn.Linear(16, 4))
    x = torch.rand(30, 1, 20) - 0.5
    labels = net(x).argmax(1)
    box = Bounds(-0.5, 0.5)
    ours = ATTACKS.create("deepfool", steps=50).run(net, x, labels, None, box, None).adversarial
    art = ATTACKS.create("art", attack="DeepFool", params={"max_iter": 50, "epsilon": 0.02}).run(
        net, x, labels, None, box, None).adversarial
    norm_ours, norm_art = (ours - x).flatten(1).norm(dim=1), (art - x).flatten(1).norm(dim=1)
    fooled_ours = net(ours).argmax(1) != labels
    fooled_art = net(art).argmax(1) != labels
    budget = norm_art.median().item()
    _wins(fooled_ours & (norm_ours <= budget), fooled_art & (norm_art <= budget))


def test_jsma_at_least_as_strong_as_art(data: tuple) -> None:
    victim, wave, labels = data
    targets = (labels + 1) % victim.num_classes
    # Waveform domain: ART's JSMA handles only scalar clip values. Our theta is relative to the
    # bound width (2 for waveforms); ART's is absolute.
    ours = ATTACKS.create("jsma", domain="waveform", theta=0.5, gamma=0.15, targeted=True)(
        victim, wave, labels, targets=targets)
    art = ATTACKS.create("art", attack="SaliencyMapMethod", params={"theta": 1.0, "gamma": 0.15}, norm="l0",
                         y_is_target=True, domain="waveform", targeted=True)(victim, wave, labels, targets=targets)
    _wins(ours.success[0], art.success[0])


@pytest.mark.timeout(120)
def test_cw_l2_at_least_as_strong_as_art(data: tuple) -> None:
    victim, wave, labels = data
    wave, labels = wave[::3], labels[::3]  # ART's C&W is slow: 10 examples
    settings = {"binary_search_steps": 2, "learning_rate": 0.1, "initial_const": 10.0}
    ours = ATTACKS.create("cw_l2", max_iterations=30, **settings)(victim, wave, labels, epsilons=[7.5])
    art = ATTACKS.create("art", attack="CarliniL2Method", params={"max_iter": 30, **settings}, norm="l2")(
        victim, wave, labels, epsilons=[7.5])
    _wins(ours.success[0], art.success[0])


@pytest.mark.timeout(120)
def test_art_attacks_that_query_in_float64_run(data: tuple) -> None:
    """ART's HopSkipJump queries the classifier with float64 arrays; the adapter casts them to the victim's
    dtype (a float32 model refused them: "Input type (double) and bias type (float) should be the same")."""
    victim, wave, labels = data
    hsj = ATTACKS.create("art", attack="HopSkipJump", params={"norm": 2, "max_iter": 1, "max_eval": 20,
                                                               "init_eval": 10}, domain="waveform")
    out = hsj(victim, wave[:3], labels[:3])
    assert out.adversarial.dtype == wave.dtype and out.adversarial.shape[1:] == wave[:3].shape
