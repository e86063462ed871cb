"""White-noise baseline (seed 001: Subramanian et al., white noise at RMS(x)/RMS(δ) = 6 ≈ 15.6 dB).

The budget ``eps`` is the L2 norm of the noise, so the attack fits the fixed-budget model of the
base (success grows with ``eps``, and it compares with any L2 attack at the same budget). With
``snr_db`` set, each example instead gets noise at that signal-to-noise ratio,
``‖δ‖₂ = ‖x‖₂ · 10^(−snr_db/20)``, capped at ``eps`` (use ``eps: .inf`` for the plain SNR setting).
"""
from __future__ import annotations

import torch
from torch import Tensor

from attacks.base import ATTACKS, Attack, ModelFn, RunOutput
from attacks.threat import batch_view, norms
from victims.bounds import Bounds
from victims.victim import Domain


@ATTACKS.register("noise")
class WhiteNoise(Attack):
    """Gaussian white noise scaled to an L2 norm, then clipped to the bounds (one query).

    Args:
        snr_db: if set, the per-example SNR ``20·log10(‖x‖₂/‖δ‖₂)`` of the noise before clipping.
        domain: ``"waveform"`` (seed 001) or ``"representation"``.
        targeted: must be ``False``: noise aims at no class.
        eps: L2 norm of the noise (an upper cap when ``snr_db`` is set).

    Raises:
        ValueError: if ``targeted`` is ``True``.
    """

    family = "baseline"
    norm = "l2"
    fixed_budget = True
    per_example_budgets = True
    targetable = False

    def __init__(self, snr_db: float | None = None, domain: Domain = "waveform", targeted: bool = False,
                 eps: float | None = None) -> None:
        super().__init__(domain=domain, targeted=targeted, eps=eps)
        self.snr_db = snr_db

    def run(self, model: ModelFn, x: Tensor, labels: Tensor, targets: Tensor | None,
            bounds: Bounds, eps: float | Tensor | None) -> RunOutput:
        assert eps is not None
        noise = torch.randn_like(x)
        unit = noise / norms(noise).clamp_min(1e-12)
        scale = torch.as_tensor(eps, dtype=x.dtype, device=x.device).expand(len(x)).clone()
        if self.snr_db is not None:
            scale = torch.minimum(scale, x.flatten(1).norm(dim=1) * 10 ** (-self.snr_db / 20))
        adversarial = bounds.clip(x + unit * batch_view(scale, x))
        ones = torch.ones(len(x), dtype=torch.int64, device=x.device)
        return RunOutput(adversarial=adversarial, iterations=ones, queries=ones)
