"""Data sets read from their standard layouts, decoded, cached, cut to fixed length and split.

The trainer calls :func:`load_splits` with the resolved ``dataset`` config group::

    name: fsdd                 # a DATASETS name
    root: ../shared/data/fsdd  # the data set's own keys (relative roots resolve against the cwd)
    sample_rate: 8000          # ClipOptions keys: rate, length, segmentation, bad-input policies
    clip_seconds: 1.0
    split: {method: official, test_fold: 0, val_fraction: 0.1}   # SplitOptions
    augment: {pitch_factors: [0.75, 0.9, 1.15, 1.5]}             # AugmentOptions (train only)

An unknown key or a wrong value is a one-line :class:`~victims.registry.ConfigError`.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import torch

from training.data import (esc50, folder, fsdd, fsdkaggle2019, gm_instruments, gtzan, speech_commands,  # noqa: F401
                           urbansound8k)  # registration
from training.data.audio import Align, fix_length, is_silent, segment
from training.data.augment import AugmentOptions, augment_pitch
from training.data.base import DATASETS, ClipSet, Splits
from training.data.cache import default_cache_dir
from training.data.errors import AudioError, DataError
from training.data.source import Decoded, DecodeSpec
from training.data.splits import SplitOptions, check_disjoint, check_usable, split_clips
from victims.registry import ConfigError, _suggest, to_dataclass
from victims.schema import above, at_least, between, check_domains

__all__ = ["AudioError", "ClipOptions", "ClipSet", "DATASETS", "DataError", "DatasetConfig", "Splits", "load_clips",
           "load_splits", "parse_config"]

log = logging.getLogger(__name__)


@dataclass
class ClipOptions:
    """Keys of the ``dataset`` config shared by every data set.

    Attributes:
        sample_rate: rate of the returned clips (files at other rates are resampled).
        clip_seconds: length of every clip, or of every window when segmenting.
        align: ``start`` pads/crops at the end; ``center`` keeps the middle of long files and
            centres short ones.
        segment: cut each file into overlapping windows (seed 003) instead of one padded/cropped clip.
        overlap: window overlap in ``[0, 1)`` when segmenting (seed 003: 0.75).
        min_energy: windows with ``mean(x**2) <= min_energy`` are dropped when segmenting (1e-5).
        max_seconds: files longer than this are an error (or skipped, see ``unreadable``).
        silent: what to do with all-zero clips: ``drop`` (logged), ``keep`` or ``error``.
        unreadable: corrupt/empty/NaN/over-long files: ``error`` (default) or ``skip`` (logged).
        cache_dir: decoded-audio cache folder; ``null`` = ``$ADVAUDIO_CACHE`` or ``~/.cache/advaudio``.
    """

    sample_rate: int = field(default=16000, metadata=at_least(1))
    clip_seconds: float = field(default=1.0, metadata=above(0))
    align: Align = "start"
    segment: bool = False
    overlap: float = field(default=0.75, metadata=between(0.0, 1.0, "[)"))
    min_energy: float = field(default=1e-5, metadata=at_least(0))
    max_seconds: float = field(default=600.0, metadata=above(0, finite=False))
    silent: Literal["drop", "keep", "error"] = "drop"
    unreadable: Literal["error", "skip"] = "error"
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        check_domains(self, "dataset")
        if self.num_samples < 1:
            raise ConfigError(f"dataset.clip_seconds={self.clip_seconds} at sample_rate {self.sample_rate} is "
                              "shorter than one sample")

    @property
    def num_samples(self) -> int:
        """Samples per clip: ``round(clip_seconds * sample_rate)``."""
        return round(self.clip_seconds * self.sample_rate)


@dataclass
class DatasetConfig:
    """A validated ``dataset`` config: the registry name, the data set's own keys and the options."""

    name: str
    kwargs: dict[str, Any]
    clip: ClipOptions
    split: SplitOptions
    augment: AugmentOptions


def parse_config(cfg: Mapping[str, Any]) -> DatasetConfig:
    """Validate a ``dataset`` config group without reading any data.

    Raises:
        ConfigError: one line naming an unknown data set, key, or a wrong value.
    """
    cfg = dict(cfg)
    if "name" not in cfg:
        raise ConfigError("dataset config has no 'name'; known: " + ", ".join(DATASETS.names()))
    name = cfg.pop("name")
    ctor = DATASETS.get(name)
    split = to_dataclass(SplitOptions, cfg.pop("split", None) or {}, "dataset.split")
    augment = to_dataclass(AugmentOptions, cfg.pop("augment", None) or {}, "dataset.augment")
    common = {f.name for f in fields(ClipOptions)}
    own = list(inspect.signature(ctor).parameters)
    for key in cfg:
        if key not in common and key not in own:
            accepted = own + sorted(common) + ["split", "augment"]
            raise ConfigError(f"unknown key 'dataset.{key}' for data set '{name}'{_suggest(key, accepted)}; "
                              f"accepted: {', '.join(accepted)}")
    clip = to_dataclass(ClipOptions, {k: v for k, v in cfg.items() if k in common}, "dataset")
    return DatasetConfig(name, {k: v for k, v in cfg.items() if k not in common}, clip, split, augment)


def load_clips(cfg: Mapping[str, Any]) -> ClipSet:
    """Decode (through the cache) and cut a data set into fixed-length clips.

    Args:
        cfg: the ``dataset`` config group; ``split`` and ``augment`` keys are validated but unused.

    Raises:
        ConfigError: for an unknown data set, key or value.
        DataError: for bad metadata or paths; :class:`AudioError` for bad audio files.
    """
    parsed = parse_config(cfg)
    opts = parsed.clip
    source = DATASETS.get(parsed.name)(**parsed.kwargs)
    spec = DecodeSpec(opts.sample_rate, opts.clip_seconds, opts.max_seconds,
                      Path(opts.cache_dir) if opts.cache_dir else default_cache_dir(), opts.unreadable)
    return _cut(source.decode(spec), opts, parsed.name)


def _cut(decoded: Decoded, opts: ClipOptions, name: str) -> ClipSet:
    """Fixed-length clips from variable-length waves; segments are named ``<file>#<window index>``."""
    length = opts.num_samples
    waves, index, names, silent = [], [], [], []
    for i, wave in enumerate(decoded.waves):
        if opts.segment:
            pieces = [(f"{decoded.names[i]}#{k}", w) for k, w in segment(wave, length, opts.overlap, opts.min_energy)]
        else:
            pieces = [(decoded.names[i], fix_length(wave, length, opts.align))]
        for piece_name, piece in pieces:
            if opts.silent != "keep" and is_silent(piece):
                if opts.silent == "error":
                    raise AudioError(f"{piece_name}: silent clip (all samples below 1e-6) in {name}")
                silent.append(piece_name)
                continue
            waves.append(piece)
            index.append(i)
            names.append(piece_name)
    if silent:
        log.warning("%s: dropped %d silent clips, e.g. %s", name, len(silent), ", ".join(silent[:5]))
    if not waves:
        raise DataError(f"{name}: no usable clips")
    pick = np.array(index, dtype=np.int64)
    return ClipSet(torch.from_numpy(np.stack(waves)).unsqueeze(1), torch.from_numpy(decoded.labels[pick]),
                   torch.from_numpy(decoded.groups[pick]), torch.from_numpy(decoded.folds[pick]),
                   list(decoded.class_names), opts.sample_rate, names)


def load_splits(cfg: Mapping[str, Any]) -> Splits:
    """Load a data set, split it by recording, and augment the training split only.

    Args:
        cfg: the ``dataset`` config group (see the module docstring).

    Returns:
        Train / validation / test clip sets whose recordings (groups) are disjoint.

    Raises:
        DataError: for splits that cannot train or evaluate a classifier (fewer than two classes, an empty split).
    """
    parsed = parse_config(cfg)
    splits = split_clips(load_clips(cfg), parsed.split)
    splits = Splits(augment_pitch(splits.train, parsed.augment), splits.val, splits.test)
    check_disjoint(splits)
    check_usable(splits, parsed.name, parsed.split.method)
    log.info("splits: %d train, %d val, %d test clips, %d classes", len(splits.train), len(splits.val),
             len(splits.test), len(splits.class_names))
    return splits
