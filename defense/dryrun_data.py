"""The data of a dry run: for each data set of an experiment, a copy at the real clip settings (for the full-size
check of every model) and one of short clips (for the cells end to end), both read by the real loader.

A data set with a ``root`` is written in its own layout (:mod:`training.data.standin`): a few of its real recordings
where the root exists, synthetic clips where it does not (said so); an embedded one (the General MIDI instruments)
is rendered by its loader, with three notes per class. Stand-ins cache their decoded audio inside the dry run's
folder; nothing is added to the user's cache.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from training.data import DATASETS, load_splits, parse_config
from training.data.base import Splits
from training.data.standin import has_layout, write_standin

CLIPS_PER_CLASS = 3
"""Notes rendered per class of an embedded data set (every split of its fractions non-empty)."""


@dataclass
class DryData:
    """One data set's two dry versions.

    Attributes:
        full: its ``dataset`` config at the real clip settings, pointing at the stand-in.
        short: dotted overrides (relative to the ``dataset`` group) of the end-to-end run.
        note: what the output says about it (stood in for, or real clips).
    """

    full: dict[str, Any]
    short: dict[str, Any]
    note: str
    _splits: Splits | None = None

    def splits(self) -> Splits:
        """The full-size copy read by the real loader (once)."""
        if self._splits is None:
            self._splits = load_splits(self.full)
        return self._splits


def key_of(cfg: Mapping[str, Any]) -> str:
    """A short stable name for a ``dataset`` config (folder names)."""
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{cfg.get('name')}-{digest}"


def prepare(cfg: Mapping[str, Any], folder: Path, seconds: float) -> DryData:
    """Write (or choose) the dry copies of the ``dataset`` config ``cfg`` under ``folder``; ``seconds`` is the
    end-to-end clip length.

    Raises:
        ConfigError: for a bad data set config. DataError: for a real data root whose metadata cannot be read.
    """
    cfg = dict(cfg)
    name = str(cfg["name"])
    windows = (2 - float(cfg.get("overlap", 0.75))) if cfg.get("segment") else 1.0  # two windows per file
    cache = str(folder / "cache")
    if "root" not in cfg or not has_layout(name):
        full = {**cfg, "cache_dir": cache}
        short: dict[str, Any] = {"cache_dir": cache, "clip_seconds": seconds}
        if "clips_per_class" in cfg:
            full["clips_per_class"] = short["clips_per_class"] = min(int(cfg["clips_per_class"]), CLIPS_PER_CLASS)
        if cfg.get("note_seconds") is not None:
            short["note_seconds"] = float(cfg["note_seconds"]) * seconds / float(cfg["clip_seconds"])
        return DryData(full, short, f"{name}: embedded, {full.get('clips_per_class', 'all')} clips per class")
    root = Path(str(cfg["root"])).expanduser()
    parsed = parse_config(cfg)
    source = DATASETS.get(name)(**parsed.kwargs) if root.is_dir() else None
    where = folder / "data" / key_of(cfg)
    full_seconds = None if source is not None else float(cfg["clip_seconds"]) * windows
    written = write_standin(cfg, where / "full", full_seconds, source)
    write_standin(cfg, where / "short", seconds * windows, source)
    note = (f"{written.describe()} (stood in for: {root} not found)" if source is None else written.describe())
    return DryData({**cfg, "root": str(where / "full"), "cache_dir": cache},
                   {"root": str(where / "short"), "cache_dir": cache, "clip_seconds": seconds}, note)
