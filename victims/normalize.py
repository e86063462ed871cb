"""Per-band standardisation fitted on the training split only and stored with the model.

Seed 000 normalises each mel band by its training-set mean and standard deviation; the same
:class:`BandNorm` serves every representation.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn


class BandNorm(nn.Module):
    """``(x - mean[f]) / std[f]`` per frequency band ``f`` of a ``(B, 1, F, frames)`` input.

    The statistics are buffers, so they are saved in the victim's ``state_dict``. Until
    :meth:`fit` is called the module is the identity.

    Args:
        n_bands: number of bands ``F``.
        eps: floor added to the standard deviation.
    """

    def __init__(self, n_bands: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(1, 1, n_bands, 1))
        self.register_buffer("std", torch.ones(1, 1, n_bands, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def inverse(self, z: Tensor) -> Tensor:
        """Map a normalised representation back to front-end units."""
        return z * self.std + self.mean

    @torch.no_grad()
    def fit(self, batches: Iterable[Tensor]) -> "BandNorm":
        """Fit mean and std per band over all examples and frames of ``batches`` (float64 sums).

        Args:
            batches: representations ``(B, 1, F, frames)`` of the training split only.
        """
        total = sq = None
        count = 0
        for x in batches:
            x64 = x.detach().to(torch.float64)
            s, s2 = x64.sum(dim=(0, 1, 3)), (x64 * x64).sum(dim=(0, 1, 3))
            total = s if total is None else total + s
            sq = s2 if sq is None else sq + s2
            count += x.shape[0] * x.shape[3]
        if total is None or count == 0:
            raise ValueError("cannot fit BandNorm on an empty training split")
        mean = total / count
        var = (sq / count - mean * mean).clamp_min(0.0)
        self.mean.copy_(mean.view(1, 1, -1, 1).to(self.mean.dtype))
        self.std.copy_((var.sqrt() + self.eps).view(1, 1, -1, 1).to(self.std.dtype))
        return self
