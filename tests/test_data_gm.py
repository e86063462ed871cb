"""The embedded General MIDI instrument set: pitch, determinism, distinct classes, caching."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from training.data import load_clips
from training.data.gm_instruments import DEFAULT_CLASSES, RENDER_RATE, Note, render
from victims.registry import ConfigError

RATE = 8000


def cfg(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"name": "gm_instruments", "classes": ["bass_drum", "hi_hat", "flute"], "clips_per_class": 2,
            "sample_rate": RATE, "clip_seconds": 0.25, "cache_dir": str(tmp_path / "cache"), **extra}


def centroid(waves: torch.Tensor, rate: int) -> float:
    spectrum = torch.fft.rfft(waves[:, 0]).abs().pow(2).mean(0)
    freqs = torch.fft.rfftfreq(waves.shape[-1], 1 / rate)
    return float((spectrum * freqs).sum() / spectrum.sum())


@pytest.mark.parametrize("program, pitch", [(73, 81), (0, 69), (40, 69)])
def test_rendered_note_has_the_midi_pitch(program: int, pitch: int) -> None:
    wave = render(Note(program, pitch, 100, 0.0, 0.4, -6.0, False), 0.5)
    assert wave.shape == (RENDER_RATE // 2,)
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.shape[0])))
    freqs = np.fft.rfftfreq(wave.shape[0], 1 / RENDER_RATE)
    band = (freqs > 50) & (freqs < 4000)
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    assert abs(freqs[band][spectrum[band].argmax()] / f0 - 1) < 0.01


def test_tiny_set_shape_levels_and_labels(tmp_path: Path) -> None:
    clips = load_clips(cfg(tmp_path))
    assert clips.waves.shape == (6, 1, 2000) and clips.sample_rate == RATE
    assert clips.class_names == ["bass_drum", "hi_hat", "flute"] and clips.labels.tolist() == [0, 0, 1, 1, 2, 2]
    peaks = clips.waves.abs().amax(dim=(1, 2))
    assert ((peaks >= 10 ** (-20 / 20) - 1e-4) & (peaks <= 10 ** (-1 / 20) + 1e-4)).all()
    assert len(set(clips.groups.tolist())) == 6 and (clips.folds == -1).all()
    assert clips.names[0].startswith("bass_drum/0000_prog0_pitch3")


def test_deterministic_for_a_seed_and_varies_with_it(tmp_path: Path) -> None:
    a = load_clips(cfg(tmp_path / "a"))
    b = load_clips(cfg(tmp_path / "b"))
    c = load_clips(cfg(tmp_path / "c", seed=1))
    assert torch.equal(a.waves, b.waves) and a.names == b.names
    assert not torch.equal(a.waves, c.waves)
    assert not torch.equal(a.waves[0], a.waves[1])  # clips of one class differ


def test_adding_a_class_leaves_the_others_unchanged(tmp_path: Path) -> None:
    alone = load_clips(cfg(tmp_path, classes=["flute"]))
    more = load_clips(cfg(tmp_path, classes=["piano", "flute"]))
    assert torch.equal(alone.waves, more.waves[more.labels == 1])


def test_classes_sound_different(tmp_path: Path) -> None:
    clips = load_clips(cfg(tmp_path, classes=["bass_drum", "hi_hat", "bass_guitar", "glockenspiel"],
                           clips_per_class=3, sample_rate=16000))
    c = [centroid(clips.waves[clips.labels == k], 16000) for k in range(4)]
    assert c[1] > 3 * c[0]  # hi-hat (channel 10) is far brighter than the bass drum
    assert c[3] > 3 * c[2]  # glockenspiel is far brighter than the bass guitar


def test_second_call_hits_the_cache(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = load_clips(cfg(tmp_path))
    [path] = list((tmp_path / "cache").glob("gm_instruments-*.npz"))
    stamp = path.stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        second = load_clips(cfg(tmp_path))
    assert "loaded gm_instruments from cache" in caplog.text and "rendering" not in caplog.text
    assert path.stat().st_mtime_ns == stamp and torch.equal(first.waves, second.waves)


def test_corrupt_cache_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = load_clips(cfg(tmp_path))
    [path] = list((tmp_path / "cache").glob("gm_instruments-*.npz"))
    path.write_bytes(path.read_bytes()[:200])
    with caplog.at_level(logging.INFO):
        again = load_clips(cfg(tmp_path))
    assert "unreadable" in caplog.text and "rendering" in caplog.text
    assert torch.equal(first.waves, again.waves)


def test_bad_class_names_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown instrument 'gong'") as err:
        load_clips(cfg(tmp_path, classes=["gong"]))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="distinct"):
        load_clips(cfg(tmp_path, classes=["flute", "flute"]))


def test_default_has_twelve_seed_000_style_classes() -> None:
    assert len(DEFAULT_CLASSES) == 12
    assert {"accordion", "acoustic_guitar", "bass_drum", "bass_guitar", "electric_guitar", "glockenspiel",
            "harmonica", "hi_hat", "marimba_xylophone", "voice"} <= set(DEFAULT_CLASSES)


def test_longer_notes_are_cut_into_overlapping_windows(tmp_path: Path) -> None:
    """note_seconds 0.5 with 0.25 s windows at 75 % overlap: up to 5 windows per note (seed 003's
    segmentation), near-silent tails dropped, every window of a note in its group."""
    clips = load_clips(cfg(tmp_path, note_seconds=0.5, segment=True, overlap=0.75))
    per_group = torch.bincount(clips.groups)
    assert clips.waves.shape[1:] == (1, 2000) and len(per_group) == 6
    assert (per_group >= 1).all() and (per_group <= 5).all() and per_group.sum() > 6
    assert clips.names[0].endswith("#0")
    with pytest.raises(ConfigError, match="note_seconds"):
        load_clips(cfg(tmp_path, note_seconds=0.0))
