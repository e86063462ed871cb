"""Errors raised on bad data: each message is one line and names the file, column or label."""
from __future__ import annotations


class DataError(ValueError):
    """A data set on disk that cannot be used as it is (missing column, unknown label, bad path)."""


class AudioError(DataError):
    """An audio file that cannot be decoded into a usable waveform (corrupt, empty, NaN, too long)."""
