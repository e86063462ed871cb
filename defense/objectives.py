"""Training objectives a ``defense`` config names, registered in :data:`OBJECTIVES`
(:mod:`defense.objective_base`, with what every objective file shares).

- ``clean``: standard training (:class:`training.step.CleanObjective`, the trainer's default).

- ``fgsm_mix``: seed 004's Eq. 14 (after Goodfellow et al. 2015), J' = α·J(x, y) + (1−α)·J(x', y)
  with x' the one-shot FGSM example; α = 0 is FGSM-only training.
- ``pgd_at``: Madry et al. 2018, training on PGD examples (random start, projected steps).
- ``fast_fgsm``: Wong, Rice & Kolter 2020, FGSM from a random start with step 1.25·ε.
- ``gaussian_augment``: Cohen, Rosenfeld & Kolter 2019, training on Gaussian-noised inputs, the base
  classifier of a randomized-smoothing certificate (:mod:`evaluation.certify`); the noise is not clipped.
- ``room_augment``: training on clips played through random rooms (:mod:`defense.channel`), and
  ``room_fgsm_mix``: FGSM-mix through the room (both waveform domain).

Attack passes (crafting the training example, and :meth:`robust_logits` for validation) run in eval
mode: running statistics, no dropout, no BatchNorm update, gradients w.r.t. the input only. Only the
passes whose loss is trained on run in the victim's (training) mode. Madry et al.'s 2018 reference
code crafted with the training graph (batch statistics, its attack forwards also updating the moving
averages); MadryLab's ``robustness`` library (Engstrom et al. 2019) and TRADES (Zhang et al. 2019)
craft in eval mode, which keeps each PGD step's several forwards from moving the running statistics.

Each works in the ``representation`` domain (the front-end runs once without gradient and the
normalised representation is attacked, as in seed 004) or the ``waveform`` domain (end to end).
Adversarial inputs stay inside ``victim.bounds(domain)``; ``eps`` is in the domain's units (for the
representation: normalised units, i.e. per-band standard deviations). Norms: ``linf`` (sign step)
or ``l2`` (step along the L2-normalised gradient); the steepest direction, projection and random start
are the attack suite's threat models (:mod:`attacks.threat`), so training and evaluation share them.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from attacks.threat import ball
from defense.channel import RoomChannel, build_channel, channel_config
from defense.objective_base import OBJECTIVES, check_settings, domain_inputs, eval_mode, perturbed_logits
from training.step import Backward, StepOutput
from victims.bounds import Bounds
from victims.registry import ConfigError
from victims.victim import DOMAINS, Victim

def fgsm(model: Callable[[Tensor], Tensor], x: Tensor, labels: Tensor, eps: float, norm: str,
         bounds: Bounds) -> tuple[Tensor, Tensor]:
    """One-shot FGSM ``clip(x + ε·dir(∇ₓJ))`` (Goodfellow et al. 2015) and the clean logits, both
    detached; only the input gets a gradient."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, labels), x)
    return bounds.clip(x.detach() + eps * ball(norm).normalize(grad)), logits.detach()


@OBJECTIVES.register("fgsm_mix")
class FGSMMix:
    """J' = α·J(x, y) + (1−α)·J(x', y), x' = clip(x + ε·dir(∇ₓJ(x, y))) (seed 004 Eq. 14).

    For α > 0, one clean training forward/backward with the input requiring gradient yields both ∇ₓJ
    (for x') and the clean loss's parameter gradient; one adversarial forward/backward adds the rest:
    two passes. The clean backward runs on α·J, whose input gradient has the direction of ∇ₓJ (sign
    and L2-normalisation ignore positive scales, including a GradScaler's). For α = 0 there is no clean
    term to train on: x' is crafted by an eval-mode pass (input gradient only), still two passes. For
    α = 1 the adversarial pass is skipped.

    Args:
        alpha: weight α of the clean loss in [0, 1].
        eps: FGSM budget in the domain's units.
        norm: ``"linf"`` or ``"l2"``.
        domain: ``"representation"`` or ``"waveform"``.
    """

    def __init__(self, alpha: float = 0.5, eps: float = 1.5, norm: str = "l2", domain: str = "representation") -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"fgsm_mix alpha must lie in [0, 1], got {alpha}")
        check_settings(eps, norm, domain)
        self.alpha, self.eps, self.norm, self.domain = float(alpha), float(eps), norm, domain

    def inputs(self, victim: Victim, wave: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor], Bounds]:
        """The clean input, the model from it to logits, and its bounds (:func:`domain_inputs`)."""
        return domain_inputs(victim, wave, self.domain)

    def __call__(self, victim: Victim, wave: Tensor, labels: Tensor, backward: Backward) -> StepOutput:
        x, model, bounds = self.inputs(victim, wave)
        if self.alpha == 0:
            with eval_mode(victim):
                x_adv, logits = fgsm(model, x, labels, self.eps, self.norm, bounds)
            adv = F.cross_entropy(model(x_adv), labels)
            backward(adv)
            return StepOutput(adv.detach(), logits)
        x.requires_grad_(True)
        logits = model(x)
        clean = F.cross_entropy(logits, labels)
        backward(clean * self.alpha)
        if self.alpha == 1:
            return StepOutput(clean.detach(), logits.detach())
        x_adv = bounds.clip(x.detach() + self.eps * ball(self.norm).normalize(x.grad))
        adv = F.cross_entropy(model(x_adv), labels)
        backward((1 - self.alpha) * adv)
        loss = self.alpha * clean.detach() + (1 - self.alpha) * adv.detach()
        return StepOutput(loss, logits.detach())

    def robust_logits(self, victim: Victim, wave: Tensor, labels: Tensor) -> Tensor:
        """Logits (detached, eval mode) of the FGSM examples this objective trains on."""
        with eval_mode(victim):
            x, model, bounds = self.inputs(victim, wave)
            x_adv, _ = fgsm(model, x, labels, self.eps, self.norm, bounds)
            with torch.no_grad():
                return model(x_adv)


@OBJECTIVES.register("pgd_at")
class PGDTraining:
    """Train on PGD examples (Madry et al. 2018): J(x', y), x' from ``steps`` projected steps.

    The inner maximisation uses ``torch.autograd.grad`` on the summed loss (no parameter gradients,
    per-example gradients independent of the batch size) in eval mode (see the module docstring).
    The clean logits reported for the training accuracy come from one extra eval-mode forward without
    gradient; the training forward on x' is the step's only one in training mode.

    Args:
        eps: radius of the ε-ball in the domain's units.
        steps: PGD iterations.
        step_size: step length; default 2.5·ε/steps (Madry et al.).
        norm: ``"linf"`` or ``"l2"``.
        random_start: start from a uniform point of the ε-ball.
        domain: ``"representation"`` or ``"waveform"``.
    """

    def __init__(self, eps: float = 1.5, steps: int = 7, step_size: float | None = None, norm: str = "l2",
                 random_start: bool = True, domain: str = "representation") -> None:
        check_settings(eps, norm, domain)
        if steps < 1:
            raise ConfigError(f"pgd_at steps must be >= 1, got {steps}")
        if step_size is not None and not step_size > 0:
            raise ConfigError(f"pgd_at step_size must be > 0, got {step_size}")
        self.eps, self.steps, self.norm, self.domain = float(eps), int(steps), norm, domain
        self.step_size = float(step_size) if step_size is not None else 2.5 * self.eps / self.steps
        self.random_start = bool(random_start)

    def perturb(self, model: Callable[[Tensor], Tensor], x: Tensor, labels: Tensor, bounds: Bounds) -> Tensor:
        """The adversarial input (detached) after ``steps`` projected ascent steps from ``x``."""
        threat = ball(self.norm)
        delta = threat.random_start(x, self.eps) if self.random_start else torch.zeros_like(x)
        x_adv = bounds.clip(x + delta)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            loss = F.cross_entropy(model(x_adv), labels, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_adv)
            step = x_adv.detach() + self.step_size * threat.normalize(grad)
            x_adv = bounds.clip(x + threat.project(step - x, self.eps))
        return x_adv.detach()

    def __call__(self, victim: Victim, wave: Tensor, labels: Tensor, backward: Backward) -> StepOutput:
        x, model, bounds = domain_inputs(victim, wave, self.domain)
        with eval_mode(victim):
            x_adv = self.perturb(model, x, labels, bounds)
            with torch.no_grad():
                logits = model(x)
        loss = F.cross_entropy(model(x_adv), labels)
        backward(loss)
        return StepOutput(loss.detach(), logits)

    def robust_logits(self, victim: Victim, wave: Tensor, labels: Tensor) -> Tensor:
        """Logits (detached, eval mode) of the examples this objective trains on (PGD; FGSM-RS for
        :class:`FastFGSM`)."""
        return perturbed_logits(self.perturb, victim, wave, labels, self.domain)


@OBJECTIVES.register("fast_fgsm")
class FastFGSM(PGDTraining):
    """"Fast is better than free" (Wong, Rice & Kolter 2020): one FGSM step of ``step_factor``·ε
    from a uniform random start, projected back onto the ε-ball.

    Args:
        eps: radius of the ε-ball in the domain's units.
        step_factor: step length as a multiple of ε (1.25 in the paper).
        norm: ``"linf"`` (the paper) or ``"l2"``.
        domain: ``"representation"`` or ``"waveform"``.
    """

    def __init__(self, eps: float = 1.5, step_factor: float = 1.25, norm: str = "l2",
                 domain: str = "representation") -> None:
        if not step_factor > 0:
            raise ConfigError(f"fast_fgsm step_factor must be > 0, got {step_factor}")
        super().__init__(eps=eps, steps=1, step_size=step_factor * eps, norm=norm, random_start=True, domain=domain)


@OBJECTIVES.register("gaussian_augment")
class GaussianAugment:
    """Gaussian noise augmentation (Cohen, Rosenfeld & Kolter 2019): J(x + ε, y), ε ~ N(0, σ² I),
    one fresh draw per example and step, the base classifier that :class:`evaluation.certify.SmoothedClassifier`
    smooths with the same σ in the same domain.

    The noisy input is not clipped to ``victim.bounds(domain)``: neither does the smoothed classifier, nor
    Cohen et al., so training sees the distribution that is certified. The clean logits reported for the
    training accuracy come from one extra eval-mode forward without gradient (as :class:`PGDTraining`).
    :meth:`robust_logits` is the accuracy under noise on validation batches, i.e. what the smoothed classifier
    votes with, so epochs are selected on it (``train.select_on: auto``).

    Args:
        sigma: noise standard deviation in the domain's units (normalised units for the representation).
        domain: ``"representation"`` or ``"waveform"``.
    """

    def __init__(self, sigma: float = 0.5, domain: str = "representation") -> None:
        if not sigma > 0:
            raise ConfigError(f"gaussian_augment sigma must be > 0, got {sigma}")
        if domain not in DOMAINS:
            raise ConfigError(f"unknown defense domain '{domain}'; known: {', '.join(DOMAINS)}")
        self.sigma, self.domain = float(sigma), domain

    def noisy(self, x: Tensor) -> Tensor:
        """``x + σ·z`` with ``z`` standard normal from torch's global RNG."""
        return x + self.sigma * torch.randn_like(x)

    def __call__(self, victim: Victim, wave: Tensor, labels: Tensor, backward: Backward) -> StepOutput:
        x, model, _ = domain_inputs(victim, wave, self.domain)
        with eval_mode(victim), torch.no_grad():
            logits = model(x)
        loss = F.cross_entropy(model(self.noisy(x)), labels)
        backward(loss)
        return StepOutput(loss.detach(), logits)

    def robust_logits(self, victim: Victim, wave: Tensor, labels: Tensor) -> Tensor:
        """Logits (detached, eval mode) of one noisy copy of each example."""
        with eval_mode(victim), torch.no_grad():
            x, model, _ = domain_inputs(victim, wave, self.domain)
            return model(self.noisy(x))


@OBJECTIVES.register("room_augment")
class RoomAugment:
    """Room augmentation: J(c(x), y) with ``c`` a fresh draw of the over-the-air channel per example and step
    (:class:`defense.channel.RoomChannel`: loudspeaker band, room impulse response, background noise), the
    training counterpart of Qin et al. (2019) Sec. 5's room simulation; waveform domain. The clean logits reported
    for the training accuracy come from one extra eval-mode forward without gradient (as :class:`GaussianAugment`);
    :meth:`robust_logits` is the accuracy through one room draw on validation batches.

    Args:
        channel: a ``configs/channel`` option name or a mapping of its keys (checked here, built per sample rate
            on first use).
    """

    domain = "waveform"

    def __init__(self, channel: str | dict = "room") -> None:
        self.config = channel_config(channel)
        self._channels: dict[int, RoomChannel] = {}

    def channel(self, sample_rate: int) -> RoomChannel:
        """The channel at ``sample_rate`` (simulated once)."""
        if sample_rate not in self._channels:
            self._channels[sample_rate] = build_channel(self.config, sample_rate)
        return self._channels[sample_rate]

    def heard(self, victim: Victim, wave: Tensor) -> Tensor:
        """``wave`` through a fresh channel draw (torch's global RNG)."""
        return self.channel(victim.sample_rate)(wave)

    def __call__(self, victim: Victim, wave: Tensor, labels: Tensor, backward: Backward) -> StepOutput:
        with eval_mode(victim), torch.no_grad():
            logits = victim(wave)
        loss = F.cross_entropy(victim(self.heard(victim, wave.detach())), labels)
        backward(loss)
        return StepOutput(loss.detach(), logits)

    def robust_logits(self, victim: Victim, wave: Tensor, labels: Tensor) -> Tensor:
        """Logits (detached, eval mode) of one channel draw of each example."""
        with eval_mode(victim), torch.no_grad():
            return victim(self.heard(victim, wave))


@OBJECTIVES.register("room_fgsm_mix")
class RoomFGSMMix(FGSMMix):
    """FGSM-mix through the room: J' = α·J(c(x), y) + (1−α)·J(c(x'), y), x' = clip(x + ε·dir(∇ₓJ(c(x), y))) with
    one channel draw ``c`` per example and step shared by the clean and the adversarial term (seed 004 Eq. 14 on
    :class:`RoomAugment`'s inputs): the FGSM example is crafted for, and trained on, the room it is heard in.

    Args:
        channel: a ``configs/channel`` option name or a mapping of its keys.
        alpha, eps, norm: as :class:`FGSMMix` (``eps`` in waveform units).
        domain: ``"waveform"`` (the channel acts on waveforms).
    """

    def __init__(self, channel: str | dict = "room", alpha: float = 0.5, eps: float = 0.1, norm: str = "l2",
                 domain: str = "waveform") -> None:
        if domain != "waveform":
            raise ConfigError(f"room_fgsm_mix acts on waveforms (the room channel's input), got domain '{domain}'")
        super().__init__(alpha=alpha, eps=eps, norm=norm, domain=domain)
        self.room = RoomAugment(channel)

    def inputs(self, victim: Victim, wave: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor], Bounds]:
        """The waveform, the model behind one fixed channel draw per clip, and the waveform bounds."""
        x, model, bounds = super().inputs(victim, wave)
        channel = self.room.channel(victim.sample_rate)
        draw = channel.draw(x.shape[0], x.shape[-1], device=x.device)
        return x, lambda w: model(channel(w, draw)), bounds


from defense import trades_mart  # noqa: E402,F401  (registers "trades" and "mart")

__all__ = ["OBJECTIVES", "FGSMMix", "FastFGSM", "GaussianAugment", "PGDTraining", "RoomAugment", "RoomFGSMMix"]
