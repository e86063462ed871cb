"""A perceptual threat model for waveforms, and PGD under it (Qin, Carlini, Cottrell, Goodfellow & Raffel 2019,
"Imperceptible, robust and targeted adversarial examples for automatic speech recognition", Sec. 4).

The perceptual size of a perturbation δ of a clip x is its amplitude above the clip's masking threshold,

    ‖δ‖_x = 10^(D(x, δ)/20) = max over frames t and audible bins k of √(p_δ(t, k) / θ_x(t, k))   (powers)

with D the perceptual distance of :mod:`attacks.psychoacoustic`. ‖δ‖_x ≤ 1 exactly when δ is masked in every
frame and bin (Qin et al.'s constraint), and ‖a·δ‖_x = |a|·‖δ‖_x: budgets, the ε* search, the fooling AUC and
ε_r work in these units as in an Lp norm (a budget of 2 lets δ rise 6 dB above the threshold). The STFT belongs
to the threat model, not to an attack's settings, so every attack measures the same quantity at a sample rate:
a Hann window of about 128 ms (a power of two: 2048 samples at 16 kHz, Qin's setting; 1024 at 8 kHz), hop a
quarter of it (:func:`stft_setting`).

Samples the frames barely measure are left unperturbed: where the summed squared window of the frames covering a
sample is under :data:`COVERAGE` of its largest value (the clip's first and last few milliseconds, and a tail
shorter than a hop that no frame reaches), the distance would not see a change.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from attacks.base import ATTACKS, Attack, ModelFn, RunOutput
from attacks.gradient import ascend
from attacks.psychoacoustic import Masking, PsychoacousticModel
from attacks.threat import norms as l2_norms
from attacks.threat import perturbation_norm
from victims.bounds import Bounds
from victims.victim import Domain, Victim

NORM = "perceptual"
WINDOW_SECONDS = 0.128
COVERAGE = 0.1
_TINY = 1e-30


def stft_setting(sample_rate: int) -> tuple[int, int]:
    """``(n_fft, hop)`` of the perceptual threat model at ``sample_rate``: the power of two nearest 128 ms and a
    quarter of it."""
    n_fft = 2 ** max(3, round(math.log2(WINDOW_SECONDS * sample_rate)))
    return n_fft, n_fft // 4


class PerceptualBall:
    """The perceptual sizes of perturbations of a batch of clean waveforms ``(N, 1, T)`` (module docstring).

    Raises:
        ConfigError: a clip shorter than one STFT frame of the threat model.
    """

    def __init__(self, clean: Tensor, sample_rate: int) -> None:
        n_fft, hop = stft_setting(sample_rate)
        self.model = PsychoacousticModel(sample_rate, n_fft, hop)
        self.masking = self.model.masking(clean)
        length = clean.shape[-1]
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64).square()
        cover = torch.zeros(length, dtype=torch.float64)
        for start in range(0, length - n_fft + 1, hop):
            cover[start:start + n_fft] += window
        self.support = (cover >= COVERAGE * cover.max()).to(clean.dtype).to(clean.device)
        """``(T,)`` 1 where a perturbation may go, 0 where the frames barely measure it."""

    def size(self, delta: Tensor, idx: Tensor | None = None) -> Tensor:
        """``‖δ‖_x`` of ``delta`` ``(n, 1, T)`` for the clips ``idx`` (all by default), ``(n,)``; 0 for δ = 0."""
        masking = self.masking if idx is None else Masking(self.masking.threshold[idx], self.masking.reference[idx])
        distance = self.model.distance(delta, masking)
        return torch.exp(distance * (math.log(10.0) / 20.0))


def perturbation_size(delta: Tensor, clean: Tensor, norm: str, sample_rate: int | None) -> Tensor:
    """``(N,)`` size of ``delta`` in ``norm``: an Lp norm (:func:`attacks.threat.perturbation_norm`), or the
    perceptual size around the clean waveforms ``(N, 1, T)`` at ``sample_rate``."""
    if norm != NORM:
        return perturbation_norm(delta, norm)
    if sample_rate is None:
        raise ValueError("the perceptual size needs the waveforms' sample rate")
    return PerceptualBall(clean, sample_rate).size(delta)


class PerceptualAttack(Attack):
    """Base of the attacks measured in the perceptual norm: waveform domain, the victim's sample rate, and one
    :class:`PerceptualBall` per clean batch.

    Args:
        sample_rate: Hz of the waveforms (default: the victim's, read when the attack is called).
        domain, targeted, eps: see :class:`~attacks.base.Attack` (waveform only).
    """

    norm = NORM
    domains = ("waveform",)

    def __init__(self, sample_rate: int | None = None, domain: Domain = "waveform", targeted: bool = False,
                 eps: float | None = None) -> None:
        super().__init__(domain=domain, targeted=targeted, eps=eps)
        if sample_rate is not None and sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate
        self._rate = sample_rate
        self._last: tuple[Tensor, int, PerceptualBall] | None = None

    def bind(self, victim: Victim) -> None:
        self._rate = self.sample_rate or victim.sample_rate

    def measure(self, adversarial: Tensor, clean: Tensor) -> Tensor:
        ball = self._ball(clean)
        return torch.stack([ball.size(a - clean) for a in adversarial])

    def _ball(self, clean: Tensor) -> PerceptualBall:
        """The ball around ``clean``; one call of the attack runs every budget and measures them on the same clean
        batch (the same tensor object), whose masking threshold (about a forward pass per clip) is computed once."""
        if self._rate is None:
            raise ValueError(f"{type(self).__name__} needs the waveforms' sample_rate (set it, or call it on a "
                             "victim)")
        if self._last is None or self._last[0] is not clean or self._last[1] != self._rate:
            self._last = (clean, self._rate, PerceptualBall(clean, self._rate))
        return self._last[2]


@ATTACKS.register("pgd_perceptual")
class PerceptualPGD(PerceptualAttack):
    """PGD with a perceptual budget: ``δ ← scale(clip(δ + α·ε·g/‖g‖_x))`` where ``g`` is the loss gradient (unit
    L2, on the samples the frames measure), ``‖g‖_x`` its perceptual size, so each step has perceptual size α·ε,
    and ``scale`` shrinks δ radially onto the ball ``‖δ‖_x ≤ ε`` (exact, the size being homogeneous); clipping
    to the waveform box comes first, so the result is inside both.

    Args:
        steps: gradient steps.
        rel_stepsize: α, the perceptual size of a step as a fraction of the budget.
        early_stop: stop each example at its first success.
        sample_rate, domain, targeted, eps: see :class:`PerceptualAttack`.
    """

    per_example_budgets = True

    def __init__(self, steps: int = 20, rel_stepsize: float = 0.25, early_stop: bool = True,
                 sample_rate: int | None = None, domain: Domain = "waveform", targeted: bool = False,
                 eps: float | None = None) -> None:
        super().__init__(sample_rate=sample_rate, domain=domain, targeted=targeted, eps=eps)
        if steps < 1 or not rel_stepsize > 0:
            raise ValueError(f"pgd_perceptual needs steps >= 1 and rel_stepsize > 0, got {steps}, {rel_stepsize}")
        self.steps, self.rel_stepsize, self.early_stop = int(steps), float(rel_stepsize), early_stop

    def run(self, model: ModelFn, x: Tensor, labels: Tensor, targets: Tensor | None,
            bounds: Bounds, eps: float | Tensor | None) -> RunOutput:
        assert eps is not None
        ball = self._ball(x)
        budget = eps.to(x) if isinstance(eps, Tensor) else torch.full((len(x),), float(eps), dtype=x.dtype,
                                                                        device=x.device)
        delta = torch.zeros_like(x)

        def move(_: int, idx: Tensor, grad: Tensor) -> Tensor:
            direction = grad * ball.support
            direction = direction / l2_norms(direction).clamp_min(_TINY)
            step = self.rel_stepsize * budget[idx] / ball.size(direction, idx).clamp_min(_TINY)
            moved = bounds.clip(x[idx] + delta[idx] + step.view(-1, 1, 1) * direction) - x[idx]
            moved = moved * ball.support
            scale = (budget[idx] / ball.size(moved, idx).clamp_min(_TINY)).clamp(max=1.0)
            return moved * scale.view(-1, 1, 1)

        return ascend(model, x, labels, targets, delta, self.steps, move, None if self.early_stop else False)
