"""Reading audio files into float32 mono waveforms at a target rate, and fixed-length cutting.

Multi-channel files are mixed down (mean over channels), float files peaking above 1 are scaled
into ``[-1, 1]`` and other rates are resampled with ``torchaudio.functional.resample``; all are
logged. Corrupt, empty, NaN/inf-valued and over-long
files raise a one-line :class:`AudioError` naming the file. Fixed-length segmentation follows
seed 003 (Koerich et al., IJCNN 2020): windows with overlap, windows whose energy (mean square) is at
or below a threshold are dropped.
"""
from __future__ import annotations

import logging
import math
import os
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from training.data.errors import AudioError, DataError

log = logging.getLogger(__name__)

Align = Literal["start", "center"]
SILENCE_PEAK = 1e-6
"""A clip whose peak magnitude is below this (under one 24-bit step) counts as silent."""


def safe_relpath(relative: str, root: Path, where: str) -> str:
    """Normalise ``relative`` (a path read from metadata), refusing paths that leave ``root``.

    The check is lexical (``..`` components, absolute paths), so symbolic links inside the root
    are still followed.

    Returns:
        The normalised relative path.

    Raises:
        DataError: naming ``relative`` and ``where`` (the metadata file) if it escapes ``root``.
    """
    norm = os.path.normpath(relative)
    if os.path.isabs(relative) or norm == ".." or norm.startswith(".." + os.sep):
        raise DataError(f"path '{relative}' in {where} escapes the data root {root}")
    return norm


def read_audio(path: Path, sample_rate: int, max_seconds: float | None = None,
               tally: Counter[str] | None = None) -> np.ndarray:
    """Decode one WAV/FLAC/OGG file into a float32 mono waveform at ``sample_rate``.

    Args:
        path: the audio file.
        sample_rate: target rate in Hz; other rates are resampled.
        max_seconds: refuse files longer than this (guards against huge files); ``None`` = no limit.
        tally: optional counter that receives ``"mixdown"``, ``"rescale"`` and ``"resample"``
            counts, so a loader can log one summary line instead of one line per file.

    Returns:
        ``(T,)`` float32 in ``[-1, 1]``: float files peaking above 1 are scaled by their peak
        (logged); resampling overshoot is clipped.

    Raises:
        AudioError: for an unreadable, empty, over-long or non-finite file.
    """
    try:
        info = sf.info(str(path))
        if max_seconds is not None and info.frames > max_seconds * info.samplerate:
            raise AudioError(f"{path}: {info.frames / info.samplerate:.1f} s long, more than "
                             f"max_seconds={max_seconds:g}")
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise AudioError(f"cannot read audio file {path}: {reason}") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty audio file (0 samples)")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    if data.shape[1] > 1:
        log.debug("%s: mixing %d channels down to mono", path, data.shape[1])
        if tally is not None:
            tally["mixdown"] += 1
    wave = data.mean(axis=1, dtype=np.float32)
    peak = float(np.abs(wave).max())
    if peak > 1.0:
        log.debug("%s: float samples peak at %.3g; scaling into [-1, 1]", path, peak)
        if tally is not None:
            tally["rescale"] += 1
        wave = wave / peak
    if rate != sample_rate:
        log.debug("%s: resampling %d Hz -> %d Hz", path, rate, sample_rate)
        if tally is not None:
            tally["resample"] += 1
        wave = AF.resample(torch.from_numpy(wave), rate, sample_rate).numpy()
    return np.clip(wave, -1.0, 1.0)


def is_silent(wave: np.ndarray | torch.Tensor) -> bool:
    """True if every sample's magnitude is below :data:`SILENCE_PEAK`."""
    peak = wave.abs().max() if isinstance(wave, torch.Tensor) else np.abs(wave).max()
    return bool(peak < SILENCE_PEAK)


def fix_length(wave: np.ndarray, length: int, align: Align = "start") -> np.ndarray:
    """Zero-pad or crop a 1-D waveform to ``length`` samples.

    Args:
        wave: ``(T,)`` waveform.
        length: samples to keep.
        align: ``"start"`` keeps the beginning (pads at the end); ``"center"`` keeps the middle
            (pads both sides equally).
    """
    excess = wave.shape[0] - length
    if excess == 0:
        return wave
    if excess > 0:
        start = excess // 2 if align == "center" else 0
        return wave[start:start + length]
    before = (-excess) // 2 if align == "center" else 0
    return np.pad(wave, (before, -excess - before))


def segment(wave: np.ndarray, length: int, overlap: float, min_energy: float) -> list[tuple[int, np.ndarray]]:
    """Cut a waveform into fixed-length windows with overlap (seed 003).

    The hop is ``round(length * (1 - overlap))``; the last window is zero-padded so the tail is
    covered (a 30 s track gives 21 five-second windows at 75 % overlap, as in seed 003). A clip
    shorter than one window gives one padded window. Windows whose energy ``mean(x**2)`` is at or
    below ``min_energy`` are dropped.

    Returns:
        ``(window index, window)`` pairs of the kept windows, each window ``(length,)``; possibly empty.
    """
    if not 0.0 <= overlap < 1.0:
        raise DataError(f"overlap must be in [0, 1), got {overlap}")
    hop = max(1, round(length * (1.0 - overlap)))
    count = 1 + math.ceil(max(0, wave.shape[0] - length) / hop)
    padded = np.pad(wave, (0, (count - 1) * hop + length - wave.shape[0]))
    windows = [(i, padded[i * hop:i * hop + length]) for i in range(count)]
    return [(i, w) for i, w in windows if float(np.mean(np.square(w, dtype=np.float64))) > min_energy]
