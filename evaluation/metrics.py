"""Robustness metrics as pure tensor functions (SPEC "Evaluation"; seeds 000, 001, 004).

Definitions used throughout (every function below implements one of them):

- Base set: evaluation examples the victim classifies correctly on clean input (report its size).
- Minimal perturbation ε*ᵢ: for a minimum-norm attack (DeepFool, C&W, L-BFGS, JSMA) the norm of what
  it found; for a fixed-budget attack (FGSM, BIM, PGD, NES) the smallest budget at which it succeeds,
  found by a budget sweep refined by bisection; ∞ where it never succeeds up to ε_max.
- Fooling-rate curve FR(ε) = share of the base set with ε*ᵢ ≤ ε (the empirical CDF of ε*).
- Fooling AUC = (1/ε_max)·∫₀^ε_max FR(ε) dε, in [0, 1] (closed form: mean over the base set of
  max(0, ε_max − ε*ᵢ)/ε_max); seed 004 uses ‖ε‖₂ ≤ 3 in the representation domain. Also FR(ε_max).
- Budget allocation ε₀.₉ = the smallest ε with FR(ε) ≥ 0.9 (seed 004's "AUC > 0.9" budget); ∞ if never.
- ε_r (seed 004, Eq. 15) = mean ε* over the examples broken within ε₀.₉ on the adversarially trained
  model ÷ the same on the original model, same attack, representation and architecture. Also the
  ratio of the ε₀.₉ values.
- SNR = 20·log10(‖x‖₂ / ‖δ‖₂) dB on waveforms (seed 000 trims 2048 samples at each end: an option);
  seed 001's 10·log10(mean x² / mean δ²) is the same quantity.
- Transfer rate T[a→b] = share of the examples crafted on model a (adversarial examples that fool a,
  from a's base set) that also fool model b, among those b classifies correctly on clean input
  (seed 001, Table 5; without clean predictions, every example that fools a counts).

Empty inputs give ``nan`` (no example, no rate) rather than an error, so a report still renders.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def fooling_rate(eps_star: Tensor, eps: float | Tensor) -> Tensor:
    """FR(ε): share of the base set with ε*ᵢ ≤ ε, for a scalar or a ``(K,)`` grid of budgets.

    Args:
        eps_star: ``(n,)`` minimal perturbations of the base set (``inf`` = never broken).
        eps: budget(s).

    Returns:
        A 0-d tensor for a scalar ``eps``, else ``(K,)``; ``nan`` for an empty base set.
    """
    e = torch.as_tensor(eps, dtype=eps_star.dtype, device=eps_star.device)
    if eps_star.numel() == 0:
        return torch.full(e.shape, math.nan, dtype=eps_star.dtype, device=eps_star.device)
    return (eps_star[None, :] <= e.reshape(-1, 1)).to(eps_star.dtype).mean(dim=1).reshape(e.shape)


def fooling_auc(eps_star: Tensor, eps_max: float) -> float:
    """Fooling AUC = (1/ε_max)·∫₀^ε_max FR(ε) dε = mean of max(0, ε_max − ε*ᵢ)/ε_max (seed 004).

    Raises:
        ValueError: if ``eps_max`` is not positive.
    """
    if eps_max <= 0:
        raise ValueError(f"eps_max must be > 0, got {eps_max}")
    if eps_star.numel() == 0:
        return math.nan
    area = (eps_max - eps_star.double()).clamp_min(0.0) / eps_max
    return float(area.mean())


def eps_at_rate(eps_star: Tensor, rate: float = 0.9) -> float:
    """Smallest ε with FR(ε) ≥ ``rate`` (ε₀.₉ for the default); ``inf`` if the rate is never reached.

    The ``k = ⌈rate·n⌉``-th smallest ε* (ties count together), since FR jumps only at the ε*ᵢ.
    """
    if not 0 < rate <= 1:
        raise ValueError(f"rate must lie in (0, 1], got {rate}")
    n = eps_star.numel()
    if n == 0:
        return math.nan
    k = max(1, math.ceil(round(rate * n, 9)))
    return float(eps_star.double().sort().values[k - 1])


def mean_eps_within(eps_star: Tensor, limit: float) -> float:
    """Mean ε* over the examples broken within ``limit`` (ε*ᵢ ≤ limit); ``nan`` if there are none.

    With ``limit = ε₀.₉`` this is the per-model quantity of seed 004's Eq. 15; with ``limit = inf``
    it is the mean over every example broken within ε_max.
    """
    inside = eps_star[torch.isfinite(eps_star) & (eps_star <= limit)]
    return float(inside.double().mean()) if inside.numel() else math.nan


def _ratio(num: float, den: float) -> float:
    if math.isnan(num) or math.isnan(den) or den == 0 or (math.isinf(num) and math.isinf(den)):
        return math.nan
    return num / den


def epsilon_ratio(defended_eps_star: Tensor, original_eps_star: Tensor, rate: float = 0.9) -> dict[str, float]:
    """ε_r of seed 004 (Eq. 15) and the ratio of the ε₀.₉ budgets, from the two models' ε*.

    ε_r = mean ε* over the examples broken within ε₀.₉ on the defended model ÷ the same on the
    original. When a model never reaches FR ≥ 0.9 (ε₀.₉ = ∞) its mean runs over every example broken
    within ε_max (ε* ≤ ∞) and ``eps_r_partial`` is 1: that mean leaves out the hardest examples, so
    ε_r is then a lower bound for a defended model that never reaches 0.9. A ratio with an undefined
    side (no example broken, or ∞/∞) is ``nan``.

    Returns:
        ``eps_r``, ``eps090_ratio`` (∞ when only the defended model never reaches 0.9) and
        ``eps_r_partial`` (1.0 if either model's ε₀.₉ is ∞ or undefined, else 0.0).
    """
    e_def, e_org = eps_at_rate(defended_eps_star, rate), eps_at_rate(original_eps_star, rate)
    m_def, m_org = mean_eps_within(defended_eps_star, e_def), mean_eps_within(original_eps_star, e_org)
    return ratio_from_summaries(m_def, e_def, m_org, e_org)


def ratio_from_summaries(mean_def: float, eps090_def: float, mean_org: float, eps090_org: float) -> dict[str, float]:
    """:func:`epsilon_ratio` from already summarised values (e.g. metrics read back from MLflow)."""
    partial = not (math.isfinite(eps090_def) and math.isfinite(eps090_org))
    return {"eps_r": _ratio(mean_def, mean_org), "eps090_ratio": _ratio(eps090_def, eps090_org),
            "eps_r_partial": float(partial)}


def snr_db(clean: Tensor, adversarial: Tensor, trim: int = 0) -> Tensor:
    """Per-example SNR = 20·log10(‖x‖₂ / ‖δ‖₂) in dB with δ = x' − x (seeds 000, 001).

    Args:
        clean: ``(N, ..., T)`` waveforms.
        adversarial: same shape.
        trim: samples dropped at each end of the last axis first (seed 000 uses 2048).

    Returns:
        ``(N,)`` float64; ``inf`` where δ = 0.
    """
    if clean.shape != adversarial.shape:
        raise ValueError(f"clean {tuple(clean.shape)} and adversarial {tuple(adversarial.shape)} differ in shape")
    if trim < 0 or 2 * trim >= clean.shape[-1]:
        raise ValueError(f"trim {trim} must be >= 0 and leave samples of the {clean.shape[-1]}")
    x = clean.double()[..., trim:clean.shape[-1] - trim]
    d = adversarial.double()[..., trim:adversarial.shape[-1] - trim] - x
    return 20 * torch.log10(x.flatten(1).norm(dim=1) / d.flatten(1).norm(dim=1))


def label_confidences(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax confidence of the predicted (new) label and of the true label (seed 001).

    Returns:
        ``(conf_predicted, conf_true)``, each ``(N,)``.
    """
    prob = logits.double().softmax(dim=-1)
    return prob.amax(dim=-1), prob.gather(1, labels.view(-1, 1)).squeeze(1)


def confusion_matrix(labels: Tensor, predictions: Tensor, num_classes: int) -> Tensor:
    """``(C, C)`` int64 counts, rows = true label, columns = prediction (sklearn's convention)."""
    index = labels.long() * num_classes + predictions.long()
    return torch.bincount(index.cpu(), minlength=num_classes * num_classes).view(num_classes, num_classes)


def transfer_masks(fooled: Tensor, clean_correct: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per example, which ``a → b`` transfers count and which of them succeed (seed 001, Table 5).

    Args:
        fooled: ``(M, M, N)`` bool; ``fooled[a, b, i]`` is true when the adversarial example crafted
            on model ``a`` for example ``i`` fools model ``b`` (``fooled[a, a, i]``: the attack on ``a``
            succeeded).
        clean_correct: ``(M, N)`` bool, model ``b`` classifies example ``i`` correctly on clean input
            (its base set); ``None`` counts every example as correctly classified.

    Returns:
        ``(eligible, hit)``, each ``(M, M, N)`` bool: ``eligible[a, b, i]`` = crafted on ``a`` (fools
        ``a`` and lies in ``a``'s base set) and in ``b``'s base set; ``hit`` = eligible and fools ``b``.

    Raises:
        ValueError: for shapes other than ``(M, M, N)`` and ``(M, N)``.
    """
    if fooled.dim() != 3 or fooled.shape[0] != fooled.shape[1]:
        raise ValueError(f"fooled must be shaped (M, M, N), got {tuple(fooled.shape)}")
    m, n = fooled.shape[0], fooled.shape[2]
    correct = clean_correct.bool() if clean_correct is not None else torch.ones(m, n, dtype=torch.bool,
                                                                                 device=fooled.device)
    if tuple(correct.shape) != (m, n):
        raise ValueError(f"clean_correct must be shaped ({m}, {n}), got {tuple(correct.shape)}")
    crafted = torch.diagonal(fooled.bool(), dim1=0, dim2=1).T & correct
    eligible = crafted[:, None, :] & correct[None, :, :]
    return eligible, eligible & fooled.bool()


def transfer_matrix(fooled: Tensor, clean_correct: Tensor | None = None) -> Tensor:
    """Transfer rates T[a→b] (seed 001, Table 5): ``|hit| / |eligible|`` of :func:`transfer_masks`.

    Args:
        fooled: ``(M, M, N)`` bool, see :func:`transfer_masks`.
        clean_correct: ``(M, N)`` bool base sets; ``None`` counts every example that fools ``a``.

    Returns:
        ``(M, M)`` float64, ``nan`` where no example is eligible; the diagonal is 1 wherever defined.
    """
    eligible, hit = transfer_masks(fooled, clean_correct)
    count = eligible.double().sum(dim=2)
    return torch.where(count > 0, hit.double().sum(dim=2) / count.clamp_min(1), torch.full_like(count, math.nan))


def median(values: Tensor) -> float:
    """Median (mean of the two middle values for even counts); ``nan`` if empty."""
    if values.numel() == 0:
        return math.nan
    return float(values.double().quantile(0.5))
