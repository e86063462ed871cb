"""Decoded-audio cache (hit, stale, corrupt) and the silent / unreadable file policies."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from training.data import load_clips
from training.data.errors import AudioError

RATE = 8000


def noise(seed: int, seconds: float = 0.2) -> np.ndarray:
    return np.clip(0.2 * np.random.default_rng(seed).standard_normal(round(RATE * seconds)), -1, 1).astype(np.float32)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "data"
    for label in ("a", "b"):
        (base / label).mkdir(parents=True)
        for i in range(3):
            sf.write(base / label / f"{i}.wav", noise(10 * ord(label) + i), RATE, subtype="FLOAT")
    return base


def cfg(root: Path, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"name": "folder", "root": str(root), "sample_rate": RATE, "clip_seconds": 0.2,
            "cache_dir": str(tmp_path / "cache"), **extra}


def cache_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache").glob("folder-*.npz"))


def test_second_load_hits_the_cache(root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = load_clips(cfg(root, tmp_path))
    [path] = cache_files(tmp_path)
    stamp = path.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="training.data.cache"):
        second = load_clips(cfg(root, tmp_path))
    assert "loaded folder from cache" in caplog.text and path.stat().st_mtime_ns == stamp
    assert torch.equal(first.waves, second.waves) and first.names == second.names
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_changed_file_makes_the_cache_stale(root: Path, tmp_path: Path) -> None:
    load_clips(cfg(root, tmp_path))
    new = noise(999, 0.3)
    sf.write(root / "a" / "1.wav", new, RATE, subtype="FLOAT")
    clips = load_clips(cfg(root, tmp_path))
    assert len(cache_files(tmp_path)) == 2
    np.testing.assert_array_equal(clips.waves[clips.names.index("a/1.wav"), 0].numpy(), new[:1600])


def test_other_rate_gets_its_own_cache(root: Path, tmp_path: Path) -> None:
    load_clips(cfg(root, tmp_path))
    clips = load_clips(cfg(root, tmp_path, sample_rate=4000))
    assert clips.waves.shape[-1] == 800 and len(cache_files(tmp_path)) == 2


@pytest.mark.parametrize("garbage", [b"", b"not a zip at all", b"PK\x03\x04" + b"\x00" * 40])
def test_corrupt_cache_is_rebuilt(root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, garbage: bytes) -> None:
    first = load_clips(cfg(root, tmp_path))
    [path] = cache_files(tmp_path)
    path.write_bytes(garbage)
    with caplog.at_level(logging.WARNING, logger="training.data.cache"):
        again = load_clips(cfg(root, tmp_path))
    assert "unreadable" in caplog.text and torch.equal(first.waves, again.waves)
    assert path.stat().st_size > 1000


def test_cache_with_another_key_is_rebuilt(root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    load_clips(cfg(root, tmp_path))
    [path] = cache_files(tmp_path)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["__key__"] = np.array("{}")
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    with caplog.at_level(logging.WARNING, logger="training.data.cache"):
        load_clips(cfg(root, tmp_path))
    assert "other settings" in caplog.text


def test_silent_clips_dropped_kept_or_refused(root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sf.write(root / "b" / "quiet.wav", np.zeros(1600, np.float32), RATE)
    with caplog.at_level(logging.WARNING, logger="training.data"):
        dropped = load_clips(cfg(root, tmp_path))
    assert len(dropped) == 6 and "b/quiet.wav" not in dropped.names and "b/quiet.wav" in caplog.text
    kept = load_clips(cfg(root, tmp_path, silent="keep"))
    assert len(kept) == 7 and kept.waves[kept.names.index("b/quiet.wav")].abs().max() == 0
    with pytest.raises(AudioError, match="b/quiet.wav: silent clip"):
        load_clips(cfg(root, tmp_path, silent="error"))


def test_unreadable_file_is_an_error_or_a_logged_skip(root: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    (root / "a" / "bad.wav").write_bytes(b"RIFF1234WAVEgarbage")
    with pytest.raises(AudioError, match="bad.wav") as err:
        load_clips(cfg(root, tmp_path))
    assert "\n" not in str(err.value)
    with caplog.at_level(logging.WARNING):
        clips = load_clips(cfg(root, tmp_path, unreadable="skip"))
    assert len(clips) == 6 and "a/bad.wav" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_clips(cfg(root, tmp_path, unreadable="skip"))
    assert "skipped 1 unreadable files: a/bad.wav" in caplog.text  # still reported from the cache


def test_over_long_file_is_refused(root: Path, tmp_path: Path) -> None:
    sf.write(root / "a" / "long.wav", noise(5, 2.0), RATE)
    with pytest.raises(AudioError, match="long.wav: 2.0 s long, more than max_seconds=1"):
        load_clips(cfg(root, tmp_path, max_seconds=1.0))


def test_unwritable_cache_dir_still_loads(root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="training.data.cache"):
        clips = load_clips({**cfg(root, tmp_path), "cache_dir": str(blocker / "cache")})
    assert len(clips) == 6 and "could not write cache" in caplog.text
