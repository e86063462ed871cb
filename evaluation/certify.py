"""Randomized smoothing: prediction, certified L2 radius and certified accuracy (Cohen, Rosenfeld & Kolter
2019, "Certified adversarial robustness via randomized smoothing", ICML).

The smoothed classifier ``g(x) = argmax_c P(f(x + ε) = c)``, ``ε ~ N(0, σ² I)``, is built from a base
classifier ``f`` (a map from a batch to logits, in the waveform or the representation domain). If the top
class has probability ``p_A`` under the noise, ``g`` is constant on the L2 ball of radius ``σ·Φ⁻¹(p_A)``
around ``x`` (Cohen et al., Theorem 1 with ``p_B = 1 − p_A``). Monte Carlo turns that into:

- PREDICT (Cohen et al., Pseudocode): the top two counts of ``n`` noisy draws pass a two-sided binomial
  test at ``α`` or the prediction abstains; it returns a class other than ``g(x)`` with probability ≤ α.
- CERTIFY: guess the top class from ``n₀`` draws, count it in ``n`` fresh draws, take the one-sided
  Clopper–Pearson lower bound ``p̲_A`` at level 1 − α; certify radius ``σ·Φ⁻¹(p̲_A)`` if ``p̲_A > ½``,
  else abstain. A returned certificate is wrong with probability ≤ α.

The noise is added as it is, without clipping to the domain's bounds (as Cohen et al.), and the noise-
augmented training objective (``defense.objectives.GaussianAugment``) does the same, so the base classifier
is trained on the distribution it is smoothed over. The decision rules are pure functions of counts
(:func:`predict_from_counts`, :func:`certify_from_counts`) so they are testable without sampling.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from evaluation.stats import wilson_interval

ABSTAIN = -1
"""Prediction of an example on which the smoothed classifier abstains."""


def clopper_pearson_lower(k: int | np.ndarray, n: int | np.ndarray, alpha: float) -> float | np.ndarray:
    """One-sided (1 − α) Clopper–Pearson lower confidence bound on a binomial proportion from ``k`` of ``n``.

    The α quantile of Beta(k, n − k + 1), i.e. Cohen et al.'s ``proportion_confint(k, n, alpha=2α,
    method="beta")[0]``; 0 for ``k = 0`` and ``α^(1/n)`` for ``k = n``. Array inputs broadcast.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    k_arr, n_arr = np.broadcast_arrays(np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64))
    if np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise ValueError("clopper_pearson_lower needs 0 <= k <= n")
    low = np.where(k_arr > 0, stats.beta.ppf(alpha, np.maximum(k_arr, 1), n_arr - k_arr + 1), 0.0)
    return float(low) if low.ndim == 0 else low


def predict_from_counts(counts: Tensor, alpha: float) -> Tensor:
    """Cohen et al.'s PREDICT on ``(N, C)`` counts: the top class if a two-sided binomial test of its count
    ``n_A`` against the runner-up's ``n_B`` (``Bin(n_A + n_B, ½)``) rejects at ``alpha``, else
    :data:`ABSTAIN`. Ties (``n_A = n_B``) always abstain. Returns ``(N,)`` int64."""
    top, cls = counts.topk(2, dim=1)
    n_a, n_b = top[:, 0].cpu().numpy(), top[:, 1].cpu().numpy()
    # Bin(m, ½) is symmetric, so the two-sided p-value is 2·P(X ≤ min(n_A, n_B)), capped at 1 (binomtest's value)
    pvalue = np.minimum(1.0, 2 * stats.binom.cdf(n_b, n_a + n_b, 0.5))
    keep = torch.as_tensor(pvalue <= alpha, device=counts.device)
    return torch.where(keep, cls[:, 0], torch.full_like(cls[:, 0], ABSTAIN))


def certify_from_counts(guess: Tensor, counts: Tensor, alpha: float, sigma: float) -> tuple[Tensor, Tensor]:
    """Cohen et al.'s CERTIFY decision from the guessed class ``(N,)`` and ``(N, C)`` estimation counts.

    Returns:
        ``(pred, radius)``: ``guess`` and ``σ·Φ⁻¹(p̲_A)`` (float64) where the Clopper–Pearson lower bound
        ``p̲_A`` of the guess's share exceeds ½; :data:`ABSTAIN` and radius 0 elsewhere.
    """
    n_a = counts.gather(1, guess.view(-1, 1)).squeeze(1).cpu().numpy()
    p_low = np.atleast_1d(clopper_pearson_lower(n_a, counts.sum(1).cpu().numpy(), alpha))
    certified = p_low > 0.5
    radius = np.where(certified, sigma * stats.norm.ppf(p_low), 0.0)
    keep = torch.as_tensor(certified, device=guess.device)
    pred = torch.where(keep, guess, torch.full_like(guess, ABSTAIN))
    return pred, torch.as_tensor(radius, dtype=torch.float64, device=guess.device)


class SmoothedClassifier:
    """The Gaussian-smoothed version of a base classifier (Cohen et al. 2019).

    Args:
        model_fn: base classifier, a batch in some domain (waveform ``(B, 1, T)`` or representation
            ``(B, 1, F, frames)``) → ``(B, C)`` logits; put a module in eval mode before wrapping it.
        num_classes: ``C`` (≥ 2).
        sigma: standard deviation of the isotropic Gaussian noise, in the domain's units.
    """

    def __init__(self, model_fn: Callable[[Tensor], Tensor], num_classes: int, sigma: float) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.model_fn, self.num_classes, self.sigma = model_fn, int(num_classes), float(sigma)

    def sample_counts(self, x: Tensor, num: int, batch_size: int, *,
                      generator: torch.Generator | None = None) -> Tensor:
        """How often each class is the base classifier's argmax over ``num`` noisy copies of each example.

        Args:
            x: ``(N, ...)`` clean inputs (``N`` may be 1).
            num: noise draws per example.
            batch_size: noisy inputs per call of ``model_fn`` (draws of several examples share a batch).
            generator: source of the noise (on ``x``'s device); torch's global RNG when ``None``.

        Returns:
            ``(N, C)`` int64 counts on ``x``'s device, each row summing to ``num``.
        """
        if num < 0 or batch_size < 1:
            raise ValueError(f"need num >= 0 and batch_size >= 1, got {num} and {batch_size}")
        n_ex, c = x.shape[0], self.num_classes
        counts = torch.zeros(n_ex * c, dtype=torch.long, device=x.device)
        total = n_ex * num
        with torch.no_grad():
            for start in range(0, total, batch_size):
                example = torch.arange(start, min(start + batch_size, total), device=x.device) // num
                clean = x[example]
                noise = torch.randn(clean.shape, generator=generator, dtype=clean.dtype, device=clean.device)
                top = self.model_fn(clean + self.sigma * noise).argmax(1)
                counts.index_add_(0, example * c + top, torch.ones_like(top))
        return counts.view(n_ex, c)

    def predict(self, x: Tensor, n: int, alpha: float, batch_size: int, *,
                generator: torch.Generator | None = None) -> Tensor:
        """PREDICT: ``(N,)`` int64 smoothed predictions from ``n`` draws each, :data:`ABSTAIN` where the top
        two classes are not told apart at ``alpha``."""
        return predict_from_counts(self.sample_counts(x, n, batch_size, generator=generator), alpha)

    def certify(self, x: Tensor, n0: int, n: int, alpha: float, batch_size: int, *,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """CERTIFY: ``(pred (N,) int64, radius (N,) float64)``; the class is guessed from ``n0`` draws and
        its probability bounded from ``n`` fresh draws, so the guess does not bias the bound."""
        guess = self.sample_counts(x, n0, batch_size, generator=generator).argmax(1)
        counts = self.sample_counts(x, n, batch_size, generator=generator)
        return certify_from_counts(guess, counts, alpha, self.sigma)


def _radii(radii: Sequence[float] | Tensor) -> Tensor:
    return torch.as_tensor(radii, dtype=torch.float64).flatten()


def _certified_correct(pred: Tensor, radius: Tensor, labels: Tensor, radii: Tensor) -> Tensor:
    """``(R, N)`` bool: example certified correct at least up to each radius (abstentions never are)."""
    correct = (pred.cpu() == labels.cpu()) & (pred.cpu() != ABSTAIN)
    return correct.unsqueeze(0) & (radius.cpu().double().unsqueeze(0) >= radii.unsqueeze(1))


def certified_accuracy(pred: Tensor, radius: Tensor, labels: Tensor, radii: Sequence[float] | Tensor) -> Tensor:
    """``(R,)`` float64: share of examples whose certified prediction is the label with radius ≥ ``r``,
    for each ``r`` of ``radii`` (Cohen et al.'s "approximate certified test set accuracy")."""
    return _certified_correct(pred, radius, labels, _radii(radii)).double().mean(dim=1)


def certified_accuracy_interval(pred: Tensor, radius: Tensor, labels: Tensor, radii: Sequence[float] | Tensor,
                                level: float = 0.95) -> Tensor:
    """``(R, 2)`` float64 Wilson intervals (low, high) of :func:`certified_accuracy` over the examples."""
    n = int(labels.numel())
    rates = certified_accuracy(pred, radius, labels, radii).tolist()
    return torch.tensor([wilson_interval(rate, n, level) for rate in rates], dtype=torch.float64).view(-1, 2)


def certified_curve_area(pred: Tensor, radius: Tensor, labels: Tensor) -> float:
    """Area under certified accuracy vs radius over ``[0, ∞)``.

    Exactly the mean over examples of their radius where the certified prediction is correct (0 elsewhere):
    ``∫₀^∞ (1/N)·Σᵢ 1[correctᵢ ∧ Rᵢ ≥ r] dr = (1/N)·Σᵢ 1[correctᵢ]·Rᵢ``. Units: the domain's L2 units.
    """
    correct = (pred.cpu() == labels.cpu()) & (pred.cpu() != ABSTAIN)
    return float(torch.where(correct, radius.cpu().double(), 0.0).mean()) if labels.numel() else float("nan")


@dataclass(frozen=True)
class RadiusCheck:
    """Result of :func:`radius_violations`.

    Attributes:
        indices: ``(V,)`` int64 examples whose smoothed prediction flipped inside the certified radius.
        count: ``V``.
        eligible: examples certified correct whose adversarial perturbation lies inside the radius.
        failure_rate: bound on the chance that one eligible example shows a violation (certificate wrong,
            or PREDICT on the adversarial input wrong): ``alpha + predict_alpha``.
        expected: ``eligible · failure_rate``, the bound on the expected count.
        threshold: the ``1 − alpha`` quantile of ``Bin(eligible, failure_rate)``; counts above it are flagged.
        flagged: ``count > threshold``: more violations than the certificates' error rate explains.
    """

    indices: Tensor
    count: int
    eligible: int
    failure_rate: float
    expected: float
    threshold: int
    flagged: bool


def radius_violations(pred: Tensor, radius: Tensor, labels: Tensor, adv_norm: Tensor, adv_pred: Tensor,
                      alpha: float, predict_alpha: float | None = None) -> RadiusCheck:
    """Sanity check: no attack finds an adversarial example inside an example's certified radius.

    A violation is an example whose certified prediction is correct, whose adversarial perturbation has
    ``‖δ‖₂ < radius``, and whose smoothed prediction of ``x + δ`` (from :meth:`SmoothedClassifier.predict`)
    is another, non-abstained class. The certificates are probabilistic: each is wrong with probability ≤
    ``alpha``, and PREDICT on ``x + δ`` returns a class other than ``g(x + δ)`` with probability ≤
    ``predict_alpha``, so independent examples show violations at a rate ≤ ``alpha + predict_alpha``
    even when everything is right. The check flags only a count above the ``1 − alpha`` quantile of that
    binomial (a false alarm then has probability ≤ ``alpha``).

    Args:
        pred, radius: ``(N,)`` clean CERTIFY outputs.
        labels: ``(N,)`` true classes.
        adv_norm: ``(N,)`` L2 norms of the adversarial perturbations (in the certificate's domain).
        adv_pred: ``(N,)`` smoothed PREDICT outputs on the adversarial inputs.
        alpha: CERTIFY's α.
        predict_alpha: PREDICT's α on the adversarial inputs; ``alpha`` when ``None``.
    """
    pred, radius, labels = pred.cpu(), radius.cpu().double(), labels.cpu()
    adv_norm, adv_pred = adv_norm.cpu().double(), adv_pred.cpu()
    eligible = (pred == labels) & (pred != ABSTAIN) & (adv_norm < radius)
    violated = eligible & (adv_pred != pred) & (adv_pred != ABSTAIN)
    rate = min(1.0, alpha + (alpha if predict_alpha is None else predict_alpha))
    m = int(eligible.sum())
    threshold = int(stats.binom.ppf(1 - alpha, m, rate)) if m else 0
    count = int(violated.sum())
    return RadiusCheck(torch.nonzero(violated).flatten(), count, m, rate, m * rate, threshold, count > threshold)
