"""Audio decoding, fixed-length cutting and every bad-input case of training/data/audio.py."""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.data.audio import fix_length, is_silent, read_audio, safe_relpath, segment
from training.data.errors import AudioError, DataError
from user_errors import one_line


def tone(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(round(rate * seconds)) / rate)).astype(np.float32)


def peak_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.shape[0])))
    return float(np.fft.rfftfreq(wave.shape[0], 1 / rate)[spectrum.argmax()])


def test_mono_file_is_read_unchanged(tmp_path: Path) -> None:
    wave = tone(440, 8000, 0.25)
    sf.write(tmp_path / "a.wav", wave, 8000, subtype="FLOAT")
    out = read_audio(tmp_path / "a.wav", 8000)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, wave)


def test_flac_is_read(tmp_path: Path) -> None:
    wave = tone(300, 8000, 0.2)
    sf.write(tmp_path / "a.flac", wave, 8000)
    np.testing.assert_allclose(read_audio(tmp_path / "a.flac", 8000), wave, atol=1e-4)


def test_stereo_is_mixed_down_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    left, right = tone(440, 8000, 0.1), tone(1000, 8000, 0.1, 0.2)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 8000, subtype="FLOAT")
    tally: Counter[str] = Counter()
    with caplog.at_level(logging.DEBUG, logger="training.data.audio"):
        out = read_audio(tmp_path / "s.wav", 8000, tally=tally)
    np.testing.assert_allclose(out, (left + right) / 2, atol=1e-7)
    assert tally["mixdown"] == 1 and "mixing 2 channels" in caplog.text


def test_float_file_above_full_scale_is_scaled_not_clipped(tmp_path: Path) -> None:
    wave = tone(440, 8000, 0.1, amp=2.5)
    sf.write(tmp_path / "loud.wav", wave, 8000, subtype="FLOAT")
    tally: Counter[str] = Counter()
    out = read_audio(tmp_path / "loud.wav", 8000, tally=tally)
    np.testing.assert_allclose(out, wave / np.abs(wave).max(), rtol=1e-6)
    assert tally["rescale"] == 1


def test_wrong_rate_is_resampled_keeping_pitch(tmp_path: Path) -> None:
    sf.write(tmp_path / "r.wav", tone(440, 44100, 0.5), 44100, subtype="FLOAT")
    tally: Counter[str] = Counter()
    out = read_audio(tmp_path / "r.wav", 16000, tally=tally)
    assert out.shape == (8000,) and tally["resample"] == 1
    assert abs(peak_hz(out, 16000) - 440) <= 2.0
    assert np.abs(out).max() <= 1.0


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00\x00\x00WAVEjunk", bytes(range(256)) * 4])
def test_corrupt_file_names_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError) as err:
        read_audio(path, 8000)
    assert str(path) in one_line(err)


def test_missing_file_is_an_audio_error(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="nothere.wav"):
        read_audio(tmp_path / "nothere.wav", 8000)


def test_empty_audio_is_rejected(tmp_path: Path) -> None:
    sf.write(tmp_path / "e.wav", np.zeros(0, np.float32), 8000)
    with pytest.raises(AudioError) as err:
        read_audio(tmp_path / "e.wav", 8000)
    assert "empty" in one_line(err) and "e.wav" in str(err.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples_are_rejected(tmp_path: Path, bad: float) -> None:
    wave = tone(440, 8000, 0.1)
    wave[10] = bad
    sf.write(tmp_path / "n.wav", wave, 8000, subtype="FLOAT")
    with pytest.raises(AudioError) as err:
        read_audio(tmp_path / "n.wav", 8000)
    assert "NaN" in one_line(err) and "n.wav" in str(err.value)


def test_huge_file_is_refused_before_decoding(tmp_path: Path) -> None:
    sf.write(tmp_path / "long.wav", np.zeros(8000 * 3, np.float32), 8000)
    with pytest.raises(AudioError) as err:
        read_audio(tmp_path / "long.wav", 8000, max_seconds=2.0)
    assert "max_seconds=2" in one_line(err) and "long.wav" in str(err.value)
    assert read_audio(tmp_path / "long.wav", 8000, max_seconds=3.0).shape == (24000,)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "a/../../x.wav", ".."])
def test_paths_escaping_the_root_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(DataError) as err:
        safe_relpath(bad, tmp_path, "meta.csv")
    assert bad in one_line(err) and "meta.csv" in str(err.value)


def test_paths_inside_the_root_are_normalised(tmp_path: Path) -> None:
    assert safe_relpath("a/./b/../c.wav", tmp_path, "m.csv") == "a/c.wav"


def test_silence_detection() -> None:
    assert is_silent(np.zeros(10, np.float32))
    assert not is_silent(np.array([0.0, 1e-4], np.float32))


def test_fix_length_start_and_center() -> None:
    wave = np.arange(1, 7, dtype=np.float32)
    np.testing.assert_array_equal(fix_length(wave, 4), [1, 2, 3, 4])
    np.testing.assert_array_equal(fix_length(wave, 4, "center"), [2, 3, 4, 5])
    np.testing.assert_array_equal(fix_length(wave, 8), [1, 2, 3, 4, 5, 6, 0, 0])
    np.testing.assert_array_equal(fix_length(wave, 8, "center"), [0, 1, 2, 3, 4, 5, 6, 0])


def test_segment_counts_like_seed_003() -> None:
    rate = 100
    windows = segment(tone(7, rate, 30.0), 5 * rate, 0.75, 1e-5)
    assert [k for k, _ in windows] == list(range(21)) and all(w.shape == (500,) for _, w in windows)
    almost = segment(tone(7, rate, 29.9), 5 * rate, 0.75, 1e-5)
    assert len(almost) == 21 and almost[-1][1][-10:].tolist() == [0.0] * 10


def test_segment_windows_are_the_source_samples() -> None:
    wave = np.arange(1, 21, dtype=np.float32) / 20
    windows = segment(wave, 8, 0.5, 0.0)
    np.testing.assert_array_equal(windows[1][1], wave[4:12])
    assert len(windows) == 4


def test_segment_drops_low_energy_windows() -> None:
    wave = np.concatenate([np.zeros(400, np.float32), tone(5, 100, 4.0)])
    windows = segment(wave, 200, 0.0, 1e-5)
    assert [k for k, _ in windows] == [2, 3]  # the two silent leading windows are dropped
    assert all(np.mean(w ** 2) > 1e-5 for _, w in windows)


def test_short_file_gives_one_padded_window() -> None:
    [(index, window)] = segment(np.ones(30, np.float32) * 0.5, 100, 0.75, 1e-5)
    assert index == 0 and window[:30].tolist() == [0.5] * 30 and window[30:].sum() == 0
