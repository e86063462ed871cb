"""Atomic checkpoints loaded with ``weights_only=True``.

A checkpoint is a plain dict of tensors and primitives: the victim's ``spec`` (the config that
rebuilds it), its ``state_dict`` (weights and normalisation statistics) and, for resumable
training checkpoints, the optimiser, scheduler, RNG states and history.
"""
from __future__ import annotations

import logging
import os
import secrets
import zipfile
from pathlib import Path
from typing import Any

import torch

from training.files import OutputError, atomic_write, os_reason
from victims.backbone_base import state_mismatch
from victims.victim import Victim, in_preferred_layout, victim_from_spec

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the victim (one line)."""


def save_atomic(obj: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A kill or a write error at any moment leaves either the old checkpoint or the new one, never a
    torn file or a temporary one.

    Raises:
        OutputError: one line naming ``path`` and the reason (full disk, no permission, ...).
    """
    return atomic_write(path, lambda handle: torch.save(obj, handle), "checkpoint")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict with ``weights_only=True``.

    Raises:
        CheckpointError: if the file is missing, torn, or not a checkpoint of this framework.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive whose directory is at its end
        raise CheckpointError(f"cannot read checkpoint {path}: not a PyTorch checkpoint (torch.save's zip archive): "
                              f"{_kind_of(path)}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        if first.startswith("Weights only load failed"):  # torch's advice to unpickle arbitrary code: not ours
            first = "it holds Python objects, not an advaudio checkpoint's tensors (refusing to unpickle code)"
        raise CheckpointError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(ckpt, dict) or "spec" not in ckpt or "model" not in ckpt:
        raise CheckpointError(f"{path} is not a victim checkpoint (no 'spec'/'model' entries)")
    return ckpt


def _kind_of(path: Path) -> str:
    """What a file that is not a zip archive looks like, for the error: empty, another known format, or cut off."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if not head:
        return "the file is empty"
    known = {b"RIFF": "a WAV file", b"fLaC": "a FLAC file", b"OggS": "an Ogg file", b"ID3": "an MP3 file",
             b"\x89HDF": "an HDF5 file (Keras?)", b"\x80\x02": "a legacy pickle (torch < 1.6 or plain pickle)"}
    for magic, kind in known.items():
        if head.startswith(magic):
            return f"it is {kind}"
    if head.startswith(b"PK"):
        return "a zip archive that is cut off (truncated: its directory at the end is missing)"
    return "the file is truncated or of another kind"


def victim_state(victim: Victim) -> dict[str, Any]:
    """The minimal checkpoint that rebuilds ``victim``: its spec and weights."""
    return {"spec": victim.spec, "model": victim.state_dict()}


def publish_victim(finished: str | Path, path: str | Path, victim: Victim) -> Path:
    """Give a finished training its victim file ``path``: a hard link to its finished checkpoint ``finished`` (which
    holds the selected weights :func:`load_victim` reads, so they are written and kept on disk once: a VGG-16's
    537 MB), put in place atomically; where the file system has no hard links, ``victim``'s weights are saved anew.
    Every checkpoint write replaces its file (:func:`save_atomic`), so the two names never see each other's later
    versions.

    Raises:
        OutputError: one line naming ``path`` and the reason.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.link")
    try:
        os.link(finished, tmp)
    except OSError:
        return save_atomic(victim_state(victim), path)
    try:
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write checkpoint {path}: {os_reason(err)}") from None
    return path


def load_state_into(victim: Victim, state: dict[str, Any], source: str | Path, *, assign: bool = False) -> None:
    """``load_state_dict`` with a one-line error naming the mismatch (another architecture or class count);
    ``assign`` makes ``state``'s tensors the module's own (for a module built on the ``meta`` device)."""
    mismatch = state_mismatch(victim.state_dict(), state)
    if mismatch:
        raise CheckpointError(f"checkpoint {source} {mismatch}")
    victim.load_state_dict(state, assign=assign)


def load_victim(path: str | Path, map_location: str | torch.device = "cpu") -> Victim:
    """Rebuild a trained victim from a checkpoint file (eval mode).

    Takes a victim checkpoint (``<key>.victim.pt``) or the training checkpoint of a finished run (which
    holds the same selected weights, logged with their epoch: a grid's victim file is a link to it,
    :func:`publish_victim`). An unfinished run's training checkpoint holds the last epoch's weights, not the
    selected ones, and is refused.

    Raises:
        CheckpointError: if the file cannot be read, is an unfinished training checkpoint, or its
            weights do not fit its spec.
    """
    ckpt = load_checkpoint(path, map_location)
    if "epoch" in ckpt:
        if not ckpt.get("finished", False):
            victim_file = Path(path).name.replace(".train.pt", ".victim.pt")
            raise CheckpointError(
                f"{path} is the training checkpoint of an unfinished run (epoch {ckpt['epoch']}), not a trained "
                f"victim: rerun the training command to finish it, then pass {victim_file}")
        log.info("%s: the selected weights of a finished training (epoch %d of %d)", path,
                 ckpt.get("best_epoch", ckpt["epoch"]), ckpt["epoch"])
    try:
        victim = _weightless(ckpt["spec"])
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: its spec does not describe a victim (missing or bad entry {err})") from None
    load_state_into(victim, ckpt["model"], path, assign=True)
    if any(t.is_meta for t in (*victim.parameters(), *victim.buffers())):  # state the checkpoint does not hold
        victim = victim_from_spec(ckpt["spec"])
        load_state_into(victim, ckpt["model"], path)
    in_preferred_layout(victim.backbone)  # the layout build_victim gives, whatever the checkpoint's
    return victim.to(map_location).eval()


def _weightless(spec: dict[str, Any]) -> Victim:
    """The victim of ``spec`` with its backbone on the ``meta`` device, to take a checkpoint's weights without
    first drawing random ones (a VGG-16's 134 M); a backbone that cannot be built without storage is built as
    usual."""
    try:
        return victim_from_spec(spec, meta_backbone=True)
    except (RuntimeError, NotImplementedError):  # e.g. a registered backbone that reads a value while it is built
        return victim_from_spec(spec)
