"""FSDKaggle2019's single-label instrument subset, as used by seed 000 (Prinz & Flexer).

Layout: ``<root>/train_curated.csv`` (``fname,labels``; labels comma-separated) and
``<root>/FSDKaggle2019.audio_train_curated/<fname>``. A clip is kept when its label set is exactly
one of the instrument labels (799 clips for the default twelve). No official folds: seed 000 shuffles
and holds out the last 25 %, i.e. ``split.method: fractions``.
"""
from __future__ import annotations

from training.data.audio import safe_relpath
from training.data.base import DATASETS
from training.data.errors import DataError
from training.data.source import FileTable, check_root, read_csv

INSTRUMENTS = ["Accordion", "Acoustic_guitar", "Bass_drum", "Bass_guitar", "Electric_guitar", "Female_singing",
               "Glockenspiel", "Gong", "Harmonica", "Hi-hat", "Male_singing", "Marimba_and_xylophone"]
AUDIO_DIR = "FSDKaggle2019.audio_train_curated"


@DATASETS.register("fsdkaggle2019")
def fsdkaggle2019(root: str, labels: list[str] | None = None) -> FileTable:
    """Single-label clips of the curated FSDKaggle2019 training set.

    Args:
        root: folder holding ``train_curated.csv`` and the audio folder.
        labels: labels to keep (class order); ``None`` = seed 000's twelve instruments.

    Raises:
        DataError: for a missing column, a requested label that occurs nowhere in the CSV, or a file
            name escaping the audio folder.
    """
    base = check_root(root, "fsdkaggle2019")
    classes = list(labels) if labels is not None else list(INSTRUMENTS)
    csv_path = base / "train_curated.csv"
    rows = read_csv(csv_path, ["fname", "labels"])
    seen = {name.strip() for row in rows for name in row["labels"].split(",")}
    absent = [c for c in classes if c not in seen]
    if absent:
        raise DataError(f"{csv_path}: unknown label '{absent[0]}' (it occurs in no row)")
    files, ys = [], []
    for row in rows:
        tags = [t.strip() for t in row["labels"].split(",") if t.strip()]
        if len(tags) == 1 and tags[0] in classes:
            files.append(f"{AUDIO_DIR}/{safe_relpath(row['fname'], base / AUDIO_DIR, str(csv_path))}")
            ys.append(classes.index(tags[0]))
    return FileTable("fsdkaggle2019", base, files, ys, list(range(len(files))), [-1] * len(files), classes)
