"""Identity front-end for 1D models (seed 003's gammatone 1D CNN): ``(B, 1, T) → (B, 1, 1, T)``."""
from __future__ import annotations

import torch
from torch import Tensor

from victims.frontends.base import FRONTENDS, FrontEnd, check_waveform


@FRONTENDS.register("waveform")
class Waveform(FrontEnd):
    """The raw waveform as a one-band "representation" with one frame per sample.

    Args:
        sample_rate: waveform rate in Hz.
    """

    @property
    def n_bands(self) -> int:
        return 1

    def num_frames(self, num_samples: int) -> int:
        return num_samples

    def output_bounds(self) -> tuple[Tensor, Tensor]:
        """The waveform box ``[-1, 1]``."""
        return torch.full((1,), -1.0), torch.full((1,), 1.0)

    def forward(self, wave: Tensor) -> Tensor:
        check_waveform(wave)
        return wave.unsqueeze(2)
