"""Run any ``art.attacks.evasion`` attack (Adversarial Robustness Toolbox, Nicolae et al. 2018)
on a victim, in either domain, through the common :class:`~attacks.base.Attack` interface.

The victim's ``logits_fn(domain)`` is wrapped in an ART ``PyTorchClassifier`` whose
``clip_values`` are the victim's bounds: scalars for waveforms, the per-band arrays broadcast to
the input shape for representations (ART takes one bound per feature). ART copies to numpy at
every step, so this is the slow path: it keeps ART's whole catalogue available and is the oracle
the native attacks are tested against.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attacks.base import ATTACKS, Attack, ModelFn, RunOutput
from victims.bounds import Bounds
from victims.registry import ConfigError
from victims.victim import Domain

_ART_NORMS = {"inf": "linf", "2": "l2"}


class _Logits(nn.Module):
    """An ``nn.Module`` around a logits function (the victim's parameters stay in the victim), taking its inputs
    in ``dtype`` (some ART attacks, e.g. HopSkipJump, query with float64 arrays)."""

    def __init__(self, fn: ModelFn, dtype: torch.dtype) -> None:
        super().__init__()
        self.fn, self.dtype = fn, dtype

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x.to(self.dtype))


def _art_class(name: str) -> type:
    from art.attacks import evasion
    from art.attacks.attack import EvasionAttack

    cls = getattr(evasion, name, None)
    if not (isinstance(cls, type) and issubclass(cls, EvasionAttack)):
        known = sorted(n for n, c in vars(evasion).items() if isinstance(c, type) and issubclass(c, EvasionAttack))
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown ART evasion attack '{name}'{hint}; see art.attacks.evasion")
    return cls


def _norm_of(params: dict[str, Any]) -> str:
    raw = str(params.get("norm", "2")).lower().replace("np.", "")
    if raw not in _ART_NORMS:
        raise ConfigError(f"ART norm '{params['norm']}' is not supported; use inf or 2, or set the adapter's norm")
    return _ART_NORMS[raw]


@ATTACKS.register("art")
class ARTAttack(Attack):
    """Adapter for ``art.attacks.evasion.<attack>(classifier, **params)``.

    Targeted runs pass the targets as ART's ``y``, with ``targeted=True`` where the class has that
    switch; a class without it can run targeted only if it reads ``y`` as targets
    (``y_is_target``, e.g. ``SaliencyMapMethod``).
    The attack is fixed-budget when the ART class takes ``eps``: each budget is passed as ``eps``
    (and ``eps_step = rel_eps_step · eps`` when ``rel_eps_step`` is set); otherwise it is treated
    as minimum-norm. ``batch_size`` defaults to the whole batch and ``verbose`` to ``False``.
    ART reports no per-example iterations: ``iterations`` is the attack's ``max_iter`` setting, or
    1 where it has none (single-step attacks).

    Args:
        attack: class name in ``art.attacks.evasion`` (e.g. ``"ProjectedGradientDescent"``).
        params: keyword arguments of that class (without the classifier).
        norm: distance to measure results in (``"linf"``, ``"l2"``, ``"l0"``); by default taken
            from ``params["norm"]`` (ART's ``inf``/``2``), else ``"l2"``.
        rel_eps_step: step size as a fraction of each budget.
        y_is_target: the ART class has no ``targeted`` switch and reads ``y`` as target classes.
        domain, targeted, eps: see :class:`~attacks.base.Attack`.

    Raises:
        ConfigError: for an unknown ART class or a parameter it does not take.
        ValueError: if ``targeted`` is set for a class that cannot aim at targets.
    """

    def __init__(self, attack: str, params: dict[str, Any] | None = None, norm: str | None = None,
                 rel_eps_step: float | None = None, y_is_target: bool = False, domain: Domain = "representation",
                 targeted: bool = False, eps: float | None = None) -> None:
        super().__init__(domain=domain, targeted=targeted, eps=eps)
        self.art_class = _art_class(attack)
        self.params = dict(params or {})
        accepted = inspect.signature(self.art_class.__init__).parameters
        for key in self.params:
            if key not in accepted:
                raise ConfigError(f"unknown key '{key}' for ART attack {attack}; accepted: "
                                  f"{', '.join(k for k in accepted if k not in ('self', 'estimator', 'classifier'))}")
        self.targetable = "targeted" in accepted or y_is_target  # type: ignore[misc]  (depends on the ART class)
        if targeted and not self.targetable:
            raise ValueError(f"ART attack {attack} cannot be targeted (no 'targeted' switch; set y_is_target "
                             f"if it reads y as targets)")
        self._accepted = set(accepted)
        self.fixed_budget = "eps" in accepted
        self.family = "iterative" if self.fixed_budget else "minimum_norm"
        self.norm = norm if norm is not None else _norm_of(self.params)
        self.rel_eps_step = rel_eps_step

    def run(self, model: ModelFn, x: Tensor, labels: Tensor, targets: Tensor | None,
            bounds: Bounds, eps: float | None) -> RunOutput:
        from art.estimators.classification import PyTorchClassifier

        with torch.no_grad():
            n_classes = model(x[:1]).shape[1]
        classifier = PyTorchClassifier(
            model=_Logits(model, x.dtype), loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
            nb_classes=n_classes, clip_values=self._clip_values(bounds, x),
            device_type="gpu" if x.is_cuda else "cpu")
        attack = self.art_class(classifier, **self._params(eps, len(x)))
        adv = attack.generate(x=x.detach().cpu().numpy().astype(np.float32), y=self._labels(labels, targets))
        adversarial = bounds.clip(torch.from_numpy(adv).to(device=x.device, dtype=x.dtype))
        iters = int(getattr(attack, "max_iter", 1))
        return RunOutput(adversarial=adversarial,
                         iterations=torch.full((len(x),), iters, dtype=torch.int64, device=x.device))

    def _labels(self, labels: Tensor, targets: Tensor | None) -> np.ndarray | None:
        """ART's ``y``: the targets when targeted; the true labels for attacks with a ``targeted``
        switch; otherwise ``None`` (the ART attack's own default, e.g. DeepFool's predictions)."""
        if targets is not None:
            return targets.cpu().numpy()
        return labels.cpu().numpy() if "targeted" in self._accepted else None

    def _params(self, eps: float | None, batch: int) -> dict[str, Any]:
        params = dict(self.params)
        defaults = {"batch_size": batch, "verbose": False}
        params.update({k: v for k, v in defaults.items() if k in self._accepted and k not in params})
        if "targeted" in self._accepted:
            params["targeted"] = self.targeted
        if eps is not None:
            params["eps"] = eps
            if self.rel_eps_step is not None:
                params["eps_step"] = self.rel_eps_step * eps
        return params

    @staticmethod
    def _clip_values(bounds: Bounds, x: Tensor) -> tuple[Any, Any]:
        """Scalars stay scalars; tensors are broadcast to one bound per feature of an input."""
        def side(v: Tensor | float) -> Any:
            if isinstance(v, Tensor):
                return v.detach().to(torch.float32).expand(1, *x.shape[1:])[0].cpu().numpy().copy()
            return float(v)
        return side(bounds.lower), side(bounds.upper)
