"""Free Spoken Digit Dataset (Jakobovski et al.): 3,000 recordings of digits by 6 speakers, 8 kHz.

Layout: ``<root>/recordings/{digit}_{speaker}_{index}.wav``. The official split puts indices 0-4 in
the test set and 5-49 in the training set; here that is fold 0 (test) and fold 1 (train), so
``split: {method: official, test_fold: 0}`` reproduces it. Each recording is its own group.
"""
from __future__ import annotations

import re

from training.data.base import DATASETS
from training.data.errors import DataError
from training.data.source import FileTable, check_root

PATTERN = re.compile(r"^(\d+)_([A-Za-z0-9-]+)_(\d+)\.wav$")
TEST_INDICES = range(0, 5)


@DATASETS.register("fsdd")
def fsdd(root: str) -> FileTable:
    """FSDD read from ``<root>/recordings``.

    Raises:
        DataError: if the folder is missing or empty, or a WAV name does not follow
            ``{digit}_{speaker}_{index}.wav`` with a digit 0-9.
    """
    folder = check_root(root, "fsdd") / "recordings"
    if not folder.is_dir():
        raise DataError(f"fsdd: no recordings/ folder in {folder.parent}")
    files, labels, folds = [], [], []
    for path in sorted(folder.glob("*.wav")):
        match = PATTERN.match(path.name)
        if match is None or not 0 <= int(match.group(1)) <= 9:
            raise DataError(f"fsdd: unknown label in file name {path.name} (expected {{digit}}_{{speaker}}_{{index}}.wav)")
        files.append(f"recordings/{path.name}")
        labels.append(int(match.group(1)))
        folds.append(0 if int(match.group(3)) in TEST_INDICES else 1)
    if not files:
        raise DataError(f"fsdd: no WAV files in {folder}")
    return FileTable("fsdd", folder.parent, files, labels, list(range(len(files))), folds,
                     [str(d) for d in range(10)])
