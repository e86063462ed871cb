"""Which clips a grid attacks and at which targets: a seeded, class-balanced subset of the test split and a random
other class per clip (seed 004 draws targets at random); shared by the grid runner, the studies and the benchmarks.
"""
from __future__ import annotations

import torch
from torch import Tensor

from training.data.base import ClipSet


def select_examples(test: ClipSet, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded, class-balanced subset of ``n`` test clips (all of them if fewer)."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(test), generator=gen)
    labels = test.labels[order]
    rank = torch.zeros_like(labels)
    for c in labels.unique():
        hit = labels == c
        rank[hit] = torch.arange(int(hit.sum()))
    chosen = order[torch.argsort(rank * len(test) + torch.arange(len(test)), stable=True)][:n]
    return test.waves[chosen], test.labels[chosen]


def random_targets(labels: Tensor, num_classes: int, seed: int) -> Tensor:
    """A random class other than the true one per example (seed 004 draws targets at random)."""
    gen = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, num_classes, labels.shape, generator=gen)
    return (labels + shift) % num_classes
