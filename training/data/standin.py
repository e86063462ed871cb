"""Stand-in data sets for the dry run (``advaudio experiment NAME --dry-run``): a few clips written in a data set's
own on-disk layout, which its real loader reads back. Where the data root is absent the clips are synthetic; where
it exists they are a few of its real recordings (decoded, possibly cut short, and written again).

Each layout is the release's: ESC-50 ``meta/esc50.csv`` (its seven columns) + ``audio/``; UrbanSound8K
``metadata/UrbanSound8K.csv`` + ``audio/fold<N>/``; GTZAN ``genres/<genre>/<genre>.000NN.wav``; FSDKaggle2019
``train_curated.csv`` + ``FSDKaggle2019.audio_train_curated/``; FSDD ``recordings/<digit>_<speaker>_<index>.wav``;
Speech Commands ``<word>/<speaker>_nohash_<n>.wav`` + ``testing_list.txt`` + ``validation_list.txt``; one folder per
class. The classes are the data set's own (names, label ids, official folds), so whatever a config
names (a targeted class, ``dataset.classes``, a test fold) exists. Files are written at the data set's own rate
(ESC-50 44.1 kHz, GTZAN 22,050 Hz, ...), so the loader resamples them as it does the real ones.

Which clips: under the config's split method every split is non-empty. With official folds the first
:data:`FULL_CLASSES` classes get a clip in the test fold and two in other folds (one goes to validation, one to
training) and every other class one clip in the test fold (the class still exists: the model's output layer, a
targeted class and a class-balanced evaluation set are the real ones); with ``kfold`` or ``fractions`` every class
gets one clip per fold (at least three). A synthetic clip of class ``c`` is a harmonic tone at its own pitch
with a little noise, one recording (group) per clip; real clips keep their class and official fold.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import soundfile as sf

from training.data.audio import read_audio
from training.data.fsdkaggle2019 import AUDIO_DIR, INSTRUMENTS
from training.data.gtzan import GENRES
from training.data.source import FileTable
from training.data.speech_commands import LISTS, SPEAKER_MARK, WORDS_V2
from training.data.splits import SplitOptions
from training.data.urbansound8k import CLASSES as URBAN_CLASSES
from victims.registry import ConfigError, to_dataclass

ESC50_CLASSES = [
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    "rain", "sea_waves", "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind", "pouring_water",
    "toilet_flush", "thunderstorm",
    "crying_baby", "sneezing", "clapping", "breathing", "coughing", "footsteps", "laughing", "brushing_teeth",
    "snoring", "drinking_sipping",
    "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks", "can_opening", "washing_machine",
    "vacuum_cleaner", "clock_alarm", "clock_tick", "glass_breaking",
    "helicopter", "chainsaw", "siren", "car_horn", "engine", "train", "church_bells", "airplane", "fireworks",
    "hand_saw"]
"""ESC-50's categories in ``target`` order (Piczak 2015: five groups of ten)."""
ESC10_CLASSES = {"dog", "rooster", "rain", "sea_waves", "crackling_fire", "crying_baby", "sneezing", "clock_tick",
                 "helicopter", "chainsaw"}
FOLDER_CLASSES = ["class_a", "class_b", "class_c"]
"""Classes of a stood-in ``folder`` data set whose config lists none."""
FULL_CLASSES = 3
"""Classes that get a clip in every split of an official split (the others only a test clip)."""


@dataclass(frozen=True)
class Clip:
    """One stand-in recording: its class index (into the data set's class list), official fold and group."""

    label: int
    fold: int
    group: int


@dataclass(frozen=True)
class StandIn:
    """What was written: the data set, its root, class and clip counts, the files' rate and length (``None``: the
    real recordings' own), the layout, and where the clips come from (``synthetic`` or the real root)."""

    dataset: str
    root: Path
    classes: int
    clips: int
    sample_rate: int
    seconds: float | None
    layout: str
    origin: str = "synthetic"

    def describe(self) -> str:
        length = "" if self.seconds is None else f" of {self.seconds:g} s"
        kind = "synthetic clips" if self.origin == "synthetic" else f"real clips (of {self.origin})"
        return (f"{self.dataset}: {self.classes} classes, {self.clips} {kind}{length} at {self.sample_rate} Hz in "
                f"{self.layout}")


Writer = Callable[[Path, list[str], list[Clip], Callable[[Clip], np.ndarray], int, Mapping[str, Any]], None]


def _esc50(root: Path, names: list[str], clips: list[Clip], wave: Callable[[Clip], np.ndarray], rate: int,
           cfg: Mapping[str, Any]) -> None:
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for clip in clips:
        name = f"{clip.fold}-{100000 + clip.group}-A.wav"
        target = ESC50_CLASSES.index(names[clip.label])
        rows.append(f"{name},{clip.fold},{target},{names[clip.label]},{names[clip.label] in ESC10_CLASSES},"
                    f"{100000 + clip.group},A")
        _write(root / "audio" / name, wave(clip), rate)
    _text(root / "meta" / "esc50.csv", rows)


def _urbansound8k(root: Path, names: list[str], clips: list[Clip], wave: Callable[[Clip], np.ndarray], rate: int,
                  cfg: Mapping[str, Any]) -> None:
    rows = ["slice_file_name,fsID,start,end,salience,fold,classID,class"]
    for clip in clips:
        cid = URBAN_CLASSES.index(names[clip.label])
        name = f"{200000 + clip.group}-{cid}-0-0.wav"
        rows.append(f"{name},{200000 + clip.group},0.0,1.0,1,{clip.fold},{cid},{names[clip.label]}")
        _write(root / "audio" / f"fold{clip.fold}" / name, wave(clip), rate)
    _text(root / "metadata" / "UrbanSound8K.csv", rows)


def _gtzan(root: Path, names: list[str], clips: list[Clip], wave: Callable[[Clip], np.ndarray], rate: int,
           cfg: Mapping[str, Any]) -> None:
    for clip in clips:
        _write(root / "genres" / names[clip.label] / f"{names[clip.label]}.{clip.group:05d}.wav", wave(clip), rate)


def _fsdkaggle2019(root: Path, names: list[str], clips: list[Clip], wave: Callable[[Clip], np.ndarray], rate: int,
                   cfg: Mapping[str, Any]) -> None:
    rows = ["fname,labels"]
    for clip in clips:
        name = f"{clip.group:08x}.wav"
        rows.append(f"{name},{names[clip.label]}")
        _write(root / AUDIO_DIR / name, wave(clip), rate)
    _text(root / "train_curated.csv", rows)


def _fsdd(root: Path, names: list[str], clips: list[Clip], wave: Callable[[Clip], np.ndarray], rate: int,
          cfg: Mapping[str, Any]) -> None:
    for clip in clips:  # official rule: indices 0-4 are the test fold (0), the others fold 1
        index = clip.group % 5 if clip.fold == 0 else 5 + clip.group
        _write(root / "recordings" / f"{names[clip.label]}_standin_{index}.wav", wave(clip), rate)


def _speech_commands(root: Path, names: list[str], clips: list[Clip], wave: Callable[[Clip], np.ndarray], rate: int,
                     cfg: Mapping[str, Any]) -> None:
    listed: dict[int, list[str]] = {fold: [] for fold in LISTS.values()}
    for clip in clips:  # fold 0: testing_list.txt, 1: validation_list.txt, 2: training (listed nowhere)
        rel = f"{names[clip.label]}/{clip.group:08x}{SPEAKER_MARK}0.wav"
        listed.get(clip.fold, []).append(rel)
        _write(root / rel, wave(clip), rate)
    for name, fold in LISTS.items():
        _text(root / name, listed[fold])


def _folder(root: Path, names: list[str], clips: list[Clip], wave: Callable[[Clip], np.ndarray], rate: int,
            cfg: Mapping[str, Any]) -> None:
    for clip in clips:
        _write(root / names[clip.label] / f"clip{clip.group:04d}.wav", wave(clip), rate)


LAYOUTS: dict[str, tuple[Writer, str, Callable[[Mapping[str, Any]], list[str]], tuple[int, ...]]] = {
    "esc50": (_esc50, "meta/esc50.csv + audio/", lambda cfg: list(ESC50_CLASSES), (1, 2, 3, 4, 5)),
    "urbansound8k": (_urbansound8k, "metadata/UrbanSound8K.csv + audio/foldN/", lambda cfg: list(URBAN_CLASSES),
                     tuple(range(1, 11))),
    "gtzan": (_gtzan, "genres/<genre>/", lambda cfg: list(GENRES), ()),
    "fsdkaggle2019": (_fsdkaggle2019, f"train_curated.csv + {AUDIO_DIR}/",
                      lambda cfg: list(cfg.get("labels") or INSTRUMENTS), ()),
    "fsdd": (_fsdd, "recordings/<digit>_<speaker>_<index>.wav", lambda cfg: [str(d) for d in range(10)], (0, 1)),
    "speech_commands": (_speech_commands, f"<word>/<speaker>{SPEAKER_MARK}<n>.wav + testing_list.txt + validation_list.txt",
                        lambda cfg: list(cfg.get("words") or WORDS_V2), (0, 1, 2)),
    "folder": (_folder, "<class>/*.wav", lambda cfg: list(cfg.get("classes") or FOLDER_CLASSES), ()),
}
"""Per data set with a ``root``: its writer, layout, class list from its config, and official folds (empty:
none)."""


def has_layout(dataset: str) -> bool:
    """Whether a stand-in can be written for the registered data set ``dataset``."""
    return dataset in LAYOUTS


def write_standin(cfg: Mapping[str, Any], root: str | Path, seconds: float | None,
                  source: FileTable | None = None) -> StandIn:
    """Write a stand-in for the ``dataset`` config ``cfg`` under ``root`` (see the module docstring), at the config's
    ``sample_rate``: synthetic clips of ``seconds`` each, or, given the real data set's file table ``source``, a few
    of its recordings, cut to their first ``seconds`` (``None``: whole).

    Raises:
        ConfigError: for a data set without a layout here (an embedded one needs none).
        AudioError: for a real recording that cannot be decoded.
    """
    name = str(cfg.get("name"))
    if name not in LAYOUTS:
        raise ConfigError(f"no stand-in layout for data set '{name}'; known: {', '.join(LAYOUTS)}")
    writer, layout, class_list, folds = LAYOUTS[name]
    rate = int(cfg.get("sample_rate", 16000))
    split = to_dataclass(SplitOptions, cfg.get("split") or {}, "dataset.split")
    names = list(source.class_names) if source is not None else class_list(cfg)
    clips = plan_clips(len(names), split, folds)
    if source is None:
        length = max(1, round((seconds or 1.0) * rate))

        def wave(clip: Clip) -> np.ndarray:
            return tone(clip.label, len(names), clip.group, length, rate)
    else:
        files = real_files(source, clips, split)
        clips = list(files)

        def wave(clip: Clip) -> np.ndarray:
            data = read_audio(source.root / files[clip], rate)
            return data if seconds is None else data[:max(1, round(seconds * rate))]

    out = Path(root)
    writer(out, names, clips, wave, rate, cfg)
    origin = "synthetic" if source is None else str(source.root)
    return StandIn(name, out, len({c.label for c in clips}), len(clips), rate, seconds if source is None or seconds
                   else None, layout, origin)


def real_files(source: FileTable, planned: list[Clip], split: SplitOptions) -> dict[Clip, str]:
    """A real recording of ``source`` for each planned clip: its class, in the planned fold if it has one there,
    else in the test fold for a test clip and outside it for another; each recording used once. Planned clips no
    recording fits are left out; the clips returned carry the recordings' real folds."""
    free = list(range(len(source.files)))
    chosen: dict[Clip, str] = {}
    for clip in planned:
        def fits(i: int, exact: bool) -> bool:
            if source.labels[i] != clip.label:
                return False
            if clip.fold < 0 or exact:
                return clip.fold < 0 or source.folds[i] == clip.fold
            return (source.folds[i] == split.test_fold) == (clip.fold == split.test_fold)

        pick = next((i for i in free if fits(i, True)), None)
        pick = pick if pick is not None else next((i for i in free if fits(i, False)), None)
        if pick is not None:
            free.remove(pick)
            chosen[Clip(clip.label, source.folds[pick], clip.group)] = source.files[pick]
    return chosen


def plan_clips(num_classes: int, split: SplitOptions, folds: tuple[int, ...]) -> list[Clip]:
    """The clips of a stand-in: every split of ``split`` non-empty (see the module docstring); each clip its own
    recording (group). ``folds`` are the data set's official folds (empty: it has none)."""
    if split.method == "official" and folds:
        others = [f for f in folds if f not in (split.test_fold, split.val_fold)]
        dev = [split.val_fold if split.val_fold is not None else others[0], others[-1]]
        layout = [[split.test_fold, *dev] if c < FULL_CLASSES else [split.test_fold] for c in range(num_classes)]
    else:
        per_class = max(3, split.folds if split.method == "kfold" else 3)
        layout = [[-1] * per_class for _ in range(num_classes)]
    clips = []
    for label, class_folds in enumerate(layout):
        for fold in class_folds:
            clips.append(Clip(label, fold, len(clips)))
    return clips


def tone(label: int, num_classes: int, group: int, length: int, rate: int) -> np.ndarray:
    """Class ``label``'s synthetic recording number ``group``: a decaying tone (three harmonics below Nyquist) at a
    pitch of its own, a random phase and a little noise (seeded by the group), peak 0.5."""
    rng = np.random.default_rng(1000 + group)
    t = np.arange(length) / rate
    top = rate / 2
    f0 = 0.3 * top * (label + 1) / (num_classes + 1)
    x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3) if k * f0 < top)
    x = x * np.exp(-t / max(t[-1], 1e-3)) + 0.01 * rng.standard_normal(length)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def _write(path: Path, wave: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, rate, subtype="PCM_16")


def _text(path: Path, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
