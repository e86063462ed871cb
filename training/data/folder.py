"""A generic folder-per-class data set: ``<root>/<class>/**/<file>.{wav,flac,ogg,au}``.

Every such name is listed, broken symbolic links included, so a file that cannot be read is reported
(or skipped with a log line, ``dataset.unreadable=skip``) instead of silently left out.
"""
from __future__ import annotations

from training.data.base import DATASETS
from training.data.errors import DataError
from training.data.source import FileTable, check_root

EXTENSIONS = (".wav", ".flac", ".ogg", ".au")


@DATASETS.register("folder")
def folder(root: str, classes: list[str] | None = None) -> FileTable:
    """Every audio file below each class folder, labelled by that folder's name.

    Args:
        root: folder whose sub-folders are the classes.
        classes: class names in label order; ``None`` = all sub-folders, sorted. With a list, a
            sub-folder not in it is an error (an unknown label), as is a listed class without audio.

    Raises:
        DataError: naming the unknown or empty class folder.
    """
    base = check_root(root, "folder")
    present = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = list(classes) if classes is not None else present
    unknown = [p for p in present if p not in names]
    if unknown:
        raise DataError(f"folder: unknown label (class folder) '{unknown[0]}' in {base}; classes: {', '.join(names)}")
    files, labels = [], []
    for label, name in enumerate(names):
        found = sorted(p for p in (base / name).rglob("*") if p.suffix.lower() in EXTENSIONS and not p.is_dir())
        if not found:
            raise DataError(f"folder: class '{name}' has no audio under {base / name}")
        files += [str(p.relative_to(base)) for p in found]
        labels += [label] * len(found)
    return FileTable("folder", base, files, labels, list(range(len(files))), [-1] * len(files), names)
