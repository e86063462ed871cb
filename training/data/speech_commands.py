"""Speech Commands (Warden 2018, "Speech Commands: a dataset for limited-vocabulary speech recognition"): one-second
utterances of 35 words (v0.02; 30 in v0.01) by 2,618 speakers, 16 kHz.

Layout: ``<root>/<word>/<speaker>_nohash_<n>.wav`` with ``<root>/testing_list.txt`` and
``<root>/validation_list.txt`` naming the test and validation files (``<word>/<file>``, one per line; the release's
hash of the speaker id keeps each speaker on one side). Folders whose name starts with ``_`` (``_background_noise_``)
hold no words and are skipped. Here the test list is fold 0, the validation list fold 1 and every other file fold 2,
so ``split: {method: official, test_fold: 0, val_fold: 1}`` reproduces the release's split; the speaker is the group.
The classes are the word folders in sorted order (the full-vocabulary task, as torchaudio's ``SPEECHCOMMANDS`` labels
it), or the ``words`` given.
"""
from __future__ import annotations

from pathlib import Path

from training.data.base import DATASETS
from training.data.errors import DataError
from training.data.source import FileTable, check_root, group_ids

LISTS = {"testing_list.txt": 0, "validation_list.txt": 1}
"""The release's list files and the fold of the files each names; every other file is fold 2 (training)."""
TRAIN_FOLD = 2
SPEAKER_MARK = "_nohash_"
WORDS_V2 = ["backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four", "go", "happy",
            "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven", "sheila", "six",
            "stop", "three", "tree", "two", "up", "visual", "wow", "yes", "zero"]
"""The 35 words of release v0.02, sorted (the classes of a full copy; v0.01 lacks five of them)."""


@DATASETS.register("speech_commands")
def speech_commands(root: str, words: list[str] | None = None) -> FileTable:
    """Speech Commands read from its release layout.

    Args:
        root: folder holding the word folders and the two list files (e.g. ``data/speech_commands_v0.02``).
        words: the words to keep, in class order; ``None`` keeps every word folder, sorted.

    Raises:
        DataError: for a missing list file, a listed file that is not there, a word without a folder, no word
            folder at all, or a file name without ``_nohash_`` (its speaker unknown).
    """
    base = check_root(root, "speech_commands")
    found = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("_"))
    classes = list(words) if words is not None else found
    missing = [w for w in classes if w not in found]
    if missing:
        raise DataError(f"speech_commands: no folder for word(s) {', '.join(missing)} in {base}")
    if not classes:
        raise DataError(f"speech_commands: no word folders in {base}")
    folds = _listed_folds(base, set(classes))
    files, labels, speakers, file_folds = [], [], [], []
    for label, word in enumerate(classes):
        for path in sorted((base / word).glob("*.wav")):
            if SPEAKER_MARK not in path.name:
                raise DataError(f"speech_commands: {word}/{path.name} does not name its speaker "
                                f"(expected <speaker>{SPEAKER_MARK}<n>.wav)")
            rel = f"{word}/{path.name}"
            files.append(rel)
            labels.append(label)
            speakers.append(path.name.split(SPEAKER_MARK)[0])
            file_folds.append(folds.pop(rel, TRAIN_FOLD))
    if folds:
        rel, _ = next(iter(folds.items()))
        raise DataError(f"speech_commands: {len(folds)} listed file(s) not found under {base}, e.g. {rel}")
    return FileTable("speech_commands", base, files, labels, group_ids(speakers), file_folds, classes)


def _listed_folds(base: Path, words: set[str]) -> dict[str, int]:
    """``<word>/<file>`` -> fold for every file the list files name under one of ``words``."""
    out: dict[str, int] = {}
    for name, fold in LISTS.items():
        path = base / name
        if not path.is_file():
            raise DataError(f"speech_commands: {name} not found in {base} (the release's split)")
        for line in path.read_text(encoding="utf-8").splitlines():
            rel = line.strip()
            if rel and rel.split("/")[0] in words:
                out[rel] = fold
    return out
