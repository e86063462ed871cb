"""Each loader on a small fixture written in its data set's real layout, plus metadata bad input.

Every fixture file is a tone whose frequency encodes its class, so the tests can check that the
decoded audio really belongs to the label it was given.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from training.data import DATASETS, load_clips
from training.data.errors import DataError

RATE = 8000


def tone(label: int, rate: int = RATE, seconds: float = 0.25) -> np.ndarray:
    freq = 200.0 * (label + 1)
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(round(rate * seconds)) / rate)).astype(np.float32)


def peak_label(wave: np.ndarray, rate: int) -> int:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.shape[0])))
    return round(float(np.fft.rfftfreq(wave.shape[0], 1 / rate)[spectrum.argmax()]) / 200.0) - 1


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_wav(path: Path, wave: np.ndarray, rate: int = RATE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, rate)


def cfg(name: str, root: Path, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"name": name, "root": str(root), "sample_rate": RATE, "clip_seconds": 0.25,
            "cache_dir": str(tmp_path / "cache"), **extra}


def assert_tones_match(clips: Any, class_ids: dict[str, int] | None = None) -> None:
    for wave, label in zip(clips.waves[:, 0].numpy(), clips.labels.tolist()):
        expected = label if class_ids is None else class_ids[clips.class_names[label]]
        assert peak_label(wave, clips.sample_rate) == expected


ESC_HEADER = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
ESC_CLASSES = {0: "dog", 1: "rooster", 10: "rain"}


@pytest.fixture
def esc50_root(tmp_path: Path) -> Path:
    root = tmp_path / "ESC-50-master"
    rows = []
    for fold in range(1, 6):
        for target, category in ESC_CLASSES.items():
            for take in "AB":
                name = f"{fold}-{100 + target}-{take}-{target}.wav"
                write_wav(root / "audio" / name, tone(target % 10, 16000, 0.5), 16000)
                rows.append([name, fold, target, category, target != 1, 100 * fold + target, take])
    write_csv(root / "meta" / "esc50.csv", ESC_HEADER, rows)
    return root


def test_esc50_reads_folds_groups_and_resamples(esc50_root: Path, tmp_path: Path) -> None:
    clips = load_clips(cfg("esc50", esc50_root, tmp_path))
    assert len(clips) == 30 and clips.class_names == ["dog", "rooster", "rain"]
    assert sorted(set(clips.folds.tolist())) == [1, 2, 3, 4, 5]
    assert clips.waves.shape == (30, 1, 2000) and clips.sample_rate == RATE
    assert len(set(clips.groups.tolist())) == 15  # two takes of one source file share a group
    assert clips.names[0].startswith("audio/")
    assert_tones_match(clips, {"dog": 0, "rooster": 1, "rain": 0})


def test_esc10_subset_is_relabelled(esc50_root: Path, tmp_path: Path) -> None:
    clips = load_clips(cfg("esc50", esc50_root, tmp_path, esc10=True))
    assert clips.class_names == ["dog", "rain"] and sorted(set(clips.labels.tolist())) == [0, 1]


def test_esc50_missing_column(esc50_root: Path, tmp_path: Path) -> None:
    csv_path = esc50_root / "meta" / "esc50.csv"
    write_csv(csv_path, ["filename", "target", "category", "src_file"], [["a.wav", 0, "dog", 1]])
    with pytest.raises(DataError, match=r"missing column 'fold'") as err:
        load_clips(cfg("esc50", esc50_root, tmp_path))
    assert str(csv_path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("row, message", [
    (["1-1-A-0.wav", 1, 77, "dog", "True", 1, "A"], "unknown label target=77"),
    (["1-1-A-0.wav", 6, 0, "dog", "True", 1, "A"], "fold 6 outside 1-5"),
    (["1-1-A-0.wav", 1, "x", "dog", "True", 1, "A"], "column 'target' is not an integer"),
    (["../../etc/passwd", 1, 0, "dog", "True", 1, "A"], "escapes the data root"),
])
def test_esc50_bad_rows(esc50_root: Path, tmp_path: Path, row: list[Any], message: str) -> None:
    write_csv(esc50_root / "meta" / "esc50.csv", ESC_HEADER, [row])
    with pytest.raises(DataError, match=message) as err:
        load_clips(cfg("esc50", esc50_root, tmp_path))
    assert "esc50.csv" in str(err.value) and "\n" not in str(err.value)


def test_esc50_target_with_two_categories(esc50_root: Path, tmp_path: Path) -> None:
    write_csv(esc50_root / "meta" / "esc50.csv", ESC_HEADER,
              [["1-1-A-0.wav", 1, 0, "dog", "True", 1, "A"], ["1-2-A-0.wav", 1, 0, "cat", "True", 2, "A"]])
    with pytest.raises(DataError, match="target 0 is both 'dog' and 'cat'"):
        load_clips(cfg("esc50", esc50_root, tmp_path))


US_HEADER = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]
US_CLASSES = {0: "air_conditioner", 3: "dog_bark", 6: "gun_shot"}


@pytest.fixture
def us8k_root(tmp_path: Path) -> Path:
    root = tmp_path / "UrbanSound8K"
    rows = []
    for fold in (1, 2, 3):
        for label, name in US_CLASSES.items():
            for part in range(2):
                fname = f"{fold}{label}-{label}-0-{part}.wav"
                write_wav(root / "audio" / f"fold{fold}" / fname, tone(label, 22050, 0.3), 22050)
                rows.append([fname, fold * 10 + label, part, part + 0.3, 1, fold, label, name])
    write_csv(root / "metadata" / "UrbanSound8K.csv", US_HEADER, rows)
    return root


def test_urbansound8k_reads_fold_folders(us8k_root: Path, tmp_path: Path) -> None:
    clips = load_clips(cfg("urbansound8k", us8k_root, tmp_path))
    assert len(clips) == 18 and len(clips.class_names) == 10
    assert sorted(set(clips.folds.tolist())) == [1, 2, 3]
    assert len(set(clips.groups.tolist())) == 9  # slices of one fsID share a group
    assert all(n.startswith(f"audio/fold{f}/") for n, f in zip(clips.names, clips.folds.tolist()))
    assert_tones_match(clips)


@pytest.mark.parametrize("row, message", [
    (["a.wav", 1, 0, 1, 1, 1, 3, "siren"], "unknown label classID=3 class='siren'"),
    (["a.wav", 1, 0, 1, 1, 1, 12, "x"], "unknown label classID=12"),
    (["a.wav", 1, 0, 1, 1, 11, 3, "dog_bark"], "fold 11 outside 1-10"),
    (["../../../secret.wav", 1, 0, 1, 1, 1, 3, "dog_bark"], "escapes the data root"),
])
def test_urbansound8k_bad_rows(us8k_root: Path, tmp_path: Path, row: list[Any], message: str) -> None:
    write_csv(us8k_root / "metadata" / "UrbanSound8K.csv", US_HEADER, [row])
    with pytest.raises(DataError, match=message):
        load_clips(cfg("urbansound8k", us8k_root, tmp_path))


def test_urbansound8k_missing_column(us8k_root: Path, tmp_path: Path) -> None:
    write_csv(us8k_root / "metadata" / "UrbanSound8K.csv", [c for c in US_HEADER if c != "classID"], [])
    with pytest.raises(DataError, match="missing column 'classID'"):
        load_clips(cfg("urbansound8k", us8k_root, tmp_path))


@pytest.mark.parametrize("top", ["genres", "genres_original"])
def test_gtzan_reads_genre_folders(tmp_path: Path, top: str) -> None:
    root = tmp_path / "gtzan"
    for label, genre in [(0, "blues"), (4, "hiphop"), (9, "rock")]:
        for i in range(3):
            write_wav(root / top / genre / f"{genre}.{i:05d}.wav", tone(label % 5, RATE, 0.3))
    sf.write(root / top / "rock" / "rock.00099.au", tone(4, RATE, 0.3), RATE, format="AU")
    clips = load_clips(cfg("gtzan", root, tmp_path))
    assert clips.class_names == ["blues", "hiphop", "rock"] and len(clips) == 10
    assert (clips.folds == -1).all() and len(set(clips.groups.tolist())) == 10
    assert_tones_match(clips, {"blues": 0, "hiphop": 4, "rock": 4})


def test_gtzan_segments_tracks(tmp_path: Path) -> None:
    root = tmp_path / "gtzan"
    for genre, label in [("jazz", 0), ("pop", 1)]:
        for i in range(2):
            write_wav(root / "genres" / genre / f"{genre}.{i:05d}.wav", tone(label, RATE, 3.0))
    clips = load_clips(cfg("gtzan", root, tmp_path, clip_seconds=1.0, segment=True, overlap=0.75))
    assert len(clips) == 4 * 9  # (3 s - 1 s) / 0.25 s + 1 windows per track
    counts = np.bincount(clips.groups.numpy())
    assert counts.tolist() == [9, 9, 9, 9]
    assert clips.names[:2] == ["genres/jazz/jazz.00000.wav#0", "genres/jazz/jazz.00000.wav#1"]


def test_gtzan_unknown_genre_folder(tmp_path: Path) -> None:
    write_wav(tmp_path / "g" / "genres" / "polka" / "polka.00000.wav", tone(0))
    with pytest.raises(DataError, match="unknown label .*'polka'"):
        load_clips(cfg("gtzan", tmp_path / "g", tmp_path))


def test_gtzan_without_genres_folder(tmp_path: Path) -> None:
    (tmp_path / "g").mkdir()
    with pytest.raises(DataError, match="no genres/ or genres_original/"):
        load_clips(cfg("gtzan", tmp_path / "g", tmp_path))


FSD_LABELS = ["Accordion", "Acoustic_guitar", "Bass_drum", "Bass_guitar", "Electric_guitar", "Female_singing",
              "Glockenspiel", "Gong", "Harmonica", "Hi-hat", "Male_singing", "Marimba_and_xylophone"]


@pytest.fixture
def fsd_root(tmp_path: Path) -> Path:
    root = tmp_path / "FSDKaggle2019"
    rows = []
    for i, label in enumerate(FSD_LABELS):
        for j in range(2):
            rows.append([f"{i:02d}{j}.wav", label])
    rows += [["multi.wav", "Accordion,Bark"], ["bark.wav", "Bark"], ["two.wav", "Gong,Hi-hat"]]
    for fname, labels in rows:
        first = labels.split(",")[0]
        write_wav(root / "FSDKaggle2019.audio_train_curated" / fname,
                  tone(FSD_LABELS.index(first) % 8 if first in FSD_LABELS else 0, RATE, 0.4))
    write_csv(root / "train_curated.csv", ["fname", "labels"], rows)
    return root


def test_fsdkaggle2019_keeps_single_label_instruments(fsd_root: Path, tmp_path: Path) -> None:
    clips = load_clips(cfg("fsdkaggle2019", fsd_root, tmp_path))
    assert clips.class_names == FSD_LABELS and len(clips) == 24
    assert not any(n.endswith(("multi.wav", "bark.wav", "two.wav")) for n in clips.names)
    assert_tones_match(clips, {name: i % 8 for i, name in enumerate(FSD_LABELS)})


def test_fsdkaggle2019_label_subset_and_unknown_label(fsd_root: Path, tmp_path: Path) -> None:
    clips = load_clips(cfg("fsdkaggle2019", fsd_root, tmp_path, labels=["Hi-hat", "Gong"]))
    assert clips.class_names == ["Hi-hat", "Gong"] and len(clips) == 4
    with pytest.raises(DataError, match="unknown label 'Accordian'"):
        load_clips(cfg("fsdkaggle2019", fsd_root, tmp_path, labels=["Accordian"]))


def test_fsdkaggle2019_path_escape(fsd_root: Path, tmp_path: Path) -> None:
    write_csv(fsd_root / "train_curated.csv", ["fname", "labels"], [["../../x.wav", "Gong"]])
    with pytest.raises(DataError, match="escapes the data root"):
        load_clips(cfg("fsdkaggle2019", fsd_root, tmp_path, labels=["Gong"]))


def test_fsdd_fixture_official_folds(tmp_path: Path) -> None:
    root = tmp_path / "fsdd"
    for digit in range(10):
        for speaker in ("george", "jackson"):
            for index in (0, 4, 5, 49):
                write_wav(root / "recordings" / f"{digit}_{speaker}_{index}.wav", tone(digit % 5, RATE, 0.2))
    clips = load_clips(cfg("fsdd", root, tmp_path))
    assert len(clips) == 80 and clips.class_names == [str(d) for d in range(10)]
    test_names = {n for n, f in zip(clips.names, clips.folds.tolist()) if f == 0}
    assert len(test_names) == 40 and all(n.rsplit("_", 1)[1] in ("0.wav", "4.wav") for n in test_names)
    assert_tones_match(clips, {str(d): d % 5 for d in range(10)})


def test_fsdd_bad_file_name(tmp_path: Path) -> None:
    write_wav(tmp_path / "fsdd" / "recordings" / "hello.wav", tone(0))
    with pytest.raises(DataError, match="hello.wav"):
        load_clips(cfg("fsdd", tmp_path / "fsdd", tmp_path))


@pytest.fixture
def speech_root(tmp_path: Path) -> Path:
    """Three words by four speakers (two utterances each), the release's two lists naming speakers 0 (test) and 1
    (validation), and its background-noise folder."""
    root = tmp_path / "speech_commands_v0.02"
    lists: dict[str, list[str]] = {"testing_list.txt": [], "validation_list.txt": []}
    for label, word in enumerate(("yes", "no", "up")):
        for speaker in range(4):
            for n in range(2):
                rel = f"{word}/{speaker:08x}_nohash_{n}.wav"
                write_wav(root / rel, tone(label))
                if speaker < 2:
                    lists[("testing_list.txt", "validation_list.txt")[speaker]].append(rel)
    write_wav(root / "_background_noise_" / "white_noise.wav", tone(4))
    for name, rows in lists.items():
        (root / name).write_text("\n".join(rows) + "\n")
    return root


def test_speech_commands_reads_the_release_split_by_speaker(speech_root: Path, tmp_path: Path) -> None:
    clips = load_clips(cfg("speech_commands", speech_root, tmp_path))
    assert clips.class_names == ["no", "up", "yes"] and len(clips) == 24  # sorted words, no background noise
    assert_tones_match(clips, {"yes": 0, "no": 1, "up": 2})
    speaker = [int(n.split("/")[1].split("_")[0], 16) for n in clips.names]
    assert clips.folds.tolist() == [{0: 0, 1: 1}.get(s, 2) for s in speaker]  # test list, validation list, the rest
    assert len(set(clips.groups.tolist())) == 4  # one group per speaker, across words
    assert all((g == h) == (s == t) for g, s in zip(clips.groups.tolist(), speaker)
               for h, t in zip(clips.groups.tolist(), speaker))
    chosen = load_clips(cfg("speech_commands", speech_root, tmp_path, words=["yes", "up"]))
    assert chosen.class_names == ["yes", "up"] and len(chosen) == 16


@pytest.mark.parametrize("change, message", [
    (lambda root: (root / "testing_list.txt").unlink(), "testing_list.txt not found in"),
    (lambda root: (root / "yes" / "00000000_nohash_0.wav").unlink(), "1 listed file.s. not found under .*yes/00000000"),
    (lambda root: write_wav(root / "no" / "hello.wav", tone(1)), "no/hello.wav does not name its speaker"),
])
def test_speech_commands_bad_layouts(speech_root: Path, tmp_path: Path, change: Any, message: str) -> None:
    change(speech_root)
    with pytest.raises(DataError, match=message):
        load_clips(cfg("speech_commands", speech_root, tmp_path))
    with pytest.raises(DataError, match="no folder for word.s. left"):
        load_clips(cfg("speech_commands", speech_root, tmp_path, words=["yes", "left"]))


def test_folder_per_class(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    write_wav(root / "cat" / "a.wav", tone(1))
    write_wav(root / "cat" / "deep" / "b.wav", tone(1))
    write_wav(root / "dog" / "c.flac", tone(3))
    (root / "dog" / "notes.txt").write_text("not audio")
    clips = load_clips(cfg("folder", root, tmp_path))
    assert clips.class_names == ["cat", "dog"] and len(clips) == 3
    assert_tones_match(clips, {"cat": 1, "dog": 3})
    ordered = load_clips(cfg("folder", root, tmp_path, classes=["dog", "cat"]))
    assert ordered.class_names == ["dog", "cat"] and ordered.labels.tolist().count(1) == 2


def test_folder_unknown_and_empty_class(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    write_wav(root / "cat" / "a.wav", tone(1))
    write_wav(root / "bird" / "b.wav", tone(2))
    with pytest.raises(DataError, match="unknown label .*'bird'"):
        load_clips(cfg("folder", root, tmp_path, classes=["cat"]))
    with pytest.raises(DataError, match="class 'dog' has no audio"):
        load_clips(cfg("folder", root, tmp_path, classes=["cat", "bird", "dog"]))


def test_missing_root_and_listed_file(esc50_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data root not found"):
        load_clips(cfg("esc50", tmp_path / "nowhere", tmp_path))
    (esc50_root / "audio" / "1-100-A-0.wav").unlink()
    with pytest.raises(DataError, match="not found: .*1-100-A-0.wav"):
        load_clips(cfg("esc50", esc50_root, tmp_path))


def test_every_loader_is_registered() -> None:
    assert {"esc50", "urbansound8k", "gtzan", "fsdkaggle2019", "fsdd", "folder", "gm_instruments",
            "speech_commands"} <= set(DATASETS.names())
