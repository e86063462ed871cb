"""Split sizes a cost plan counts with: read from the data where it is present, else from the data set's
documented size and fold layout (said so in the plan).

A documented size follows the data set's paper and release: ESC-50 (Piczak 2015) 2,000 five-second clips in
five folds of 400; UrbanSound8K (Salamon et al. 2014) 8,732 slices of at most 4 s in ten folds of the release's
sizes; GTZAN (Tzanetakis & Cook 2002) 1,000 thirty-second tracks; FSDKaggle2019's curated single-label
instrument clips (799 for seed 000's twelve labels); FSDD 3,000 recordings, 300 of them the official test set.
Splits carved by fraction are computed as the fraction of the recordings (the real carving is stratified by
class, so it can differ by a few clips); silent clips, which the loader drops, are not known in advance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from training.data import load_splits, parse_config
from training.data.errors import DataError
from victims.registry import ConfigError


@dataclass(frozen=True)
class DataSizes:
    """Clips per split and the clip format of one data set config.

    Attributes:
        train, val, test: clips per split (train after augmentation).
        num_classes: classes.
        sample_rate: Hz; num_samples: samples per clip.
        source: ``"data"`` (read from the data set) or ``"documented"`` (its documented size and layout).
        note: for a documented size, why the data was not read.
    """

    train: int
    val: int
    test: int
    num_classes: int
    sample_rate: int
    num_samples: int
    source: str = "data"
    note: str = ""


@dataclass(frozen=True)
class Layout:
    """A data set's documented size: recordings, classes, seconds per recording and official folds."""

    recordings: int
    classes: int
    seconds: float
    folds: dict[int, int] = field(default_factory=dict)
    cite: str = ""


URBANSOUND8K_FOLDS = {1: 873, 2: 888, 3: 925, 4: 990, 5: 936, 6: 823, 7: 838, 8: 806, 9: 816, 10: 837}
DOCUMENTED: dict[str, Layout] = {
    "esc50": Layout(2000, 50, 5.0, {f: 400 for f in range(1, 6)}, "ESC-50, Piczak 2015"),
    "urbansound8k": Layout(8732, 10, 4.0, URBANSOUND8K_FOLDS, "UrbanSound8K, Salamon et al. 2014"),
    "gtzan": Layout(1000, 10, 30.0, {}, "GTZAN, Tzanetakis & Cook 2002"),
    "fsdkaggle2019": Layout(799, 12, 5.0, {}, "FSDKaggle2019 curated, seed 000's 12 instrument labels"),
    "fsdd": Layout(3000, 10, 0.44, {0: 300, 1: 2700}, "FSDD, official split"),
}
ESC10 = Layout(400, 10, 5.0, {f: 80 for f in range(1, 6)}, "ESC-10 subset of ESC-50")


def data_sizes(cfg: Mapping[str, Any]) -> DataSizes:
    """The split sizes of a ``dataset`` config: loaded (through the cache) where the data is present, else
    documented.

    Raises:
        ConfigError: for a data set that is absent and has no documented size (``folder``), or a bad config.
    """
    parsed = parse_config(cfg)
    try:
        splits = load_splits(cfg)
    except DataError as err:
        layout = ESC10 if parsed.name == "esc50" and parsed.kwargs.get("esc10") else DOCUMENTED.get(parsed.name)
        if layout is None:
            raise ConfigError(f"the plan needs data set '{parsed.name}' or its size: {str(err).splitlines()[0]}") \
                from None
        return documented_sizes(cfg, layout, f"{layout.cite}; not read here: {str(err).splitlines()[0]}")
    return DataSizes(len(splits.train), len(splits.val), len(splits.test), len(splits.class_names),
                     splits.train.sample_rate, splits.train.num_samples)


def documented_sizes(cfg: Mapping[str, Any], layout: Layout, note: str) -> DataSizes:
    """Split sizes from a documented layout and the config's split, segmentation and augmentation options."""
    parsed = parse_config(cfg)
    split, clip = parsed.split, parsed.clip
    total = layout.recordings
    if split.method == "official":
        if split.test_fold not in layout.folds:
            raise ConfigError(f"dataset.split.test_fold={split.test_fold} is not a fold of {parsed.name} "
                              f"(folds: {sorted(layout.folds)})")
        test = layout.folds[split.test_fold]
    elif split.method == "kfold":
        test = round(total / split.folds)
    else:
        test = round(total * split.test_fraction)
    dev = total - test
    if split.val_fold is None:
        val = round(dev * split.val_fraction)
    elif split.method == "official":
        val = layout.folds.get(split.val_fold, 0)
    else:
        val = round(dev / split.folds)
    train = round((dev - val) * split.train_fraction)
    per = windows(layout.seconds, clip.clip_seconds, clip.overlap) if clip.segment else 1
    copies = len(parsed.augment.pitch_factors) + int(parsed.augment.keep_original) if parsed.augment.pitch_factors \
        else 1
    return DataSizes(train * per * copies, val * per, test * per, layout.classes, clip.sample_rate,
                     clip.num_samples, "documented", note)


def windows(seconds: float, window_seconds: float, overlap: float) -> int:
    """Windows :func:`training.data.audio.segment` cuts from a recording of ``seconds`` (75 % overlap on a
    30 s track: 21 five-second windows)."""
    hop = max(1e-9, window_seconds * (1.0 - overlap))
    return 1 + math.ceil(max(0.0, seconds - window_seconds) / hop - 1e-9)
