"""The dry run's check of every model at its real input size: the data set's clip length and rate, the front-end's
real settings, the backbone built for that input and the data set's classes.

The front-end runs on two real-length clips read by the real loader, forward and backward (a waveform attack or
defense differentiates through it), and the per-band normaliser takes its output. The backbone then runs forward
and backward in training mode and forward in evaluation mode on a batch of that shape on PyTorch's ``meta`` device:
every layer checks its input's shape and dtype as it would on data, without the arithmetic (VGG-16 on a 5 s ESC-50
STFT costs ~30 s a clip on one CPU core) and without allocating the weights (seed 003's 2D CNN on GTZAN's STFT holds
405 M of them). Shape errors at the real size (a dense layer sized for another input, front-end parts whose frames
differ, an input below an architecture's minimum) are what this finds; the cells end to end run on short clips.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor

from training.data.base import Splits
from victims.normalize import BandNorm
from victims.victim import build_backbone, build_frontend


@dataclass(frozen=True)
class ModelCheck:
    """A model checked at its real size: what it is, its backbone input ``(F, frames)`` and parameter count."""

    label: str
    input_shape: tuple[int, int]
    parameters: int

    def describe(self) -> str:
        shape = f"{self.input_shape[0]} x {self.input_shape[1]}"
        return f"{self.label}: input {shape}, {self.parameters / 1e6:.1f} M parameters"


class ShapeError(ValueError):
    """A model's parts disagree on a shape at the real input size."""


def check_model(label: str, frontend: Mapping[str, Any], victim: Mapping[str, Any], splits: Splits,
                checked: dict[str, tuple[int, ...]] | None = None) -> ModelCheck:
    """Run the front-end on two real clips of ``splits`` and the backbone on its output's shape (module docstring).

    ``checked`` keeps the output shape of each front-end already checked on ``splits`` (keyed by both), so a config
    of several backbones runs each front-end's real-size forward and backward once, not once per backbone.

    Raises:
        ShapeError: when an output has another shape than the model promises; whatever a part raises.
    """
    key = f"{id(splits)}:{json.dumps(dict(frontend), sort_keys=True, default=str)}"
    shape = checked.get(key) if checked is not None else None
    if shape is None:
        shape = _check_frontend(label, frontend, splits)
        if checked is not None:
            checked[key] = shape
    batch, expected, classes = shape[0], shape[2:], len(splits.class_names)
    net = build_backbone(dict(victim), classes, expected, splits.train.sample_rate, meta=True)
    x = torch.empty(shape, device="meta", requires_grad=True)
    net.train()
    out = net(x)
    _expect(out, (batch, classes), f"{label}: backbone output (training mode)")
    out.sum().backward()
    _expect(x.grad, tuple(x.shape), f"{label}: backbone input gradient")
    net.eval()
    with torch.no_grad():
        _expect(net(x), (batch, classes), f"{label}: backbone output (evaluation mode)")
    return ModelCheck(label, (int(expected[0]), int(expected[1])), sum(p.numel() for p in net.parameters()))


def _check_frontend(label: str, frontend: Mapping[str, Any], splits: Splits) -> tuple[int, ...]:
    """The front-end's forward and backward on two real clips, its output normalised per band; the output's shape
    ``(clips, 1, F, frames)``."""
    fe = build_frontend(dict(frontend), splits.train.sample_rate)
    expected = tuple(fe.output_shape(splits.train.num_samples))
    waves = _clips(splits).requires_grad_(True)
    rep = fe(waves)
    _expect(rep, (len(waves), 1, *expected), f"{label}: front-end output")
    rep.sum().backward()
    _finite(rep, f"{label}: front-end output")
    _finite(waves.grad, f"{label}: gradient through the front-end")
    BandNorm(fe.n_bands)(rep.detach())
    return tuple(rep.shape)


def _clips(splits: Splits) -> Tensor:
    """Two real clips (fewer if the data set holds fewer), from the training split first."""
    waves = torch.cat([splits.train.waves[:2], splits.val.waves[:2], splits.test.waves[:2]])[:2]
    return waves.detach().clone().float()


def _expect(x: Tensor | None, shape: tuple[int, ...], what: str) -> None:
    if x is None or tuple(x.shape) != tuple(shape):
        raise ShapeError(f"{what} is {None if x is None else tuple(x.shape)}, expected {tuple(shape)}")


def _finite(x: Tensor | None, what: str) -> None:
    if x is None or not bool(torch.isfinite(x).all()):
        raise ShapeError(f"{what} is not finite")
