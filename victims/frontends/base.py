"""The front-end registry, the :class:`FrontEnd` base class and the waveform check every front-end file shares
(front-end files register into :data:`FRONTENDS` from here; importing :mod:`victims.frontends` registers them all).
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn

from victims.registry import Registry

FRONTENDS: Registry = Registry("frontend")


class FrontEnd(nn.Module, ABC):
    """Base class of the waveform → representation transforms.

    Shapes: ``(B, 1, T) → (B, 1, F, frames)``, batched, on any device, differentiable with no
    clamp that silently zeroes gradients. Constants live in buffers so ``.to(device)`` moves them.

    Args:
        sample_rate: rate of the input waveform in Hz.
    """

    def __init__(self, sample_rate: int) -> None:
        super().__init__()
        self.sample_rate = int(sample_rate)

    @property
    @abstractmethod
    def n_bands(self) -> int:
        """Number of rows ``F`` of the representation."""

    @abstractmethod
    def num_frames(self, num_samples: int) -> int:
        """Number of frames produced for a waveform of ``num_samples`` samples."""

    @abstractmethod
    def output_bounds(self) -> tuple[Tensor, Tensor]:
        """Per-band ``(lower, upper)``, each shaped ``(F,)``: the range the representation of any
        waveform in ``[-1, 1]`` can take (the box that representation-domain attacks respect)."""

    def output_shape(self, num_samples: int) -> tuple[int, int]:
        """``(F, frames)`` for a waveform of ``num_samples`` samples."""
        return self.n_bands, self.num_frames(num_samples)


def check_waveform(wave: Tensor) -> None:
    """Raise a one-line ValueError unless ``wave`` is shaped ``(B, 1, T)``."""
    if wave.dim() != 3 or wave.shape[1] != 1:
        raise ValueError(f"front-ends take waveforms shaped (B, 1, T), got {tuple(wave.shape)}")
