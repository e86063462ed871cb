"""Reading audio files into float32 mono waveforms at a target rate, and fixed-length cutting.

The format is read from the file's content, not its name: FLAC data in a file named ``.wav`` (which
real data sets ship) is decoded as FLAC and counted. Multi-channel files are mixed down (mean over
channels), float files peaking above 1 are scaled into ``[-1, 1]`` and other rates are resampled
with ``torchaudio.functional.resample``; all are logged. Missing, zero-length, non-audio, truncated
(a WAV holding less audio than its header declares), empty, NaN/inf-valued and over-long files, and
paths that are no regular file (a folder, a FIFO), raise a one-line :class:`AudioError` naming the
file. Fixed-length segmentation follows seed 003 (Koerich et al., IJCNN 2020): windows with overlap,
windows whose energy (mean square) is at or below a threshold are dropped.
"""
from __future__ import annotations

import logging
import math
import os
import stat
import struct
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from training.data.errors import AudioError, DataError

log = logging.getLogger(__name__)

Align = Literal["start", "center"]
SILENCE_PEAK = 1e-6
"""A clip whose peak magnitude is below this (under one 24-bit step) counts as silent."""
FORMATS = {".wav": {"WAV", "WAVEX", "RF64"}, ".flac": {"FLAC"}, ".ogg": {"OGG"}, ".au": {"AU"},
           ".aif": {"AIFF"}, ".aiff": {"AIFF"}, ".mp3": {"MP3"}}
"""libsndfile formats each file-name extension stands for; another one is decoded and counted as misnamed."""


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
               tally: Counter[str] | None = None, first_seconds: float | None = None) -> np.ndarray:
    """Decode one WAV/FLAC/OGG file into a float32 mono waveform at ``sample_rate``.

    Args:
        path: the audio file.
        sample_rate: target rate in Hz; other rates are resampled.
        max_seconds: refuse files longer than this (guards against huge files); ``None`` = no limit.
        tally: optional counter that receives ``"misnamed"``, ``"mixdown"``, ``"rescale"`` and
            ``"resample"`` counts, so a loader can log one summary line instead of one line per file.
        first_seconds: decode only the file's first this many seconds (a bounded read of a long file,
            logged); the result equals the start of a whole-file decode, except that a float file is
            scaled by the peak of the part read. ``None`` = the whole file.

    Returns:
        ``(T,)`` float32 in ``[-1, 1]``: float files peaking above 1 are scaled by their peak
        (logged); resampling overshoot is clipped.

    Raises:
        AudioError: for a missing, unreadable, truncated, empty, over-long or non-finite file.
    """
    path = Path(path)
    try:
        info = _open_info(path)
        if max_seconds is not None and info.frames > max_seconds * info.samplerate:
            raise AudioError(f"{path}: {info.frames / info.samplerate:.1f} s long, more than "
                             f"max_seconds={max_seconds:g}")
        frames = -1 if first_seconds is None else _frames_for(first_seconds, info.samplerate, sample_rate)
        if 0 <= frames < info.frames:
            log.info("%s: %.1f s long; decoding its first %.2f s", path, info.duration, first_seconds)
        data, rate = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as err:
        raise AudioError(f"cannot read audio file {path}: {_reason(err)}") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty audio file (0 samples)")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    if info.format not in FORMATS.get(path.suffix.lower(), {info.format}):
        log.debug("%s: %s data in a file named %s; decoded as %s", path, info.format, path.suffix, info.format)
        if tally is not None:
            tally["misnamed"] += 1
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
    if first_seconds is not None:
        wave = wave[:round(first_seconds * sample_rate)]
    return np.clip(wave, -1.0, 1.0)


def _reason(err: Exception) -> str:
    """The first line of a decoding error, without libsndfile's "Error opening '<path>': " prefix."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    return first.split("': ", 1)[1] if first.startswith("Error opening '") and "': " in first else first


def _open_info(path: Path) -> Any:
    """``sf.info`` after the checks libsndfile does not make: a regular, non-empty, untruncated file.

    Raises:
        AudioError: naming the file and what is wrong with it.
        OSError, sf.LibsndfileError: as ``os.stat`` and ``sf.info`` raise them.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AudioError(f"audio file not found: {path}") from None
    if not stat.S_ISREG(st.st_mode):
        raise AudioError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    info = sf.info(str(path))
    if info.format in FORMATS[".wav"]:
        short = wav_shortfall(path)
        if short is not None:
            declared, present = short
            raise AudioError(f"{path}: truncated: its header declares {declared} bytes of audio, the file holds "
                             f"{present} ({present / declared:.0%})")
    return info


def wav_shortfall(path: Path) -> tuple[int, int] | None:
    """``(declared, present)`` byte counts of a RIFF/WAVE file's ``data`` chunk if the file ends before
    the declared end (a cut download or copy; libsndfile silently decodes the part present), else ``None``.

    A size of 0 or 0xFFFFFFFF is a streaming writer's "unknown length", not a truncation.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            handle.seek(pos)
            chunk, length = struct.unpack("<4sI", handle.read(8))
            if chunk == b"data":
                present = size - pos - 8
                return (length, present) if 0 < length < 0xFFFFFFFF and length > present else None
            pos += 8 + length + (length & 1)
    return None


def _frames_for(seconds: float, rate: int, sample_rate: int) -> int:
    """Input frames that give the first ``seconds`` at ``sample_rate`` exactly as a whole-file decode does:
    the samples themselves plus a margin beyond the reach of torchaudio's sinc kernel (6 zero crossings,
    ``6 / 0.99 * max(1, rate / sample_rate)`` input frames)."""
    frames = math.ceil(seconds * rate)
    return frames if rate == sample_rate else frames + 8 * math.ceil(rate / sample_rate) + 8


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
