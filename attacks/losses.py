"""Class-score losses the attacks, the L-BFGS/C&W objectives and the sanity checks share.

All take logits ``(N, C)`` and class indices ``(N,)`` and return one value per example unless noted.
The log-odds and margin forms keep a gradient where the softmax saturates (``p_y`` rounds to 1 in
float32 once a logit margin passes ~17, and the cross-entropy's gradient is then exactly zero).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def _others(logits: Tensor, cls: Tensor) -> Tensor:
    """``logits`` with each example's class ``cls`` masked to −inf."""
    return logits.masked_fill(F.one_hot(cls, logits.shape[1]).bool(), float("-inf"))


def _own(logits: Tensor, cls: Tensor) -> Tensor:
    return logits.gather(1, cls[:, None]).squeeze(1)


def log_odds(logits: Tensor, cls: Tensor) -> Tensor:
    """``log p_cls − log(1 − p_cls) = Z_cls − logsumexp_{i≠cls} Z_i``.

    Its input gradient is that of ``log p_cls`` divided by ``1 − p_cls``: the same direction as the
    cross-entropy's, but it does not vanish when the softmax saturates.
    """
    return _own(logits, cls) - torch.logsumexp(_others(logits, cls), dim=1)


def class_margin(logits: Tensor, cls: Tensor) -> Tensor:
    """``Z_cls − max_{i≠cls} Z_i`` (Carlini & Wagner 2017's f₆ before the confidence clamp)."""
    return _own(logits, cls) - _others(logits, cls).amax(dim=1)


def log_complement(logits: Tensor, cls: Tensor) -> Tensor:
    """``−log(1 − p_cls)``, computed stably as ``logsumexp(Z) − logsumexp(Z_{i≠cls})`` (seed 001's
    untargeted L-BFGS loss)."""
    return torch.logsumexp(logits, dim=1) - torch.logsumexp(_others(logits, cls), dim=1)


def attack_loss(logits: Tensor, labels: Tensor, targets: Tensor | None) -> Tensor:
    """Summed loss a gradient attack ascends: minus the log-odds of ``labels``, or the log-odds of ``targets``.

    Per example its input gradient is the cross-entropy's (``CE(labels)``, or ``−CE(targets)``) scaled by
    ``1/(1 − p)``, so sign and normalised steps equal the usual CE steps, but they do not vanish on a
    saturated softmax.
    """
    if targets is None:
        return -log_odds(logits, labels).sum()
    return log_odds(logits, targets).sum()


def class_loss(logits: Tensor, labels: Tensor, targets: Tensor | None,
               untargeted: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Per-example class term a minimum-norm attack minimises: the cross-entropy of ``targets`` when
    targeted (seed 001's C&W and L-BFGS), else ``untargeted(logits, labels)``."""
    if targets is not None:
        return F.cross_entropy(logits, targets, reduction="none")
    return untargeted(logits, labels)


def _sorted_logit(logits: Tensor, rank: int) -> Tensor:
    """The ``rank``-th largest logit per example (1-based), clamped to the number of classes."""
    return logits.sort(dim=1, descending=True).values[:, min(rank, logits.shape[1]) - 1]


def dlr(logits: Tensor, cls: Tensor) -> Tensor:
    """Difference of logits ratio (Croce & Hein 2020, Eq. 5): ``−(Z_y − max_{i≠y} Z_i) / (Z_π1 − Z_π3)``.

    ``π`` sorts the logits in decreasing order. Invariant to shifting and scaling the logits; needs at
    least three classes.

    Raises:
        ValueError: for fewer than three classes (there is no third-largest logit).
    """
    if logits.shape[1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes, got {logits.shape[1]}")
    return -class_margin(logits, cls) / (_sorted_logit(logits, 1) - _sorted_logit(logits, 3) + 1e-12)


def dlr_targeted(logits: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
    """Targeted DLR (Croce & Hein 2020, Eq. 6): ``−(Z_y − Z_t) / (Z_π1 − (Z_π3 + Z_π4)/2)``.

    With three classes ``Z_π4`` is read as ``Z_π3`` (the untargeted denominator); it needs at least three.

    Raises:
        ValueError: for fewer than three classes.
    """
    if logits.shape[1] < 3:
        raise ValueError(f"the targeted DLR loss needs at least 3 classes, got {logits.shape[1]}")
    gap = _own(logits, labels) - _own(logits, targets)
    scale = _sorted_logit(logits, 1) - 0.5 * (_sorted_logit(logits, 3) + _sorted_logit(logits, 4))
    return -gap / (scale + 1e-12)
