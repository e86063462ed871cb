"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): Clopper–Pearson and PREDICT/CERTIFY decisions against
scipy on fixed counts, the certified radius of a linear classifier against its closed form, certified accuracy
and its area on hand-made vectors, the radius sanity check, and the noise-augmented training objective."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import Tensor

from defense import objectives as O
from defense.config import load_option
from evaluation import certify as C
from evaluation.stats import wilson_interval
from tiny import make_victim, tones
from training.data.base import ClipSet
from training.trainer import TrainConfig, selection_criterion, train
from victims.registry import ConfigError

# ---------------------------------------------------------------- Clopper–Pearson


@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_clopper_pearson_matches_scipy_exact_interval(alpha: float) -> None:
    cases = [(1, 1), (3, 10), (7, 10), (50, 100), (99, 100), (990, 1000), (12_345, 100_000)]
    k, n = np.array(cases).T
    got = C.clopper_pearson_lower(k, n, alpha)
    want = [stats.binomtest(int(a), int(b)).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low
            for a, b in cases]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert C.clopper_pearson_lower(3, 10, alpha) == pytest.approx(want[1], rel=1e-9)


def test_clopper_pearson_hand_cases() -> None:
    assert C.clopper_pearson_lower(0, 10, 0.001) == 0.0
    for n in (1, 10, 1000):  # k = n: P(Bin(n, p) = n) = p^n = alpha at the bound
        assert C.clopper_pearson_lower(n, n, 0.001) == pytest.approx(0.001 ** (1 / n), rel=1e-12)
    np.testing.assert_array_equal(C.clopper_pearson_lower(np.array([0, 0]), np.array([5, 50]), 0.01), [0.0, 0.0])
    with pytest.raises(ValueError, match="0 <= k <= n"):
        C.clopper_pearson_lower(11, 10, 0.01)
    with pytest.raises(ValueError, match="alpha"):
        C.clopper_pearson_lower(1, 10, 0.0)

# ---------------------------------------------------------------- decisions on fixed counts


def test_predict_from_counts_is_the_two_sided_binomial_test_of_the_top_two() -> None:
    alpha = 0.05
    rows = [[a, 100 - a] for a in range(40, 75)] + [[40, 45, 15], [30, 30, 40], [40, 40, 20], [0, 0, 7], [0, 1, 0]]
    counts = torch.tensor([r + [0] * (3 - len(r)) for r in rows])
    got = C.predict_from_counts(counts, alpha)
    for row, pred in zip(counts.tolist(), got.tolist()):
        order = np.argsort(row, kind="stable")[::-1]
        n_a, n_b = row[order[0]], row[order[1]]
        reject = stats.binomtest(n_a, n_a + n_b, 0.5).pvalue <= alpha
        assert pred == (int(order[0]) if reject else C.ABSTAIN), row
    assert got[[40 - 40, 60 - 40, 61 - 40]].tolist() == [C.ABSTAIN, C.ABSTAIN, 0]  # p = 1, 0.057, 0.035
    assert got[-5:].tolist() == [C.ABSTAIN, C.ABSTAIN, C.ABSTAIN, 2, C.ABSTAIN]  # 45 vs 40: p = 0.66; ties


def test_certify_from_counts_abstains_unless_the_lower_bound_exceeds_a_half() -> None:
    alpha, sigma = 0.001, 0.5
    guess = torch.tensor([0, 0, 0, 2, 1, 1])
    counts = torch.tensor([[10, 0, 0],      # k = n = 10: bound 0.001^(1/10) = 0.50119 > 1/2, certified
                           [9, 1, 0],       # bound 0.39: abstain
                           [55, 45, 0],     # bound 0.40: abstain
                           [90, 0, 10],     # the guess (class 2) is not the majority: its bound is 0.04
                           [0, 1000, 0],
                           [100, 880, 20]])
    pred, radius = C.certify_from_counts(guess, counts, alpha, sigma)
    p_low = C.clopper_pearson_lower(counts.gather(1, guess.view(-1, 1)).squeeze(1).numpy(), counts.sum(1).numpy(),
                                    alpha)
    assert pred.tolist() == [0, C.ABSTAIN, C.ABSTAIN, C.ABSTAIN, 1, 1]
    assert radius.dtype == torch.float64 and radius[1:4].tolist() == [0.0, 0.0, 0.0]
    assert radius[0].item() == pytest.approx(sigma * stats.norm.ppf(10 ** -0.3), rel=1e-9) and radius[0] > 0
    assert radius[4:].tolist() == pytest.approx((sigma * stats.norm.ppf(p_low[4:])).tolist(), rel=1e-12)
    assert (p_low[1:4] <= 0.5).all()

# ---------------------------------------------------------------- the linear classifier's closed form

D, SIGMA, N, N0, ALPHA = 8, 0.5, 100_000, 100, 1e-4
DELTA = 1e-6  # chance that one count leaves its bracket below


def _linear() -> tuple[Tensor, float, C.SmoothedClassifier]:
    """f(x) = 1 if w·x + b > 0 else 0, as logits (0, w·x + b)."""
    w = torch.randn(D, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    b = 0.3

    def logits(x: Tensor) -> Tensor:
        score = x @ w + b
        return torch.stack([torch.zeros_like(score), score], dim=1)

    return w, b, C.SmoothedClassifier(logits, num_classes=2, sigma=SIGMA)


def _points(w: Tensor, b: float, signed_distances: list[float]) -> Tensor:
    """Points at the given signed L2 distances from the hyperplane w·x + b = 0, off its foot by a random
    direction in it."""
    gen = torch.Generator().manual_seed(12)
    unit = w / w.norm()
    foot = -b * unit / w.norm()
    along = torch.randn(len(signed_distances), D, generator=gen, dtype=torch.float64)
    along = along - (along @ unit).unsqueeze(1) * unit
    return foot + along + torch.tensor(signed_distances, dtype=torch.float64).unsqueeze(1) * unit


def _radius_at(k: int) -> float:
    return SIGMA * stats.norm.ppf(C.clopper_pearson_lower(k, N, ALPHA))


def test_certified_radius_of_a_linear_classifier_approaches_the_distance_to_its_hyperplane() -> None:
    """p_A = Φ(|w·x + b| / (σ‖w‖)), so the smoothed classifier's exact radius is the distance |w·x + b| / ‖w‖.
    CERTIFY's radius σ·Φ⁻¹(p̲_A) lies below it unless the Clopper–Pearson bound fails (probability ≤ α per
    example), and between the radii of the δ and 1 − δ quantiles of n_A ~ Bin(n, p_A) (probability ≥ 1 − 2δ)."""
    w, b, smoothed = _linear()
    signed = [0.5 * SIGMA, -1.0 * SIGMA, 1.5 * SIGMA, -2.0 * SIGMA, 2.5 * SIGMA]
    x = _points(w, b, signed)
    distance = ((x @ w + b).abs() / w.norm()).numpy()
    np.testing.assert_allclose(distance, np.abs(signed), rtol=1e-9)
    torch.manual_seed(0)
    pred, radius = smoothed.certify(x, N0, N, ALPHA, batch_size=50_000)
    assert pred.tolist() == [1 if d > 0 else 0 for d in signed]
    p_a = stats.norm.cdf(distance / SIGMA)
    for r, d, p in zip(radius.tolist(), distance, p_a):
        k_low, k_high = stats.binom.ppf(DELTA, N, p), stats.binom.isf(DELTA, N, p)
        assert _radius_at(int(k_low)) <= r <= _radius_at(int(k_high))
        assert r <= d


def test_on_the_hyperplane_predict_and_certify_abstain() -> None:
    """p_A = p_B = ½ exactly: PREDICT returns a class and CERTIFY certifies each with probability ≤ α."""
    w, b, smoothed = _linear()
    x = _points(w, b, [0.0, 0.0, 0.0])
    gen = torch.Generator().manual_seed(3)
    assert smoothed.predict(x, 10_000, ALPHA, batch_size=30_000, generator=gen).tolist() == [C.ABSTAIN] * 3
    pred, radius = smoothed.certify(x, N0, 10_000, ALPHA, batch_size=30_000, generator=gen)
    assert pred.tolist() == [C.ABSTAIN] * 3 and radius.tolist() == [0.0] * 3
    far = _points(w, b, [3 * SIGMA])
    assert smoothed.predict(far, 1000, ALPHA, batch_size=256, generator=gen).tolist() == [1]


def test_sample_counts_shapes_and_generator() -> None:
    w, b, smoothed = _linear()
    x = _points(w, b, [0.2, -0.1, 0.0])
    counts = smoothed.sample_counts(x, 333, batch_size=100, generator=torch.Generator().manual_seed(5))
    again = smoothed.sample_counts(x, 333, batch_size=100, generator=torch.Generator().manual_seed(5))
    assert counts.shape == (3, 2) and counts.dtype == torch.long and counts.sum(1).tolist() == [333] * 3
    assert torch.equal(counts, again)
    assert smoothed.sample_counts(x[:1], 7, batch_size=4).shape == (1, 2)
    assert smoothed.sample_counts(x, 0, batch_size=4).sum() == 0

# ---------------------------------------------------------------- certified accuracy, its area, the sanity check

PRED = torch.tensor([0, 1, C.ABSTAIN, 2, 1])
LABELS = torch.tensor([0, 1, 1, 0, 1])
RADIUS = torch.tensor([0.5, 1.0, 0.0, 2.0, 0.2], dtype=torch.float64)


def test_certified_accuracy_and_its_interval_on_hand_made_vectors() -> None:
    radii = [0.0, 0.2, 0.5, 1.0, 1.5]
    acc = C.certified_accuracy(PRED, RADIUS, LABELS, radii)
    assert acc.tolist() == pytest.approx([0.6, 0.6, 0.4, 0.2, 0.0])  # abstention and wrong class never count
    interval = C.certified_accuracy_interval(PRED, RADIUS, LABELS, radii)
    assert interval.shape == (5, 2)
    for (low, high), rate in zip(interval.tolist(), acc.tolist()):
        assert (low, high) == pytest.approx(wilson_interval(rate, 5))


def test_certified_curve_area_is_the_mean_radius_of_correct_examples() -> None:
    area = C.certified_curve_area(PRED, RADIUS, LABELS)
    assert area == pytest.approx((0.5 + 1.0 + 0.2) / 5)
    step = 1e-3  # midpoint rule on the step curve: exact except in the cells holding a jump (≤ 3 of them)
    grid = torch.arange(0, 2.5, step, dtype=torch.float64) + step / 2
    riemann = float(C.certified_accuracy(PRED, RADIUS, LABELS, grid).sum()) * step
    assert abs(riemann - area) <= 3 * step / 5


def test_radius_violations_counts_only_flips_inside_a_correct_certificate() -> None:
    pred = torch.tensor([0, 1, 2, C.ABSTAIN, 1, 0])
    labels = torch.tensor([0, 1, 2, 0, 0, 0])
    radius = torch.tensor([1.0, 1.0, 1.0, 0.0, 2.0, 1.0], dtype=torch.float64)
    norm = torch.tensor([0.5, 1.5, 0.5, 0.1, 0.1, 0.3])
    adv = torch.tensor([1, 0, C.ABSTAIN, 1, 2, 0])  # flip / outside / abstained / uncertified / wrong / held
    check = C.radius_violations(pred, radius, labels, norm, adv, alpha=0.001)
    assert check.indices.tolist() == [0] and check.count == 1 and check.eligible == 3
    assert check.failure_rate == pytest.approx(0.002) and check.expected == pytest.approx(0.006)
    # P(Bin(3, 0.002) = 0) = 0.994 < 0.999, so one violation among three is within the certificates' error
    assert check.threshold == 1 and not check.flagged


@pytest.mark.parametrize("count", [0, 3, 8, 9, 30])
def test_radius_check_flags_only_counts_beyond_the_binomial_quantile(count: int) -> None:
    m, alpha = 1000, 0.001
    adv = torch.zeros(m, dtype=torch.long)
    adv[:count] = 1
    check = C.radius_violations(torch.zeros(m, dtype=torch.long), torch.ones(m, dtype=torch.float64),
                                torch.zeros(m, dtype=torch.long), torch.full((m,), 0.5), adv, alpha,
                                predict_alpha=0.01)
    rate = 0.011
    assert check.failure_rate == pytest.approx(rate) and check.eligible == m and check.count == count
    assert stats.binom.cdf(check.threshold, m, rate) >= 1 - alpha > stats.binom.cdf(check.threshold - 1, m, rate)
    assert check.flagged == (count > check.threshold)

# ---------------------------------------------------------------- noise-augmented training


def _noise_seen(domain: str, sigma: float) -> Tensor:
    """The noise the objective's training forward received: its input minus the clean input of the domain."""
    victim = make_victim().train()
    waves, labels = tones(3, seed=5)
    module = victim.backbone if domain == "representation" else victim.frontend
    inputs: list[Tensor] = []
    module.register_forward_hook(lambda _m, args, _out: inputs.append(args[0].detach().clone()))
    O.GaussianAugment(sigma=sigma, domain=domain)(victim, waves, labels, lambda loss: loss.backward())
    clean = victim.to_domain(waves, domain)
    noisy = [t for t in inputs if not torch.equal(t, clean)]
    assert len(noisy) == 1 and len(inputs) == 2  # one eval-mode clean forward, one training forward on x + ε
    return (noisy[0] - clean).double()


@pytest.mark.parametrize("domain,sigma", [("representation", 0.5), ("waveform", 0.01)])
def test_gaussian_augment_noise_has_the_stated_sigma(domain: str, sigma: float) -> None:
    """Σε²/σ² ~ χ²(m) and Σε/(σ√m) ~ N(0, 1): both inside their 10⁻⁶ tails."""
    noise = _noise_seen(domain, sigma)
    m = noise.numel()
    assert stats.chi2.ppf(1e-6, m) < float((noise ** 2).sum()) / sigma ** 2 < stats.chi2.isf(1e-6, m)
    assert abs(float(noise.sum())) / (sigma * math.sqrt(m)) < stats.norm.isf(1e-6)


@pytest.mark.parametrize("domain,sigma", [("representation", 0.5), ("waveform", 0.01)])
def test_gaussian_augment_trains_a_tiny_model(domain: str, sigma: float) -> None:
    victim = make_victim().train()
    waves, labels = tones(5, seed=1)
    objective = O.GaussianAugment(sigma=sigma, domain=domain)
    opt = torch.optim.Adam(victim.parameters(), lr=0.05)
    before = [p.detach().clone() for p in victim.parameters()]
    torch.manual_seed(0)
    for _ in range(5):
        opt.zero_grad()
        out = objective(victim, waves, labels, lambda loss: loss.backward())
        opt.step()
        assert torch.isfinite(out.loss) and out.logits.shape == (15, 3) and not out.logits.requires_grad
    assert all(not torch.equal(p, q) for p, q in zip(victim.parameters(), before))
    victim.zero_grad(set_to_none=True)
    out = objective(victim, waves, labels, lambda loss: None)
    with torch.no_grad():  # the reported logits are the clean batch's, in eval mode
        torch.testing.assert_close(out.logits, victim.eval()(waves))
    logits = objective.robust_logits(victim.train(), waves, labels)
    assert logits.shape == (15, 3) and not logits.requires_grad and victim.training
    assert all(p.grad is None for p in victim.parameters())


def test_gaussian_augment_validates_on_noisy_inputs_in_the_trainer() -> None:
    objective = O.GaussianAugment(sigma=0.5)
    assert selection_criterion("auto", objective) == "robust"

    def clips(seed: int) -> ClipSet:
        waves, labels = tones(5, seed=seed)
        return ClipSet(waves, labels, torch.arange(15), torch.full((15,), -1), ["low", "mid", "high"], 800)

    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.02, patience=None, device="cpu", seed=3)
    result = train(make_victim(), clips(1), clips(2), clips(3), cfg, objective=objective)
    assert all(0.0 <= h["val_robust_accuracy"] <= 1.0 for h in result.history)


def test_smoothing_configs_and_bad_values() -> None:
    for option, domain, sigma in (("smooth_rep", "representation", 0.5), ("smooth_wave", "waveform", 0.01)):
        cfg = load_option("defense", option)
        objective = O.OBJECTIVES.create(cfg.pop("name"), **cfg)
        assert isinstance(objective, O.GaussianAugment)
        assert (objective.domain, objective.sigma) == (domain, sigma)
    with pytest.raises(ConfigError, match="sigma must be > 0"):
        O.OBJECTIVES.create("gaussian_augment", sigma=0.0)
    with pytest.raises(ConfigError, match="domain"):
        O.OBJECTIVES.create("gaussian_augment", domain="spectrum")


def test_clopper_pearson_equals_the_bound_art_certifies_with() -> None:
    """ART's ``RandomizedSmoothingMixin._lower_confidence_bound`` (Cohen et al.'s reference code too) is
    statsmodels' two-sided beta interval at 2α: the same number as ours."""
    from statsmodels.stats.proportion import proportion_confint

    for k, n, alpha in [(1, 10, 0.05), (55, 100, 0.001), (990, 1000, 0.001), (99_999, 100_000, 0.001)]:
        assert C.clopper_pearson_lower(k, n, alpha) == pytest.approx(
            proportion_confint(k, n, alpha=2 * alpha, method="beta")[0], rel=1e-12)


def test_certify_metrics_carry_their_intervals() -> None:
    """Hand-made certificates: 2 of 4 clips correct (radii 0.5 and 1.0), one abstention, one wrong class."""
    from defense.inference import certify_metrics
    from evaluation.stats import wilson_interval

    record = {"pred": [0, 1, -1, 1], "radius": [0.5, 0.25, 0.0, 1.0], "label": [0, 0, 1, 1], "radii": [0.25, 0.75],
              "sigma": 0.5}
    m = certify_metrics(record, level=0.95, n_boot=500, seed=0)
    assert m["certified_accuracy.r0.25"] == 0.5 and m["certified_accuracy.r0.75"] == 0.25
    assert m["smoothed_accuracy"] == 0.5 and m["abstain_rate"] == 0.25
    assert (m["abstain_rate_ci_low"], m["abstain_rate_ci_high"]) == pytest.approx(wilson_interval(0.25, 4, 0.95))
    assert m["certified_auc"] == pytest.approx((0.5 + 1.0) / 4)
    assert 0.0 <= m["certified_auc_ci_low"] <= m["certified_auc"] <= m["certified_auc_ci_high"] <= 1.0
