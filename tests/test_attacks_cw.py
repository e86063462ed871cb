"""C&W L2 and seed 000's C&W variants on the tiny victim: bounds, success, minimality, ART oracle,
seed 000's stopping rule and sign-Adam step, and the multi-scale spectral loss against hand values
and librosa."""
from __future__ import annotations

import math

import librosa
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks import create_attack
from attacks.losses import log_odds
from attacks.cw import BatchAdam, MultiScaleSpectralLoss, update_consts
from tiny import trained_victim, tones
from victims.victim import Victim


def _smallest_step_along_gradient(victim: Victim, rep: Tensor, labels: Tensor) -> Tensor:
    """Baseline (FGM-L2 with a line search): the smallest ``t`` on a 200-point grid in (0, 40] with
    ``clip(x + t·∇CE/‖∇CE‖)`` misclassified, as the L2 norm of that clipped step; ``inf`` if none."""
    rep = rep.clone().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(victim.classify(rep), labels, reduction="sum"), rep)
    unit = grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    bounds = victim.bounds("representation")
    best = torch.full((len(rep),), float("inf"))
    with torch.no_grad():
        for t in torch.linspace(0.2, 40.0, 200).flip(0):
            adv = bounds.clip(rep + t * unit)
            fooled = victim.classify(adv).argmax(dim=1) != labels
            best = torch.where(fooled, (adv - rep).flatten(1).norm(dim=1), best)
    return best


def test_cw_l2_breaks_every_example_within_bounds_with_less_than_a_gradient_step() -> None:
    victim = trained_victim()
    wave, labels = tones(3, seed=5)
    attack = create_attack("cw_l2", binary_search_steps=5, max_iterations=100)
    result = attack(victim, wave, labels)
    assert result.success.all()
    assert victim.bounds("representation").contains(result.adversarial[0]).all()
    assert (result.iterations <= 5 * 100).all() and (result.iterations < 5 * 100).any()  # early abort
    baseline = _smallest_step_along_gradient(victim, result.clean, labels)
    assert torch.isfinite(baseline).all()
    ratio = result.norms[0] / baseline
    assert (ratio <= 1.05).all() and ratio.mean() < 0.9, ratio


def test_cw_l2_binary_search_lowers_the_norm_of_a_single_large_c() -> None:
    victim = trained_victim()
    wave, labels = tones(2, seed=6)
    single = create_attack("cw_l2", initial_const=100.0, binary_search_steps=1, max_iterations=60)(victim, wave, labels)
    search = create_attack("cw_l2", initial_const=100.0, binary_search_steps=5, max_iterations=60)(victim, wave, labels)
    assert single.success.all() and search.success.all()
    assert (search.norms <= single.norms + 1e-5).all()
    assert search.norms.mean() < 0.9 * single.norms.mean(), (search.norms, single.norms)


def test_cw_l2_targeted_on_the_waveform_hits_the_target_through_the_front_end() -> None:
    victim = trained_victim()
    wave, labels = tones(2, seed=8)
    targets = (labels + 2) % 3
    result = create_attack("cw_l2", domain="waveform", targeted=True, initial_const=10.0, binary_search_steps=3,
                           max_iterations=50)(victim, wave, labels, targets=targets)
    assert result.success.all()
    assert torch.equal(result.adv_logits[0].argmax(dim=1), targets)
    assert victim.bounds("waveform").contains(result.adversarial[0]).all()


def test_cw_l2_confidence_leaves_the_margin_it_asks_for() -> None:
    victim = trained_victim()
    wave, labels = tones(2, seed=9)
    result = create_attack("cw_l2", confidence=5.0, initial_const=10.0, binary_search_steps=3,
                           max_iterations=80)(victim, wave, labels)
    logits = result.adv_logits[0]
    assert result.success.all()
    assert (-log_odds(logits, labels) > 0).all()
    others = logits.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    assert (others - logits.gather(1, labels[:, None]).squeeze(1) >= 5.0 - 1e-4).all()


def test_cw_l2_succeeds_at_least_as_often_as_art_with_smaller_norms() -> None:
    """Oracle: ART's CarliniL2Method, same victim, box, learning rate, c and iterations.

    Tolerance: no example fewer than ART; median norm over jointly broken examples no larger.
    """
    from art.attacks.evasion import CarliniL2Method
    from art.estimators.classification import PyTorchClassifier

    victim = trained_victim()
    wave, labels = tones(2, seed=7)
    budget = dict(learning_rate=0.01, binary_search_steps=3, initial_const=10.0)
    clf = PyTorchClassifier(model=victim, loss=nn.CrossEntropyLoss(), input_shape=tuple(wave.shape[1:]),
                            nb_classes=3, clip_values=(-1.0, 1.0))
    art = CarliniL2Method(clf, max_iter=30, batch_size=len(wave), verbose=False, **budget)
    art_adv = torch.from_numpy(art.generate(wave.numpy()))
    with torch.no_grad():
        art_success = victim(art_adv).argmax(dim=1) != labels
    ours = create_attack("cw_l2", domain="waveform", max_iterations=30, **budget)(victim, wave, labels)
    assert ours.success[0].sum() >= art_success.sum()
    both = ours.success[0] & art_success
    assert both.any()
    art_norms = (art_adv - wave).flatten(1).norm(dim=1)
    assert ours.norms[0][both].median() <= art_norms[both].median()


def test_cw_l2_sends_only_the_examples_still_optimising_and_each_gets_what_it_gets_alone() -> None:
    """Examples that stopped (abort early) leave the batch: the model sees exactly the iterations the attack
    reports, and each example's result is the one it gets in a batch of its own (Adam is per example)."""
    victim = trained_victim()
    wave, labels = tones(4, seed=7)
    rep = victim.represent(wave).detach()
    bounds = victim.bounds("representation")
    attack = create_attack("cw_l2", binary_search_steps=3, max_iterations=50)
    rows: list[int] = []

    def counted(x: Tensor) -> Tensor:
        rows.append(x.shape[0])
        return victim.classify(x)

    together = attack.run(counted, rep, labels, None, bounds, None)
    assert sum(rows) == int(together.iterations.sum())
    assert min(rows) < len(labels)  # some example stopped early and left the batch
    for i in range(len(labels)):
        alone = attack.run(victim.classify, rep[i:i + 1], labels[i:i + 1], None, bounds, None)
        assert int(alone.iterations[0]) == int(together.iterations[i])
        torch.testing.assert_close(alone.adversarial[0], together.adversarial[i], rtol=1e-4, atol=1e-4)


def test_update_consts_follows_carlini_wagner_binary_search() -> None:
    const = torch.tensor([1.0, 1.0, 4.0, 4.0])
    lower = torch.tensor([0.0, 0.0, 2.0, 2.0])
    upper = torch.tensor([float("inf"), float("inf"), 8.0, 8.0])
    found = torch.tensor([True, False, True, False])
    const, lower, upper = update_consts(const, lower, upper, found)
    assert torch.equal(const, torch.tensor([0.5, 10.0, 3.0, 6.0]))
    assert torch.equal(lower, torch.tensor([0.0, 1.0, 2.0, 4.0]))
    assert torch.equal(upper, torch.tensor([1.0, float("inf"), 4.0, 8.0]))


def test_batch_adam_matches_torch_adam_and_freezes_inactive_examples() -> None:
    start = torch.randn(3, 4)
    grads = [torch.randn(3, 4) for _ in range(4)]
    ref = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=0.1)
    ours, adam = start.clone(), BatchAdam(start, lr=0.1)
    active = torch.tensor([True, True, False])
    for g in grads:
        opt.zero_grad()
        ref.grad = g.clone()
        opt.step()
        ours = adam.step(ours, g, active)
    assert torch.allclose(ours[:2], ref.detach()[:2], atol=1e-6)
    assert torch.equal(ours[2], start[2])


def test_seed000_first_step_is_lr_times_sign_of_the_class_gradient_through_the_front_end() -> None:
    victim = trained_victim()
    wave, labels = tones(1, seed=4)
    lr = 1e-3
    result = create_attack("cw_seed000", alpha=1.0, clip_eps=0.5, learning_rate=lr, max_iterations=1)(
        victim, wave, labels)
    x = wave.clone().requires_grad_(True)
    grad, = torch.autograd.grad(log_odds(victim(x), labels).sum(), x)
    expected = (wave - lr * grad.sign()).clamp(-1, 1)
    assert (grad != 0).float().mean() > 0.9
    assert torch.allclose(result.adversarial[0], expected, atol=1e-7)
    assert (result.iterations == 1).all()


def test_seed000_stops_each_example_at_its_first_success() -> None:
    victim = trained_victim()
    wave, labels = tones(2, seed=3)
    targets = (labels + 1) % 3
    kwargs = dict(targeted=True, alpha=1.0, clip_eps=0.2, learning_rate=0.005)
    full = create_attack("cw_seed000", max_iterations=200, **kwargs)(victim, wave, labels, targets=targets)
    iters = full.iterations[0]
    assert full.success.all() and torch.equal(full.adv_logits[0].argmax(dim=1), targets)
    assert (full.adversarial[0] - full.clean).abs().amax() <= 0.2 + 1e-6
    assert victim.bounds("waveform").contains(full.adversarial[0]).all()
    cut = int(iters.float().median())
    assert iters.min() <= cut < iters.max()
    short = create_attack("cw_seed000", max_iterations=cut, **kwargs)(victim, wave, labels, targets=targets)
    assert torch.equal(short.success[0], iters <= cut)
    assert torch.allclose(short.adversarial[0][iters <= cut], full.adversarial[0][iters <= cut])


def test_seed000_untargeted_in_the_representation_domain_stays_in_bounds() -> None:
    victim = trained_victim()
    wave, labels = tones(2, seed=2)
    result = create_attack("cw_seed000", domain="representation", alpha=10.0, clip_eps=2.0, learning_rate=0.01,
                           max_iterations=300)(victim, wave, labels)
    assert result.success.all()
    assert (result.adversarial[0] - result.clean).abs().amax() <= 2.0 + 1e-5
    assert victim.bounds("representation").contains(result.adversarial[0]).all()


def test_multiscale_loss_is_zero_at_the_clean_input_and_positive_elsewhere() -> None:
    x = 0.3 * torch.randn(3, 1, 300, dtype=torch.float64)
    loss = MultiScaleSpectralLoss(x)
    assert loss.fft_sizes == (256, 128, 64)
    assert torch.equal(loss(x), torch.zeros(3, dtype=torch.float64))
    delta = torch.zeros_like(x)
    delta[1, 0, 100] = 1e-3
    delta[2] = 0.05 * torch.randn(1, 300, dtype=torch.float64)
    value = loss(x + delta)
    assert value[0] == 0 and value[1] > 0 and value[2] > value[1]


def test_multiscale_loss_on_a_constant_signal_matches_the_hand_computed_value() -> None:
    """x = 0 vs x̂ = c (T = n = 64, hop 16 → 5 frames of 33 bins): a periodic Hann window's DFT is
    n/2 at bin 0, n/4 at bin 1 and 0 elsewhere, so |X̂| = 32c, 16c on bins 0, 1 of every frame."""
    c = 0.5
    zero = torch.zeros(1, 1, 64, dtype=torch.float64)
    value = MultiScaleSpectralLoss(zero, (2048, 64))(torch.full_like(zero, c))
    lin = (32 * c + 16 * c) / 33
    log = (math.log(32 * c + 1e-7) - math.log(1e-7) + math.log(16 * c + 1e-7) - math.log(1e-7)) / 33
    assert value.item() == pytest.approx(lin + log, rel=1e-6)


def test_multiscale_loss_matches_librosa_stft() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 1, 512, generator=gen, dtype=torch.float64)
    adv = x + 0.1 * torch.randn(1, 1, 512, generator=gen, dtype=torch.float64)
    expected = 0.0
    for n in (512, 256, 128, 64):
        a, b = (np.abs(librosa.stft(s.numpy().ravel(), n_fft=n, hop_length=n // 4, window="hann", center=True,
                                    pad_mode="reflect")) for s in (x, adv))
        expected += np.abs(a - b).mean() + np.abs(np.log(a + 1e-7) - np.log(b + 1e-7)).mean()
    assert MultiScaleSpectralLoss(x)(adv).item() == pytest.approx(expected, rel=1e-6)


def test_multiscale_loss_rejects_a_clip_shorter_than_every_fft_size() -> None:
    with pytest.raises(ValueError, match="shorter than every FFT size"):
        MultiScaleSpectralLoss(torch.zeros(1, 1, 50))


def test_cw_multiscale_targeted_hits_target_within_clip_and_bounds() -> None:
    victim = trained_victim()
    wave, labels = tones(2, seed=11)
    targets = (labels + 1) % 3
    result = create_attack("cw_multiscale", targeted=True, alpha=1.0, clip_eps=0.2, learning_rate=0.005,
                           max_iterations=200)(victim, wave, labels, targets=targets)
    assert torch.equal(result.adv_logits[0].argmax(dim=1), targets)
    assert (result.adversarial[0] - result.clean).abs().amax() <= 0.2 + 1e-6
    assert victim.bounds("waveform").contains(result.adversarial[0]).all()
    assert result.norm == "l2"
    assert torch.allclose(result.norms[0], (result.adversarial[0] - wave).flatten(1).norm(dim=1))


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("cw_multiscale", {"domain": "representation"}, "works in the waveform domain only"),
    ("cw_seed000", {"clip_eps": 0.0}, "clip_eps"),
    ("cw_l2", {"binary_search_steps": 0}, "binary_search_steps"),
    ("cw_l2", {"initial_const": -1.0}, "initial_const"),
])
def test_bad_settings_are_one_line_errors(name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        create_attack(name, **kwargs)
    assert "\n" not in str(err.value)
