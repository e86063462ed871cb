"""Square attack (Andriushchenko et al. 2020): black-box (no backward pass), exact query counting within
the budget, budget and bounds in both domains and norms, per-example budgets, the paper's window
patterns and ``p`` schedule against torchattacks' copy of the reference code, targeted success."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchattacks import Square as PeerSquare

from attacks import create_attack
from attacks.square import eta, p_schedule, place, rings
from black_box import CountRows, Guard
from tiny import tones, trained_victim


@pytest.mark.timeout(300)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_black_box_success_and_exact_query_counts(norm: str) -> None:
    """Representation domain (2-D windows): the attack never differentiates, fools the tiny victim, and every
    model evaluation is counted: one for the initial perturbation plus one per iteration, within the budget."""
    victim = trained_victim()
    counter = CountRows()
    victim.backbone = nn.Sequential(counter, Guard(), victim.backbone)
    wave, labels = tones(3, seed=4)
    eps = {"linf": 1.5, "l2": 15.0}[norm]
    torch.manual_seed(0)
    result = create_attack("square", norm=norm, eps=eps, max_queries=1000)(victim, wave, labels)
    assert bool(result.success.all())
    assert torch.equal(result.queries, 1 + result.iterations) and bool((result.queries <= 1000).all())
    assert counter.rows == int(result.queries.sum()) + len(labels)  # + the base's check of the deployed model
    assert bool((result.norms <= eps * (1 + 1e-5)).all())
    assert victim.bounds("representation").contains(result.adversarial[0]).all()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_waveform_windows_per_example_budgets_and_bounds(norm: str) -> None:
    """On the waveform (1-D windows) with one budget per example and row: every example stays within its own
    budget and the box, an example that runs out of queries stops at ``max_queries``, and the largest budgets
    fool some."""
    victim = trained_victim()
    wave, labels = tones(2, seed=6)
    base = {"linf": 0.1, "l2": 1.0}[norm]
    budgets = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [1.0, 1.5, 2.0, 2.5, 3.0, 3.5]]) * base * 2
    torch.manual_seed(1)
    result = create_attack("square", norm=norm, domain="waveform", max_queries=200)(victim, wave, labels,
                                                                                      epsilons=budgets)
    assert bool((result.norms <= budgets.double() * (1 + 1e-5)).all())
    assert all(victim.bounds("waveform").contains(a).all() for a in result.adversarial)
    assert bool(((result.queries == 200) | result.success).all())
    assert bool(result.success[1].any())


@pytest.mark.timeout(120)
def test_targeted_square_hits_its_target() -> None:
    victim = trained_victim()
    wave, labels = tones(2, seed=3)
    targets = (labels + 1) % victim.num_classes
    torch.manual_seed(2)
    result = create_attack("square", norm="linf", eps=1.5, max_queries=400, targeted=True)(
        victim, wave, labels, targets=targets)
    assert bool((result.adv_logits[0].argmax(dim=1) == targets).all())


def test_patterns_and_schedule_match_the_reference_code() -> None:
    """``rings`` equals the reference's ``eta_rectangles`` (torchattacks' copy) on square and non-square
    windows; ``eta`` is ± rings on the halves with unit norm; ``p`` halves at the paper's marks."""
    peer = PeerSquare(nn.Linear(1, 1))
    for shape in [(1, 1), (3, 3), (4, 7), (6, 5), (2, 9)]:
        assert torch.allclose(rings(shape, torch.zeros(1)), peer.eta_rectangles(*shape), atol=1e-6), shape
    torch.manual_seed(0)
    pattern = eta((6, 5), torch.zeros(1, dtype=torch.float64))
    assert torch.isclose(pattern.norm(), torch.tensor(1.0, dtype=torch.float64))
    axis = 0 if bool((pattern[:3] > 0).all()) else 1
    first = pattern.narrow(axis, 0, 3)
    assert bool((first > 0).all()) and bool((pattern.narrow(axis, 3, pattern.shape[axis] - 3) < 0).all())
    segment = eta((5,), torch.zeros(1))
    assert bool((segment[:2] > 0).all()) and bool((segment[2:] < 0).all())
    peer.p_init, peer.n_queries, peer.rescale_schedule = 0.8, 1000, True
    for it in [0, 1, 2, 5, 6, 20, 50, 100, 400, 650, 999]:
        assert p_schedule(0.8, it, 1000) == pytest.approx(peer.p_selection(it)), it


def test_place_puts_a_window_at_each_examples_corner() -> None:
    pattern = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    values, mask = place(pattern, torch.tensor([[0, 0], [1, 2]]), (3, 4))
    expect = torch.zeros(2, 1, 3, 4)
    expect[0, 0, :2, :2] = pattern
    expect[1, 0, 1:3, 2:4] = pattern
    assert torch.equal(values, expect) and torch.equal(mask, expect != 0)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"norm": "l1"}, "norm"),
    ({"max_queries": 1}, "max_queries"),
    ({"p_init": 0.0}, "p_init"),
])
def test_bad_settings_are_one_line_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        create_attack("square", eps=0.1, **kwargs)
    assert "\n" not in str(err.value)


def test_square_refuses_the_adaptive_options() -> None:
    from victims.registry import ConfigError

    with pytest.raises(ConfigError, match="no gradient"):
        create_attack("square", eps=0.1, eot_samples=4)
