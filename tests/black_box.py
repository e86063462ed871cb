"""Layers that turn a victim into a checked black box for the query-based attacks' tests: put in front of its
backbone (``nn.Sequential(CountRows(), Guard(), victim.backbone)``), they count every input row the victim
evaluates and fail any backward pass through it."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class NoBackward(torch.autograd.Function):
    """Identity whose backward raises: a victim built on it cannot be differentiated."""

    @staticmethod
    def forward(ctx: object, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        raise RuntimeError("backward called on a black-box victim")


class Guard(nn.Module):
    """:class:`NoBackward` as a layer."""

    def forward(self, x: Tensor) -> Tensor:
        return NoBackward.apply(x)


class CountRows(nn.Module):
    """Counts every input row the model is asked to evaluate."""

    def __init__(self) -> None:
        super().__init__()
        self.rows = 0

    def forward(self, x: Tensor) -> Tensor:
        self.rows += x.shape[0]
        return x
