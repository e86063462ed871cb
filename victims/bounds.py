"""Box constraints of an input domain, supplied by the victim (never a literal ``clamp(0, 1)``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Bounds:
    """Element-wise box ``[lower, upper]``; each side broadcasts against the input.

    Waveforms use scalars ``(-1, 1)``; representations use per-band tensors shaped
    ``(1, 1, F, 1)`` because a dB spectrogram with appended tonnetz rows has a different range
    in every band.
    """

    lower: Tensor | float
    upper: Tensor | float

    def clip(self, x: Tensor) -> Tensor:
        """Project ``x`` into the box (gradient passes straight through inside it)."""
        lo, hi = self._as(x)
        return torch.maximum(torch.minimum(x, hi), lo)

    def contains(self, x: Tensor, atol: float = 1e-5) -> Tensor:
        """Per-example boolean: every element of ``x[i]`` lies in the box (within ``atol``)."""
        lo, hi = self._as(x)
        ok = (x >= lo - atol) & (x <= hi + atol)
        return ok.flatten(1).all(dim=1)

    def width(self, x: Tensor) -> Tensor:
        """``upper - lower`` broadcast to ``x``'s shape, dtype and device."""
        lo, hi = self._as(x)
        return (hi - lo).expand_as(x)

    def _as(self, x: Tensor) -> tuple[Tensor, Tensor]:
        lo = torch.as_tensor(self.lower, dtype=x.dtype, device=x.device)
        hi = torch.as_tensor(self.upper, dtype=x.dtype, device=x.device)
        return lo, hi
