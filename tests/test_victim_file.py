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


class _ReadsAValue(torch.nn.Module):
    """A backbone that reads a tensor's value while it is built (impossible on the meta device)."""

    def __init__(self, num_classes: int, input_shape: tuple[int, int]) -> None:
        super().__init__()
        width = int(torch.tensor(input_shape).prod().item())
        self.fc = torch.nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class _KeepsAWindow(_ReadsAValue):
    """A backbone with state a checkpoint does not hold (a non-persistent buffer)."""

    def __init__(self, num_classes: int, input_shape: tuple[int, int]) -> None:
        torch.nn.Module.__init__(self)
        self.fc = torch.nn.Linear(input_shape[0] * input_shape[1], num_classes)
        self.register_buffer("window", torch.hann_window(input_shape[1]), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc((x * self.window).flatten(1))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backbone", ["koerich_cnn2d", "resnet18", "reads_a_value", "keeps_a_window"])
def test_a_loaded_victim_takes_the_checkpoints_weights_without_drawing_random_ones(
        backbone: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``load_victim`` builds the backbone without storage and takes the checkpoint's tensors: the global random
    state is untouched (no initialisation drawn and thrown away), the model is the saved one, in the layout a
    fresh build has; a backbone that cannot be built so, or holds state the checkpoint does not, is built as usual."""
    from victims.backbones import BACKBONES
    from victims.victim import build_victim

    monkeypatch.setitem(BACKBONES._entries, "reads_a_value", _ReadsAValue)
    monkeypatch.setitem(BACKBONES._entries, "keeps_a_window", _KeepsAWindow)
    frontend = {"name": "stft_db", "n_fft": 64, "hop": 32}
    victim = build_victim(frontend, {"backbone": backbone}, ["a", "b", "c"], 8000, 2048).eval()
    path = checkpoints.save_atomic(checkpoints.victim_state(victim), tmp_path / "v.victim.pt")
    waves = torch.randn(2, 1, 2048, generator=torch.Generator().manual_seed(0))
    state = torch.get_rng_state()
    loaded = load_victim(path)
    assert torch.equal(torch.get_rng_state(), state) == (backbone not in ("reads_a_value", "keeps_a_window"))
    assert _same_weights(loaded, victim)
    assert torch.equal(loaded(waves), victim(waves))
    for mine, theirs in zip(loaded.backbone.parameters(), victim.backbone.parameters()):
        assert mine.stride() == theirs.stride()
