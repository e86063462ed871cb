"""What a registered data set returns: a source of variable-length decoded waveforms.

Every entry of :data:`~training.data.base.DATASETS` is a callable taking the data set's own config
keys (e.g. ``root``) and returning a :class:`Source`. A source decodes its audio at a requested rate
into :class:`Decoded` (cached on disk); :func:`training.data.load_clips` then cuts the waveforms to
a fixed length or into overlapping segments.
"""
from __future__ import annotations

import csv
import io
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from training.data.audio import read_audio
from training.data.cache import cached
from training.data.errors import AudioError, DataError

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass(frozen=True)
class DecodeSpec:
    """How to decode: target rate, clip length (used by synthetic sources), limits and cache folder."""

    sample_rate: int
    clip_seconds: float
    max_seconds: float | None
    cache_dir: Path
    unreadable: Literal["error", "skip"] = "error"


@dataclass
class Decoded:
    """Variable-length mono waveforms with their labels, recording ids and official folds."""

    waves: list[np.ndarray]
    labels: np.ndarray
    groups: np.ndarray
    folds: np.ndarray
    names: list[str]
    class_names: list[str]
    skipped: list[str] = field(default_factory=list)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flatten into plain arrays for :func:`training.data.cache.cached`."""
        lengths = np.array([w.shape[0] for w in self.waves], dtype=np.int64)
        samples = np.concatenate(self.waves) if self.waves else np.zeros(0, np.float32)
        return {"samples": samples.astype(np.float32), "lengths": lengths, "labels": self.labels,
                "groups": self.groups, "folds": self.folds, "names": np.array(self.names, dtype=str),
                "class_names": np.array(self.class_names, dtype=str),
                "skipped": np.array(self.skipped, dtype=str)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Decoded":
        """Inverse of :meth:`to_arrays`."""
        bounds = np.concatenate([[0], np.cumsum(arrays["lengths"])])
        samples = arrays["samples"]
        waves = [samples[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        return cls(waves, arrays["labels"].astype(np.int64), arrays["groups"].astype(np.int64),
                   arrays["folds"].astype(np.int64), arrays["names"].tolist(),
                   arrays["class_names"].tolist(), arrays["skipped"].tolist())


class Source(Protocol):
    """Anything that can produce :class:`Decoded` audio for a :class:`DecodeSpec`."""

    def decode(self, spec: DecodeSpec) -> Decoded: ...


@dataclass
class FileTable:
    """Audio files under ``root`` with their labels; decoding reads them with :func:`read_audio`.

    Attributes:
        dataset: data set name (cache file prefix, messages).
        root: data root; ``files`` are relative to it.
        files: relative paths, already checked not to escape ``root``.
        labels, groups, folds: one int per file (fold ``-1`` where there is none).
        class_names: label names, index = class id.
    """

    dataset: str
    root: Path
    files: list[str]
    labels: list[int]
    groups: list[int]
    folds: list[int]
    class_names: list[str]

    def decode(self, spec: DecodeSpec) -> Decoded:
        """Decode every file at ``spec.sample_rate``, through the cache."""
        stats = []
        for rel in self.files:
            path = self.root / rel
            try:
                st = path.stat()
            except FileNotFoundError:
                raise AudioError(f"audio file listed for {self.dataset} not found: {path}") from None
            except OSError as err:
                raise AudioError(f"audio file listed for {self.dataset} cannot be opened: {path} "
                                 f"({err.strerror})") from None
            stats.append((rel, st.st_size, st.st_mtime_ns))
        self._log_outside_links()
        key = {"version": CACHE_VERSION, "dataset": self.dataset, "root": str(self.root.resolve()),
               "rate": spec.sample_rate, "max_seconds": spec.max_seconds, "unreadable": spec.unreadable,
               "files": stats, "labels": self.labels, "groups": self.groups, "folds": self.folds,
               "classes": self.class_names}
        decoded = Decoded.from_arrays(cached(spec.cache_dir, self.dataset, key, lambda: self._read(spec).to_arrays()))
        if decoded.skipped:
            log.warning("%s: skipped %d unreadable files: %s", self.dataset, len(decoded.skipped),
                        ", ".join(decoded.skipped[:5]) + (" ..." if len(decoded.skipped) > 5 else ""))
        return decoded

    def _log_outside_links(self) -> None:
        """Symbolic links are followed wherever they lead (data sets are often assembled from links to
        another disk); the files that resolve outside the data root are counted in one log line."""
        root = os.path.realpath(self.root)
        folders: dict[Path, str] = {}

        def resolved(path: Path) -> str:  # one realpath per folder, not per file: 8,732 files, 10 folders
            if path.is_symlink():
                return os.path.realpath(path)
            if path.parent not in folders:
                folders[path.parent] = os.path.realpath(path.parent)
            return os.path.join(folders[path.parent], path.name)

        inside = root.rstrip(os.sep) + os.sep
        outside = [rel for rel in self.files if not resolved(self.root / rel).startswith(inside)]
        if outside:
            log.info("%s: %d files are symbolic links leading outside the data root %s (followed): %s", self.dataset,
                     len(outside), self.root, ", ".join(outside[:3]) + (" ..." if len(outside) > 3 else ""))

    def _read(self, spec: DecodeSpec) -> Decoded:
        tally: Counter[str] = Counter()
        waves, keep, skipped = [], [], []
        for i, rel in enumerate(self.files):
            try:
                waves.append(read_audio(self.root / rel, spec.sample_rate, spec.max_seconds, tally))
                keep.append(i)
            except AudioError as err:
                if spec.unreadable == "error":
                    raise
                log.warning("skipping %s", err)
                skipped.append(rel)
        if tally:
            notes = {"misnamed": "decoded {} files whose data is another format than their name says "
                                 "(e.g. FLAC in .wav)",
                     "mixdown": "mixed down {} multi-channel files", "rescale": "scaled {} float files peaking above 1",
                     "resample": f"resampled {{}} files to {spec.sample_rate} Hz"}
            log.info("%s: %s", self.dataset, "; ".join(text.format(tally[k]) for k, text in notes.items() if tally[k]))
        pick = np.array(keep, dtype=np.int64)
        return Decoded(waves, np.asarray(self.labels, np.int64)[pick], np.asarray(self.groups, np.int64)[pick],
                       np.asarray(self.folds, np.int64)[pick], [self.files[i] for i in keep],
                       list(self.class_names), skipped)


def check_root(root: str | Path, dataset: str) -> Path:
    """The data root as a path (relative roots resolve against the current directory).

    Raises:
        DataError: if it is not a folder.
    """
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"{dataset} data root not found: {path.resolve()} (set dataset.root)")
    return path


def read_csv(path: Path, required: list[str]) -> list[dict[str, str]]:
    """Read a UTF-8 metadata CSV, checking it has the ``required`` columns.

    CRLF line ends and quoted fields (commas, line breaks inside quotes) are read as the CSV standard
    says; a leading byte-order mark (spreadsheet exports) is dropped and logged.

    Raises:
        DataError: naming the file (and line) if it is missing, not UTF-8, malformed or lacks a column.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"metadata file not found: {path}") from None
    except OSError as err:
        raise DataError(f"cannot read metadata file {path}: {err.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x}); save it as UTF-8") from None
    if text.startswith("\ufeff"):
        log.info("%s starts with a byte-order mark; ignored", path)
        text = text[1:]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = reader.fieldnames or []
        missing = [c for c in required if c not in columns]
        if missing:
            raise DataError(f"{path}: missing column '{missing[0]}' (has: {', '.join(columns) or 'none'})")
        return list(reader)
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({err})") from None


def int_field(row: dict[str, str], column: str, path: Path, line: int) -> int:
    """``int(row[column])`` or a one-line :class:`DataError` naming the file, line and column."""
    try:
        return int(row[column])
    except (TypeError, ValueError):
        raise DataError(f"{path}:{line}: column '{column}' is not an integer: {row[column]!r}") from None


def group_ids(keys: list[str]) -> list[int]:
    """Map recording keys (e.g. Freesound ids) to dense ints in order of first appearance."""
    ids: dict[str, int] = {}
    return [ids.setdefault(k, len(ids)) for k in keys]
