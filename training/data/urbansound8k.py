"""UrbanSound8K (Salamon et al. 2014): 8,732 urban sound slices (<= 4 s), 10 classes, 10 folds.

Layout: ``<root>/metadata/UrbanSound8K.csv``
(``slice_file_name,fsID,start,end,salience,fold,classID,class``) and
``<root>/audio/fold<N>/<slice_file_name>``. Slices of one Freesound recording share ``fsID``, which
is the group id. Used by seed 004 (at 8 kHz for the CWT).
"""
from __future__ import annotations

from training.data.audio import safe_relpath
from training.data.base import DATASETS
from training.data.errors import DataError
from training.data.source import FileTable, check_root, group_ids, int_field, read_csv

CLASSES = ["air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling", "engine_idling",
           "gun_shot", "jackhammer", "siren", "street_music"]
COLUMNS = ["slice_file_name", "fsID", "fold", "classID", "class"]


@DATASETS.register("urbansound8k")
def urbansound8k(root: str) -> FileTable:
    """UrbanSound8K read from its release layout.

    Args:
        root: folder holding ``metadata/`` and ``audio/`` (e.g. ``data/UrbanSound8K``).

    Raises:
        DataError: for a missing column, an unknown ``classID``/``class`` pair, a fold outside 1-10
            or a file name escaping its fold folder.
    """
    base = check_root(root, "urbansound8k")
    csv_path = base / "metadata" / "UrbanSound8K.csv"
    files, labels, folds, sources = [], [], [], []
    for line, row in enumerate(read_csv(csv_path, COLUMNS), start=2):
        label, fold = int_field(row, "classID", csv_path, line), int_field(row, "fold", csv_path, line)
        if not 0 <= label < len(CLASSES) or CLASSES[label] != row["class"]:
            raise DataError(f"{csv_path}:{line}: unknown label classID={label} class='{row['class']}'")
        if not 1 <= fold <= 10:
            raise DataError(f"{csv_path}:{line}: fold {fold} outside 1-10")
        folder = f"audio/fold{fold}"
        files.append(f"{folder}/{safe_relpath(row['slice_file_name'], base / folder, str(csv_path))}")
        labels.append(label)
        folds.append(fold)
        sources.append(row["fsID"])
    return FileTable("urbansound8k", base, files, labels, group_ids(sources), folds, list(CLASSES))
