"""ESC-50 (Piczak 2015): 2,000 five-second environmental clips, 50 classes, 5 official folds.

Layout: ``<root>/meta/esc50.csv`` (``filename,fold,target,category,esc10,src_file,take``) and
``<root>/audio/<filename>``. Clips cut from one Freesound recording share ``src_file``; it is the
group id, so no split puts two takes of one recording on both sides. Used by seed 004.
"""
from __future__ import annotations

from pathlib import Path

from training.data.audio import safe_relpath
from training.data.base import DATASETS
from training.data.errors import DataError
from training.data.source import FileTable, check_root, group_ids, int_field, read_csv

COLUMNS = ["filename", "fold", "target", "category", "src_file"]


@DATASETS.register("esc50")
def esc50(root: str, esc10: bool = False) -> FileTable:
    """ESC-50 read from its release layout.

    Args:
        root: folder holding ``meta/`` and ``audio/`` (e.g. ``data/ESC-50-master``).
        esc10: keep only the ESC-10 subset (rows with ``esc10 == True``), relabelled 0-9.

    Raises:
        DataError: for a missing column, a target outside 0-49, a target with two categories,
            a fold outside 1-5 or a file name escaping ``audio/``.
    """
    base = check_root(root, "esc50")
    csv_path = base / "meta" / "esc50.csv"
    rows = read_csv(csv_path, COLUMNS + (["esc10"] if esc10 else []))
    names: dict[int, str] = {}
    kept = []
    for line, row in enumerate(rows, start=2):
        target, fold = int_field(row, "target", csv_path, line), int_field(row, "fold", csv_path, line)
        if not 0 <= target < 50:
            raise DataError(f"{csv_path}:{line}: unknown label target={target} (ESC-50 has 0-49)")
        if names.setdefault(target, row["category"]) != row["category"]:
            raise DataError(f"{csv_path}:{line}: target {target} is both '{names[target]}' and '{row['category']}'")
        if not 1 <= fold <= 5:
            raise DataError(f"{csv_path}:{line}: fold {fold} outside 1-5")
        if esc10 and row["esc10"].strip().lower() != "true":
            continue
        kept.append((safe_relpath(row["filename"], base / "audio", str(csv_path)), target, fold, row["src_file"]))
    targets = sorted({t for _, t, _, _ in kept})
    index = {t: i for i, t in enumerate(targets)}
    return FileTable("esc10" if esc10 else "esc50", base, [str(Path("audio") / f) for f, _, _, _ in kept],
                     [index[t] for _, t, _, _ in kept], group_ids([s for _, _, _, s in kept]),
                     [fold for _, _, fold, _ in kept], [names[t] for t in targets])
