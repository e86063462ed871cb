"""A trained victim behind an input transform, and the functions an adaptive attack differentiates.

:class:`TransformedVictim` is the deployed defended model: a waveform transform runs before the
front-end, a representation transform before the backbone. Its :meth:`~TransformedVictim.logits_fn`
gives an attack the defended model three ways (Athalye, Carlini & Wagner 2018, "Obfuscated gradients
give a false sense of security"):

- naive (``bpda=None``): autograd through the transform as it is; a quantiser's zero gradient or a
  noise draw's randomness then shows up as apparent robustness;
- BPDA (Sec. 4.1): the forward pass is the real transform, the backward pass that of the identity
  (``bpda="identity"``, straight-through) or of the transform's differentiable
  :meth:`~defense.transforms.InputTransform.approximation` (``bpda="approx"``);
- EoT (Sec. 4.3, ``eot_samples=k``): for a random transform, the log of the softmax averaged over
  ``k`` draws, ``log(1/k Σ_j softmax(f(t_j(x))))`` — the log of the expected softmax that Salman et al.
  (2019) attack on a smoothed classifier. Its gradient is the EoT gradient of that expectation.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable

import torch
from torch import Tensor

from attacks.base import check_adaptive
from defense.transforms import TRANSFORMS, InputTransform
from victims.registry import ConfigError
from victims.victim import DOMAINS, Domain, Victim

INPUT_TRANSFORM = "input_transform"
"""The defense ``name`` of an input-transform config (``configs/defense/<option>.yaml``)."""


class TransformedVictim(Victim):
    """``victim`` with ``transform`` applied to its input, sharing the victim's modules (no copy of weights).

    ``forward(wave)`` is the deployed defended model (one draw of a random transform per call).

    Args:
        victim: a trained victim.
        transform: the input transform; its ``domain`` says where it runs.

    Raises:
        ConfigError: if ``victim`` is already a transformed victim (one transform per victim).
    """

    def __init__(self, victim: Victim, transform: InputTransform) -> None:
        if isinstance(victim, TransformedVictim):
            raise ConfigError("the victim already has an input transform; wrap the undefended victim (one "
                              "transform per victim)")
        super().__init__(victim.frontend, victim.backbone, victim.class_names, victim.num_samples, victim.spec)
        self.normalizer = victim.normalizer
        self.transform = transform
        self.train(victim.training)

    def represent(self, wave: Tensor) -> Tensor:
        """Normalised representation of the (transformed, for a waveform transform) waveform."""
        if self.transform.domain == "waveform":
            wave = self.transform(wave)
        return self.normalizer(self.frontend(wave))

    def classify(self, rep: Tensor) -> Tensor:
        """Logits of a representation (transformed first, for a representation transform)."""
        if self.transform.domain == "representation":
            rep = self.transform(rep)
        return self.backbone(rep)

    def logits_fn(self, domain: Domain, bpda: str | None = None, eot_samples: int = 1) -> Callable[[Tensor], Tensor]:
        """The defended model as an attack differentiates it, from ``domain`` to logits.

        Args:
            domain: the attack's input domain.
            bpda: ``None`` (gradients through the transform as it is), ``"identity"`` or ``"approx"``
                (see the module docstring).
            eot_samples: draws averaged per call for a random transform (returns log-probabilities);
                a deterministic transform has nothing to average and is run once.

        Raises:
            ConfigError: for a representation-domain attack on a waveform transform (it would bypass
                the defense), an unknown ``bpda`` or ``eot_samples < 1``.
        """
        self._check_domain(domain)
        check_adaptive(bpda, eot_samples)
        transform = self._attacked_transform(bpda)
        on_wave = self.transform.domain == "waveform"

        def logits(x: Tensor) -> Tensor:
            if domain == "waveform":
                x = self.normalizer(self.frontend(transform(x) if on_wave else x))
            return self.backbone(x if on_wave else transform(x))

        if eot_samples == 1 or not self.transform.random:
            return logits
        return lambda x: expected_log_softmax(logits, x, eot_samples)

    def to_domain(self, wave: Tensor, domain: Domain) -> Tensor:
        """The clean input an attack starts from: the waveform, or its representation before a
        representation transform.

        Raises:
            ConfigError: for the representation of a waveform-transform defense.
        """
        self._check_domain(domain)
        return super().to_domain(wave, domain)

    def _check_domain(self, domain: str) -> None:
        if domain not in DOMAINS:
            raise ValueError(f"unknown domain '{domain}'; known: {', '.join(DOMAINS)}")
        if domain == "representation" and self.transform.domain == "waveform":
            raise ConfigError(f"a representation-domain attack would bypass the waveform transform "
                              f"'{type(self.transform).__name__}' of this defense; attack the waveform")

    def _attacked_transform(self, bpda: str | None) -> Callable[[Tensor], Tensor]:
        """The transform with BPDA's backward pass: ``g(x) + (t(x) − g(x)).detach()``, ``g`` the identity
        or the approximation; forward values are those of ``t``."""
        t = self.transform
        if bpda is None:
            return t
        g: Callable[[Tensor], Tensor] = (lambda x: x) if bpda == "identity" else t.approximation

        def straight_through(x: Tensor) -> Tensor:
            gx = g(x)
            return gx + (t(x) - gx).detach()

        return straight_through


def expected_log_softmax(logits: Callable[[Tensor], Tensor], x: Tensor, samples: int) -> Tensor:
    """``log(1/k Σ_j softmax(logits(x)_j))`` over ``k = samples`` calls of a random ``logits``, batched as
    one call on ``x`` repeated ``k`` times (EoT, Athalye et al. 2018; Salman et al. 2019's smoothed soft
    classifier). Returns ``(N, C)`` log-probabilities (valid logits: their softmax is the mean softmax)."""
    out = logits(x.repeat(samples, *([1] * (x.dim() - 1))))
    return torch.logsumexp(out.log_softmax(dim=-1).view(samples, x.shape[0], -1), dim=0) - math.log(samples)


def defend(victim: Victim, config: dict[str, Any]) -> TransformedVictim:
    """Wrap ``victim`` in the input transform a defense config names, e.g.
    ``{"name": "input_transform", "transform": "quantize", "bits": 8}``; a transform that needs the
    sample rate gets the victim's.

    Raises:
        ConfigError: for another defense name, a missing or unknown transform, or a bad key or value.
    """
    cfg = dict(config)
    if cfg.pop("name", None) != INPUT_TRANSFORM:
        raise ConfigError(f"defend() builds '{INPUT_TRANSFORM}' defenses, got name '{config.get('name')}'")
    if "transform" not in cfg:
        raise ConfigError(f"an {INPUT_TRANSFORM} defense needs 'transform: <one of {', '.join(TRANSFORMS.names())}>'")
    name = str(cfg.pop("transform"))
    ctor = TRANSFORMS.get(name)
    if "sample_rate" in cfg:
        raise ConfigError(f"input transform '{name}': sample_rate comes from the victim; remove it from the config")
    if "sample_rate" in inspect.signature(ctor).parameters:
        cfg["sample_rate"] = victim.sample_rate
    return TransformedVictim(victim, TRANSFORMS.create(name, **cfg))


def is_transform(defense_cfg: dict[str, Any]) -> bool:
    """An input-transform defense config (not trained; it wraps a trained model at evaluation)."""
    return defense_cfg.get("name") == INPUT_TRANSFORM


def check_trainable(defense: dict[str, Any] | None) -> None:
    """Raise if a defense config is an input transform, which no training objective implements.

    Raises:
        ConfigError: one line saying where input-transform defenses belong.
    """
    cfg = defense or {}
    if is_transform(cfg):
        raise ConfigError(f"input-transform defenses wrap a trained model at evaluation (transform "
                          f"'{cfg.get('transform')}'); use them in `advaudio experiment defenses`, not as a "
                          "training defense")
