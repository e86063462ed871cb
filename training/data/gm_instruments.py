"""The embedded default data set: isolated instrument notes rendered from a General MIDI soundfont.

Each clip is one note of one instrument, written as MIDI with ``pretty_midi`` and rendered by
``midirenderer`` with the ``TimGM6mb.sf2`` soundfont that ``pretty_midi`` ships (real instrument
samples), at 48 kHz, then mixed to mono, resampled, peak-normalised to a random level. The classes
follow seed 000's twelve (Prinz & Flexer, "End-to-end adversarial white box attacks on music
instrument classification") where General MIDI has them (no gong; one voice class), plus piano and
violin, and the rest of seed 001's targeted-attack classes (snare drum, clarinet, oboe; Sec. 3.2).
Pitch (per-instrument range), velocity, onset, duration, level and program variant are drawn from a
seeded generator per class, so the set is deterministic and adding classes does not change the others.
The rendered set is cached (see :mod:`training.data.cache`).
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import midirenderer
import numpy as np
import pretty_midi
import soundfile as sf
import torch
import torchaudio.functional as AF

from training.data.base import DATASETS
from training.data.cache import cached
from training.data.errors import DataError
from training.data.source import Decoded, DecodeSpec
from victims.registry import ConfigError

log = logging.getLogger(__name__)

RENDER_RATE = 48_000
VERSION = 1


@dataclass(frozen=True)
class Instrument:
    """General MIDI programs (0-based) or, for drums, channel-10 note numbers, and a pitch range."""

    programs: tuple[int, ...] = ()
    low: int = 60
    high: int = 72
    drum_notes: tuple[int, ...] = ()


INSTRUMENTS: dict[str, Instrument] = {
    "accordion": Instrument((21, 23), 48, 79),
    "acoustic_guitar": Instrument((24, 25), 40, 76),
    "bass_drum": Instrument(drum_notes=(35, 36)),
    "bass_guitar": Instrument((32, 33, 34), 28, 55),
    "electric_guitar": Instrument((26, 27, 29), 40, 79),
    "glockenspiel": Instrument((9,), 72, 96),
    "harmonica": Instrument((22,), 60, 84),
    "hi_hat": Instrument(drum_notes=(42, 44, 46)),
    "marimba_xylophone": Instrument((12, 13), 48, 84),
    "voice": Instrument((52, 53), 48, 76),
    "piano": Instrument((0, 1), 36, 96),
    "violin": Instrument((40,), 55, 91),
    "cello": Instrument((42,), 36, 72),
    "flute": Instrument((73,), 60, 96),
    "trumpet": Instrument((56,), 54, 82),
    "snare_drum": Instrument(drum_notes=(38, 40)),
    "clarinet": Instrument((71,), 50, 89),
    "oboe": Instrument((68,), 58, 91),
}
DEFAULT_CLASSES = list(INSTRUMENTS)[:12]


@lru_cache(maxsize=1)
def soundfont() -> bytes:
    """The bytes of ``TimGM6mb.sf2`` from the installed ``pretty_midi`` package."""
    path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if not path.is_file():
        raise DataError(f"gm_instruments: soundfont not found at {path} (reinstall pretty_midi)")
    return path.read_bytes()


@dataclass(frozen=True)
class Note:
    """One rendered clip's parameters."""

    program: int
    pitch: int
    velocity: int
    onset: float
    duration: float
    level_db: float
    is_drum: bool


def draw_notes(instrument: Instrument, count: int, seconds: float, rng: np.random.Generator) -> list[Note]:
    """Random notes of one instrument: pitch in its range, velocity 40-127, onset 0-50 ms,
    duration 15-80 % of the clip, peak level -20 to -1 dBFS."""
    drum = bool(instrument.drum_notes)
    notes = []
    for _ in range(count):
        program = 0 if drum else int(rng.choice(instrument.programs))
        pitch = int(rng.choice(instrument.drum_notes)) if drum else int(rng.integers(instrument.low, instrument.high + 1))
        notes.append(Note(program, pitch, int(rng.integers(40, 128)), float(rng.uniform(0.0, 0.05)),
                          float(rng.uniform(0.15, 0.8) * seconds), float(rng.uniform(-20.0, -1.0)), drum))
    return notes


def render(note: Note, seconds: float) -> np.ndarray:
    """Render one note to a ``(round(seconds * 48000),)`` float32 mono waveform at 48 kHz."""
    midi = pretty_midi.PrettyMIDI()
    track = pretty_midi.Instrument(program=note.program, is_drum=note.is_drum)
    track.notes.append(pretty_midi.Note(note.velocity, note.pitch, note.onset, note.onset + note.duration))
    track.control_changes.append(pretty_midi.ControlChange(110, 0, seconds))  # keeps the release tail
    midi.instruments.append(track)
    buffer = io.BytesIO()
    midi.write(buffer)
    data, rate = sf.read(io.BytesIO(midirenderer.render_wave_from(soundfont(), buffer.getvalue())),
                         dtype="float32", always_2d=True)
    if rate != RENDER_RATE:
        raise DataError(f"gm_instruments: midirenderer returned {rate} Hz, expected {RENDER_RATE}")
    wave = data.mean(axis=1)
    length = round(seconds * RENDER_RATE)
    return np.pad(wave, (0, max(0, length - wave.shape[0])))[:length]


@dataclass
class GMInstruments:
    """Source of rendered instrument notes (see the module docstring).

    Args:
        classes: instrument names from :data:`INSTRUMENTS`; ``None`` = the default twelve.
        clips_per_class: notes rendered per class.
        seed: base seed; an instrument draws from ``default_rng([seed, its index in INSTRUMENTS])``.
        note_seconds: length of each rendered recording; ``None`` = the clip length. Longer recordings are
            cut into several overlapping windows with ``segment: true`` (seed 003's segmentation).
    """

    classes: list[str]
    clips_per_class: int
    seed: int
    note_seconds: float | None = None

    def decode(self, spec: DecodeSpec) -> Decoded:
        """Render (or load from the cache) ``clips_per_class`` recordings of ``note_seconds`` (default
        ``spec.clip_seconds``) per class."""
        key = {"version": VERSION, "classes": self.classes, "clips_per_class": self.clips_per_class,
               "seed": self.seed, "seconds": self._seconds(spec), "rate": spec.sample_rate,
               "soundfont_bytes": len(soundfont())}
        return Decoded.from_arrays(cached(spec.cache_dir, "gm_instruments", key, lambda: self._render(spec).to_arrays()))

    def _seconds(self, spec: DecodeSpec) -> float:
        return float(self.note_seconds) if self.note_seconds is not None else spec.clip_seconds

    def _render(self, spec: DecodeSpec) -> Decoded:
        seconds = self._seconds(spec)
        log.info("rendering gm_instruments: %d classes x %d clips of %.2f s at %d Hz", len(self.classes),
                 self.clips_per_class, seconds, spec.sample_rate)
        waves, labels, names, levels = [], [], [], []
        for label, name in enumerate(self.classes):
            rng = np.random.default_rng([self.seed, list(INSTRUMENTS).index(name)])
            for i, note in enumerate(draw_notes(INSTRUMENTS[name], self.clips_per_class, seconds, rng)):
                wave = render(note, seconds)
                if not np.abs(wave).max() > 0:
                    raise DataError(f"gm_instruments: program {note.program} pitch {note.pitch} rendered silence")
                waves.append(wave)
                labels.append(label)
                levels.append(note.level_db)
                names.append(f"{name}/{i:04d}_prog{note.program}_pitch{note.pitch}_vel{note.velocity}.wav")
        batch = AF.resample(torch.from_numpy(np.stack(waves)), RENDER_RATE, spec.sample_rate)
        peak = batch.abs().amax(dim=1, keepdim=True)
        batch = batch / peak * torch.pow(10.0, torch.tensor(levels).unsqueeze(1) / 20)
        count = len(labels)
        return Decoded(list(batch.numpy().astype(np.float32)), np.array(labels, np.int64),
                       np.arange(count, dtype=np.int64), np.full(count, -1, np.int64), names, list(self.classes))


@DATASETS.register("gm_instruments")
def gm_instruments(classes: list[str] | None = None, clips_per_class: int = 50, seed: int = 0,
                   note_seconds: float | None = None) -> GMInstruments:
    """The embedded General MIDI instrument-note set (registry entry; see :class:`GMInstruments`).

    Raises:
        ConfigError: for an unknown or repeated instrument name, a non-positive clip count or note length.
    """
    names = list(classes) if classes is not None else list(DEFAULT_CLASSES)
    unknown = [n for n in names if n not in INSTRUMENTS]
    if unknown:
        raise ConfigError(f"gm_instruments: unknown instrument '{unknown[0]}'; known: {', '.join(INSTRUMENTS)}")
    if len(set(names)) != len(names) or clips_per_class < 1:
        raise ConfigError("gm_instruments: classes must be distinct and clips_per_class >= 1")
    if note_seconds is not None and not note_seconds > 0:
        raise ConfigError(f"gm_instruments: note_seconds must be positive or null, got {note_seconds}")
    return GMInstruments(names, clips_per_class, seed, note_seconds)
