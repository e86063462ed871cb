"""Splits by recording: official folds, stratified group k-fold, fractions, and no leaks."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from training.data import load_clips, load_splits
from training.data.base import ClipSet, Splits
from training.data.errors import DataError
from training.data.splits import SplitOptions, check_disjoint, split_clips
from victims.registry import ConfigError


def clip_set(groups_per_class: int = 20, classes: int = 3, segments: int = 2, folds: int = 0) -> ClipSet:
    """Synthetic clips: each recording has ``segments`` clips; ``folds`` > 0 assigns official folds."""
    labels, groups, fold = [], [], []
    for g in range(groups_per_class * classes):
        for _ in range(segments):
            labels.append(g % classes)
            groups.append(g)
            fold.append(1 + (g // classes) % folds if folds else -1)
    n = len(labels)
    return ClipSet(torch.zeros(n, 1, 4), torch.tensor(labels), torch.tensor(groups), torch.tensor(fold),
                   [f"c{k}" for k in range(classes)], 100, [f"rec{g}.wav" for g in groups])


def groups_of(clips: ClipSet) -> set[int]:
    return set(clips.groups.tolist())


def assert_partition(clips: ClipSet, splits: Splits) -> None:
    parts = [groups_of(s) for s in (splits.train, splits.val, splits.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert len(splits.train) + len(splits.val) + len(splits.test) == len(clips)


def test_official_folds(tmp_path: Path) -> None:
    clips = clip_set(folds=5)
    splits = split_clips(clips, SplitOptions(method="official", test_fold=3, val_fraction=0.25))
    assert set(splits.test.folds.tolist()) == {3} and len(splits.test) == len(clips) // 5
    assert 3 not in set(splits.train.folds.tolist()) | set(splits.val.folds.tolist())
    assert len(groups_of(splits.val)) == 12  # 25 % of each class's 16 remaining recordings
    assert torch.bincount(splits.val.labels).tolist() == [8, 8, 8]
    assert_partition(clips, splits)


def test_official_val_fold() -> None:
    clips = clip_set(folds=5)
    splits = split_clips(clips, SplitOptions(method="official", test_fold=1, val_fold=2))
    assert set(splits.val.folds.tolist()) == {2} and set(splits.train.folds.tolist()) == {3, 4, 5}


def test_official_needs_folds_and_known_fold_numbers() -> None:
    with pytest.raises(DataError, match="no official folds"):
        split_clips(clip_set(), SplitOptions(method="official"))
    with pytest.raises(ConfigError, match=r"test_fold=7 is not a fold .*\[1, 2, 3, 4, 5\]"):
        split_clips(clip_set(folds=5), SplitOptions(method="official", test_fold=7))
    with pytest.raises(ConfigError, match="val_fold equals test_fold"):
        SplitOptions(method="official", test_fold=1, val_fold=1)


def test_kfold_is_stratified_by_recording_and_covers_everything() -> None:
    clips = clip_set(groups_per_class=12, segments=3)
    tests = []
    for fold in range(3):
        splits = split_clips(clips, SplitOptions(method="kfold", folds=3, test_fold=fold, val_fraction=0.25, seed=7))
        assert_partition(clips, splits)
        assert torch.bincount(splits.test.labels).tolist() == [12, 12, 12]  # 4 recordings x 3 segments per class
        tests.append(groups_of(splits.test))
    assert set().union(*tests) == groups_of(clips) and sum(len(t) for t in tests) == 36


def test_kfold_is_seeded() -> None:
    clips = clip_set()
    a = split_clips(clips, SplitOptions(method="kfold", seed=1))
    b = split_clips(clips, SplitOptions(method="kfold", seed=1))
    c = split_clips(clips, SplitOptions(method="kfold", seed=2))
    assert groups_of(a.test) == groups_of(b.test) and groups_of(a.test) != groups_of(c.test)


def test_fractions_hold_out_exact_shares() -> None:
    clips = clip_set(groups_per_class=20)
    splits = split_clips(clips, SplitOptions(method="fractions", test_fraction=0.3, val_fraction=0.25))
    assert [len(groups_of(splits.test.subset(splits.test.labels == k))) for k in range(3)] == [6, 6, 6]
    assert [len(groups_of(splits.val.subset(splits.val.labels == k))) for k in range(3)] == [4, 4, 4]
    assert_partition(clips, splits)


def test_fractions_with_dev_folds_like_seed_004() -> None:
    clips = clip_set(groups_per_class=20)
    vals = [groups_of(split_clips(clips, SplitOptions(method="fractions", test_fraction=0.3, folds=5,
                                                      val_fold=k)).val) for k in range(5)]
    assert all(len(v) == 42 // 5 or len(v) == 42 // 5 + 1 for v in vals)
    assert sum(len(v) for v in vals) == 42 and len(set().union(*vals)) == 42


def test_check_disjoint_catches_a_leak() -> None:
    clips = clip_set()
    with pytest.raises(DataError, match="split leak: .* train and test"):
        check_disjoint(Splits(clips, clips.subset(torch.tensor([], dtype=torch.int64)), clips.subset(torch.tensor([0]))))


def test_bad_split_values() -> None:
    with pytest.raises(ConfigError, match="folds must be >= 2"):
        SplitOptions(folds=1)
    with pytest.raises(ConfigError, match="test_fraction must be in"):
        SplitOptions(test_fraction=1.5)
    with pytest.raises(DataError, match="cannot cut 3 recordings into 5 folds"):
        split_clips(clip_set(groups_per_class=1), SplitOptions(method="kfold", folds=5))


def test_no_clip_segment_or_augmentation_crosses_a_split(tmp_path: Path) -> None:
    rate = 2000
    for genre, freq in [("blues", 200.0), ("rock", 500.0)]:
        for i in range(6):
            t = np.arange(rate * 2) / rate
            wave = (0.4 * np.sin(2 * np.pi * freq * (1 + 0.05 * i) * t)).astype(np.float32)
            path = tmp_path / "gtzan" / "genres" / genre / f"{genre}.{i:05d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, wave, rate)
    cfg = {"name": "gtzan", "root": str(tmp_path / "gtzan"), "sample_rate": rate, "clip_seconds": 0.5,
           "segment": True, "overlap": 0.5, "cache_dir": str(tmp_path / "cache"),
           "split": {"method": "kfold", "folds": 3, "test_fold": 1, "val_fraction": 0.25},
           "augment": {"pitch_factors": [0.75, 0.9, 1.15, 1.5]}}
    splits = load_splits(cfg)
    source = {s: {re.split(r"[#@]", n)[0] for n in getattr(splits, s).names} for s in ("train", "val", "test")}
    assert not (source["train"] & source["val"]) and not (source["train"] & source["test"])
    assert not (source["val"] & source["test"])
    assert not any("@pitch" in n for n in splits.val.names + splits.test.names)
    plain = [n for n in splits.train.names if "@" not in n]
    assert all(re.fullmatch(r"genres/\w+/\w+\.\d{5}\.wav#\d", n) for n in plain)
    assert len(splits.train) == 5 * len(plain) and len(plain) == 7 * len(source["train"])  # 7 windows a track
    assert len(source["test"]) == 4 and len(source["val"]) == 2


def test_fsdd_official_split_on_the_real_data(fsdd_root: Path, tmp_path: Path) -> None:
    cfg = {"name": "fsdd", "root": str(fsdd_root), "sample_rate": 8000, "clip_seconds": 1.0, "align": "center",
           "cache_dir": str(tmp_path / "cache"), "split": {"method": "official", "test_fold": 0, "val_fraction": 0.1}}
    clips = load_clips(cfg)
    assert len(clips) == 3000 and len(clips.class_names) == 10 and clips.waves.shape[1:] == (1, 8000)
    assert int((clips.folds == 0).sum()) == 300 and int((clips.folds == 1).sum()) == 2700
    splits = load_splits(cfg)
    assert len(splits.test) == 300 and len(splits.train) + len(splits.val) == 2700
    assert len(splits.val) == 270 and torch.bincount(splits.val.labels).tolist() == [27] * 10
    assert all(int(n.rsplit("_", 1)[1][:-4]) <= 4 for n in splits.test.names)
    assert_partition(clips, splits)


def test_train_fraction_keeps_a_stratified_share_of_training_recordings() -> None:
    n = 200
    labels = torch.arange(n) % 4
    clips = ClipSet(torch.zeros(n, 1, 8), labels, torch.arange(n), torch.full((n,), -1), list("abcd"), 8000)
    full = split_clips(clips, SplitOptions(test_fraction=0.2, val_fraction=0.1))
    part = split_clips(clips, SplitOptions(test_fraction=0.2, val_fraction=0.1, train_fraction=0.25))
    assert torch.equal(part.test.groups, full.test.groups) and torch.equal(part.val.groups, full.val.groups)
    assert set(part.train.groups.tolist()) < set(full.train.groups.tolist())
    assert torch.bincount(part.train.labels).tolist() == [round(0.25 * c) for c in torch.bincount(full.train.labels).tolist()]
    with pytest.raises(ConfigError, match="train_fraction must be in"):
        SplitOptions(train_fraction=0.0)


def test_train_fraction_keeps_a_class_with_one_training_recording() -> None:
    """A class left with a single training recording keeps it: a quick run on a share of the data must not train
    without a class (it used to drop it, since carving a held-out split never takes a class's last recording)."""
    labels = torch.tensor([0] * 12 + [1] * 3)
    clips = ClipSet(torch.zeros(15, 1, 8), labels, torch.arange(15), torch.full((15,), -1), ["a", "b"], 8000)
    full = split_clips(clips, SplitOptions(test_fraction=0.2, val_fraction=0.1))
    assert torch.bincount(full.train.labels).tolist()[1] == 1
    part = split_clips(clips, SplitOptions(test_fraction=0.2, val_fraction=0.1, train_fraction=0.25))
    kept_a = round(0.25 * int((full.train.labels == 0).sum()))
    assert torch.bincount(part.train.labels, minlength=2).tolist() == [kept_a, 1]
