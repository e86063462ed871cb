"""Differentiable front-ends: waveform ``(B, 1, T)`` → representation ``(B, 1, F, frames)``.

Every front-end is a thin :class:`FrontEnd` (``nn.Module``) registered in :data:`FRONTENDS`;
build one from a config with ``FRONTENDS.create(name, sample_rate=..., **kwargs)``.
"""
from __future__ import annotations

from victims.frontends import cwt, spectral, tonnetz, waveform  # noqa: F401  (registration)
from victims.frontends.base import FRONTENDS, FrontEnd, check_waveform

__all__ = ["FRONTENDS", "FrontEnd", "check_waveform"]
