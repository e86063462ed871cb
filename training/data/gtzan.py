"""GTZAN (Tzanetakis & Cook 2002): 1,000 thirty-second tracks, 10 genres, no official folds.

Layout: ``<root>/genres/<genre>/*.wav`` (``genres_original/`` of the Kaggle copy and the original
``.au`` files are accepted too). Each track is its own group, so seed 003's track-level
stratified folds come from ``split.method: kfold``; its 5 s / 75 % windows from ``segment``.
"""
from __future__ import annotations

from training.data.base import DATASETS
from training.data.errors import DataError
from training.data.source import FileTable, check_root

GENRES = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]
EXTENSIONS = (".wav", ".au", ".flac")


@DATASETS.register("gtzan")
def gtzan(root: str) -> FileTable:
    """GTZAN read from ``genres/`` or ``genres_original/`` under ``root``.

    Raises:
        DataError: if neither folder exists, a sub-folder is not a GTZAN genre, or a genre is empty.
    """
    base = check_root(root, "gtzan")
    top = next((base / d for d in ("genres", "genres_original") if (base / d).is_dir()), None)
    if top is None:
        raise DataError(f"gtzan: no genres/ or genres_original/ folder in {base}")
    folders = sorted(p for p in top.iterdir() if p.is_dir())
    unknown = [p.name for p in folders if p.name not in GENRES]
    if unknown:
        raise DataError(f"gtzan: unknown label (genre folder) '{unknown[0]}' in {top}")
    files, labels = [], []
    for folder in folders:
        tracks = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)
        if not tracks:
            raise DataError(f"gtzan: genre folder {folder} holds no audio")
        files += [str(p.relative_to(base)) for p in tracks]
        labels += [GENRES.index(folder.name)] * len(tracks)
    present = sorted(set(labels))
    remap = {old: new for new, old in enumerate(present)}
    return FileTable("gtzan", base, files, [remap[y] for y in labels], list(range(len(files))),
                     [-1] * len(files), [GENRES[i] for i in present])
