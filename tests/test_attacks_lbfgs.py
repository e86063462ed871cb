"""Box-constrained L-BFGS (Szegedy et al. 2014, seed 001) on the tiny victim."""
from __future__ import annotations

import pytest
import torch

from attacks import create_attack
from attacks.lbfgs import Objective, batched_lbfgs
from attacks.losses import log_complement
from tiny import trained_victim, tones


def test_targeted_lbfgs_hits_the_target_within_the_per_band_box() -> None:
    victim = trained_victim()
    wave, labels = tones(2, seed=5)
    targets = (labels + 1) % 3
    result = create_attack("lbfgs", targeted=True, initial_const=10.0, binary_search_steps=3,
                           max_iterations=60)(victim, wave, labels, targets=targets)
    assert torch.equal(result.adv_logits[0].argmax(dim=1), targets)
    assert victim.bounds("representation").contains(result.adversarial[0]).all()
    assert (result.queries > result.iterations).all()
    assert all(p.grad is None for p in victim.parameters())


def test_untargeted_lbfgs_on_the_waveform_fools_every_example_in_bounds() -> None:
    victim = trained_victim()
    wave, labels = tones(2, seed=6)
    result = create_attack("lbfgs", domain="waveform", binary_search_steps=3, max_iterations=60)(victim, wave, labels)
    assert result.success.all()
    assert victim.bounds("waveform").contains(result.adversarial[0]).all()
    assert (result.norms > 0).all()


def test_binary_search_lowers_the_norm_of_a_single_large_c() -> None:
    victim = trained_victim()
    wave, labels = tones(2, seed=7)
    targets = (labels + 2) % 3
    kwargs = dict(targeted=True, initial_const=1000.0, max_iterations=40)
    single = create_attack("lbfgs", binary_search_steps=1, **kwargs)(victim, wave, labels, targets=targets)
    search = create_attack("lbfgs", binary_search_steps=6, **kwargs)(victim, wave, labels, targets=targets)
    assert single.success.all() and search.success.all()
    assert (search.norms <= single.norms + 1e-5).all()
    assert search.norms.mean() < 0.95 * single.norms.mean(), (search.norms, single.norms)


def test_failed_examples_come_back_clean() -> None:
    victim = trained_victim()
    wave, labels = tones(1, seed=8)
    result = create_attack("lbfgs", initial_const=1e-6, binary_search_steps=1, max_iterations=5)(victim, wave, labels)
    assert not result.success.any()
    assert torch.equal(result.adversarial[0], result.clean)


def test_batched_lbfgs_solves_independent_quadratics_as_if_each_were_alone() -> None:
    """Oracle: the minimiser ``A⁻¹b`` of ``½wᵀAw − bᵀw``; each row's run must not see the others."""
    gen = torch.Generator().manual_seed(0)
    m = torch.randn(3, 6, 6, generator=gen, dtype=torch.float64)
    a = m @ m.transpose(1, 2) + torch.diag(torch.tensor([1.0, 2, 4, 8, 16, 32], dtype=torch.float64))
    b = torch.randn(3, 6, generator=gen, dtype=torch.float64)

    def quadratic(a: torch.Tensor, b: torch.Tensor) -> Objective:
        def fun(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            aw = torch.einsum("nde,ne->nd", a, w)
            return 0.5 * (w * aw).sum(dim=1) - (b * w).sum(dim=1), aw - b
        return fun

    w, iters, evals = batched_lbfgs(quadratic(a, b), torch.zeros_like(b), max_iter=100, history=10)
    assert torch.allclose(w, torch.linalg.solve(a, b), atol=1e-6)
    assert (iters < 100).all() and (evals > iters).all()
    for i in range(3):
        alone, it_alone, _ = batched_lbfgs(quadratic(a[i:i + 1], b[i:i + 1]), torch.zeros_like(b[i:i + 1]),
                                           max_iter=100, history=10)
        assert torch.allclose(alone[0], w[i], atol=1e-10) and it_alone[0] == iters[i]


def test_untargeted_loss_is_minus_log_of_one_minus_p_true() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 2])
    expected = -torch.log(1 - torch.softmax(logits, dim=1)[torch.arange(2), labels])
    assert torch.allclose(log_complement(logits, labels), expected)
    confident = torch.tensor([[60.0, 0.0, 0.0]])
    assert torch.isfinite(log_complement(confident, torch.tensor([0]))).all()


@pytest.mark.parametrize("kwargs", [{"initial_const": 0.0}, {"max_iterations": 0}, {"history_size": 0}])
def test_bad_settings_are_one_line_errors(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="lbfgs needs") as err:
        create_attack("lbfgs", **kwargs)
    assert "\n" not in str(err.value)
