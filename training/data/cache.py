"""Atomic on-disk cache of decoded waveforms, keyed by everything they were built from.

A cache file is named ``<dataset>-<hash>.npz`` where the hash covers the build parameters; the
full key is stored inside too and compared on load, so a stale entry is never used. A file that
cannot be read (truncated, corrupt) is logged and rebuilt. Writes go to a temporary file in the
same folder followed by ``os.replace``, so a killed process never leaves a half-written cache.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from training.files import atomic_write

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]


def default_cache_dir() -> Path:
    """``$ADVAUDIO_CACHE`` if set, else ``~/.cache/advaudio``."""
    return Path(os.environ.get("ADVAUDIO_CACHE") or Path.home() / ".cache" / "advaudio")


def cache_path(cache_dir: Path, dataset: str, key: dict[str, Any]) -> tuple[Path, str]:
    """The cache file for ``key`` and the key's canonical JSON text."""
    text = json.dumps(key, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{dataset}-{digest}.npz", text


def cached(cache_dir: Path, dataset: str, key: dict[str, Any], build: Callable[[], Arrays]) -> Arrays:
    """Return the arrays cached under ``key``, building and storing them if absent, stale or corrupt.

    Args:
        cache_dir: folder holding cache files (created if missing).
        dataset: short name used in the file name.
        key: JSON-serialisable description of everything the arrays depend on.
        build: computes the arrays (no object arrays: they are loaded with ``allow_pickle=False``).
    """
    path, text = cache_path(cache_dir, dataset, key)
    if path.is_file():
        arrays = _load(path, text)
        if arrays is not None:
            log.info("loaded %s from cache %s", dataset, path)
            return arrays
    arrays = build()
    _store(path, text, arrays)
    return arrays


def _load(path: Path, text: str) -> Arrays | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        log.warning("cache %s is unreadable (%s); rebuilding it", path, str(err).splitlines()[0] if str(err) else "")
        return None
    if str(arrays.pop("__key__", "")) != text:
        log.warning("cache %s was built from other settings; rebuilding it", path)
        return None
    return arrays


def _store(path: Path, text: str, arrays: Arrays) -> None:
    try:
        atomic_write(path, lambda handle: np.savez(handle, __key__=np.array(text), **arrays), "cache")
    except OSError as err:
        log.warning("could not write cache %s (%s); continuing without it", path, err)
