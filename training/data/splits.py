"""Train / validation / test splits that never put one recording on two sides.

Every split is made over ``ClipSet.groups`` (recording ids shared by a recording's segments and
augmentations), stratified by label:

* ``official``: the data set's own folds (ESC-50, UrbanSound8K, FSDD's index rule); test is fold
  ``test_fold``.
* ``kfold``: ``folds`` stratified group folds (scikit-learn's ``StratifiedGroupKFold``), e.g.
  seed 003's three track-level GTZAN folds; test is fold ``test_fold`` (0-based).
* ``fractions``: a stratified ``test_fraction`` of the groups is held out (seed 004: 30 %).

Validation comes out of what is left: fold ``val_fold`` when set (for ``fractions`` the rest is cut
into ``folds`` group folds, as in seed 004's 5-fold cross-validation of the development part),
otherwise a stratified ``val_fraction`` of its groups. ``train_fraction < 1`` then keeps a stratified
share of the training recordings (for quick runs; validation and test are untouched).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold

from training.data.base import ClipSet, Splits
from training.data.errors import DataError
from victims.registry import ConfigError
from victims.schema import at_least, between, check_domains


@dataclass
class SplitOptions:
    """The ``dataset.split`` config mapping (see the module docstring); each field's domain is declared beside
    it (a fraction of 0 would leave its split empty)."""

    method: Literal["official", "kfold", "fractions"] = "fractions"
    folds: int = field(default=5, metadata=at_least(2))
    test_fold: int = field(default=0, metadata=at_least(0))
    val_fold: int | None = field(default=None, metadata=at_least(0))
    test_fraction: float = field(default=0.2, metadata=between(0.0, 1.0, "()"))
    val_fraction: float = field(default=0.1, metadata=between(0.0, 1.0, "()"))
    train_fraction: float = field(default=1.0, metadata=between(0.0, 1.0, "(]"))
    seed: int = 0

    def __post_init__(self) -> None:
        check_domains(self, "dataset.split")
        if self.val_fold is not None and self.val_fold == self.test_fold and self.method != "fractions":
            raise ConfigError(f"dataset.split.val_fold equals test_fold ({self.test_fold})")


def group_folds(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold id (0-based) of every clip from stratified group k-fold; one group stays in one fold."""
    out = np.full(labels.shape[0], -1, np.int64)
    if labels.shape[0] == 0:
        return out
    if np.unique(groups).shape[0] < folds:
        raise DataError(f"cannot cut {np.unique(groups).shape[0]} recordings into {folds} folds")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (_, index) in enumerate(splitter.split(np.zeros(labels.shape[0]), labels, groups)):
        out[index] = fold
    return out


def carve(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int, keep_lone: bool = False) -> np.ndarray:
    """Boolean mask of a stratified ``fraction`` of the groups (per class ``round(fraction * n)``,
    at least one when a class has two or more groups and ``fraction > 0``; a class's only group is taken with
    ``keep_lone``, left otherwise, so carving a held-out split never empties a class of the rest)."""
    mask = np.zeros(labels.shape[0], bool)
    if fraction <= 0.0 or labels.shape[0] == 0:
        return mask
    rng = np.random.default_rng(seed)
    unique, first = np.unique(groups, return_index=True)
    group_label = labels[first]
    chosen = []
    for label in np.unique(group_label):
        members = rng.permutation(unique[group_label == label])
        take = max(1, round(fraction * len(members))) if len(members) > 1 or keep_lone else 0
        chosen.append(members[:take])
    return np.isin(groups, np.concatenate(chosen))


def split_clips(clips: ClipSet, opts: SplitOptions) -> Splits:
    """Split ``clips`` into train / validation / test by recording (see the module docstring).

    Raises:
        DataError: for ``official`` on a data set without folds.
        ConfigError: for a ``test_fold``/``val_fold`` the data set does not have.
    """
    labels, groups = clips.labels.numpy(), clips.groups.numpy()
    if opts.method == "official":
        folds = clips.folds.numpy()
        if (folds < 0).any():
            raise DataError("this data set has no official folds; use dataset.split.method kfold or fractions")
    elif opts.method == "kfold":
        folds = group_folds(labels, groups, opts.folds, opts.seed)
    else:
        folds = np.where(carve(labels, groups, opts.test_fraction, opts.seed), opts.test_fold, opts.test_fold + 1)
    known = sorted(set(folds.tolist()))
    for key in ("test_fold", "val_fold"):
        value = getattr(opts, key)
        if value is not None and opts.method != "fractions" and value not in known:
            raise ConfigError(f"dataset.split.{key}={value} is not a fold of this data set (folds: {known})")
    test = folds == opts.test_fold
    dev = ~test
    if opts.val_fold is None:
        val = np.zeros_like(dev)
        val[dev] = carve(labels[dev], groups[dev], opts.val_fraction, opts.seed + 1)
    elif opts.method == "fractions":
        val = np.zeros_like(dev)
        val[dev] = group_folds(labels[dev], groups[dev], opts.folds, opts.seed + 1) == opts.val_fold
    else:
        val = folds == opts.val_fold
    train = dev & ~val
    if opts.train_fraction < 1.0:  # a stratified share of the training recordings (quick runs)
        keep = np.zeros_like(train)
        keep[train] = carve(labels[train], groups[train], opts.train_fraction, opts.seed + 2, keep_lone=True)
        train = keep
    splits = Splits(*(clips.subset(torch.from_numpy(m)) for m in (train, val, test)))
    check_disjoint(splits)
    return splits


def check_disjoint(splits: Splits) -> None:
    """Raise if any recording (group id) appears in two of train / validation / test."""
    sets = {name: set(getattr(splits, name).groups.tolist()) for name in ("train", "val", "test")}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = sets[a] & sets[b]
        if shared:
            raise DataError(f"split leak: {len(shared)} recordings in both {a} and {b} (e.g. group {min(shared)})")


def check_usable(splits: Splits, name: str, method: str) -> None:
    """Refuse splits a classifier cannot be trained or evaluated on: fewer than two classes (in the data set or
    its training split) or an empty train, validation or test split.

    Raises:
        DataError: one line naming the data set, the problem and the split sizes.
    """
    sizes = f"{len(splits.train)} train, {len(splits.val)} validation, {len(splits.test)} test clips"
    classes = splits.class_names
    if len(classes) < 2:
        raise DataError(f"{name} has {len(classes)} class{'' if len(classes) == 1 else 'es'} "
                        f"({', '.join(classes) or 'none'}): a classifier needs at least 2")
    for which, clips in (("training", splits.train), ("validation", splits.val), ("test", splits.test)):
        if len(clips) == 0:
            raise DataError(f"{name}: the {which} split is empty ({sizes}; dataset.split.method {method}): give "
                            "each class more recordings or change dataset.split")
    present = sorted({classes[i] for i in splits.train.labels.tolist()})
    if len(present) < 2:
        raise DataError(f"{name}: the training split holds only class '{present[0]}' ({sizes})")
