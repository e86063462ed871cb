"""Decoded, fixed-length clips held in memory, and their train/validation/test splits."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from victims.registry import Registry

DATASETS: Registry = Registry("dataset")


@dataclass
class ClipSet:
    """Fixed-length mono clips of one data set at one rate.

    Attributes:
        waves: ``(N, 1, T)`` float32 in ``[-1, 1]``.
        labels: ``(N,)`` int64 class indices into ``class_names``.
        groups: ``(N,)`` int64 source-clip ids; segments and augmentations of one recording share
            its id, so a split by group never leaks a clip across splits.
        folds: ``(N,)`` int64 official fold (or track-level fold) of each clip, ``-1`` if none.
        class_names: label names, index = class id.
        sample_rate: rate of ``waves`` in Hz.
        names: ``N`` source file names (relative to the data root) for reports.
    """

    waves: Tensor
    labels: Tensor
    groups: Tensor
    folds: Tensor
    class_names: list[str]
    sample_rate: int
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.waves.shape[-1])

    def subset(self, index: Tensor) -> "ClipSet":
        """The clips at ``index`` (a bool mask or int64 indices)."""
        idx = index.nonzero().flatten() if index.dtype == torch.bool else index
        names = [self.names[i] for i in idx.tolist()] if self.names else []
        return ClipSet(self.waves[idx], self.labels[idx], self.groups[idx], self.folds[idx],
                       list(self.class_names), self.sample_rate, names)


@dataclass
class Splits:
    """Train / validation / test clip sets with disjoint ``groups``."""

    train: ClipSet
    val: ClipSet
    test: ClipSet

    @property
    def class_names(self) -> list[str]:
        return self.train.class_names
