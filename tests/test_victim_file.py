"""A trained model's victim file (``<key>.victim.pt``): its finished training checkpoint under a second name, its
weights written and kept once (a hard link), read back as the trained model; without hard links, a copy."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from defense.pipeline import train_from_config
from tiny import tones
from training import checkpoints
from training.checkpoints import load_victim, publish_victim
from training.data.base import ClipSet, Splits

CFG = {"dataset": {"name": "tones"}, "frontend": {"name": "stft_db", "n_fft": 32, "hop": 16},
       "victim": {"backbone": "koerich_cnn2d", "dense": 8},
       "train": {"epochs": 2, "batch_size": 12, "device": "cpu", "patience": None}, "defense": {"name": "clean"}}


def _splits() -> Splits:
    def clips(n_per_class: int, seed: int) -> ClipSet:
        waves, labels = tones(n_per_class, seed=seed)
        n = len(labels)
        return ClipSet(waves, labels, torch.arange(n), torch.full((n,), -1), ["low", "mid", "high"], 800)

    return Splits(clips(4, 1), clips(2, 2), clips(2, 3))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.timeout(120)
def test_the_victim_file_is_the_finished_checkpoint_written_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    splits = _splits()
    done = train_from_config(CFG, experiment="victim_file", outputs=tmp_path, splits=splits)
    finished = done.checkpoint.with_name(f"{done.key}.train.pt")
    assert done.checkpoint.name == f"{done.key}.victim.pt"
    assert os.path.samefile(done.checkpoint, finished)
    assert not list(done.checkpoint.parent.glob(".*"))  # no temporary name left
    assert _same_weights(load_victim(done.checkpoint), done.result.victim)

    done.checkpoint.unlink()  # a finished run whose victim file is gone gets it back, nothing trained again
    again = train_from_config(CFG, experiment="victim_file", outputs=tmp_path, splits=splits)
    assert again.reused and os.path.samefile(again.checkpoint, finished)
    assert _same_weights(load_victim(again.checkpoint), done.result.victim)

    def no_links(*args: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(checkpoints.os, "link", no_links)  # a file system without hard links (FAT, some shares)
    copy = publish_victim(finished, tmp_path / "copy.victim.pt", done.result.victim)
    assert not os.path.samefile(copy, finished)
    assert _same_weights(load_victim(copy), done.result.victim)
