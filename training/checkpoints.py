"""Atomic checkpoints loaded with ``weights_only=True``.

A checkpoint is a plain dict of tensors and primitives: the victim's ``spec`` (the config that
rebuilds it), its ``state_dict`` (weights and normalisation statistics) and, for resumable
training checkpoints, the optimiser, scheduler, RNG states and history.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from victims.victim import Victim, victim_from_spec


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the victim (one line)."""


def save_atomic(obj: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A kill at any moment leaves either the old checkpoint or the new one, never a torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict with ``weights_only=True``.

    Raises:
        CheckpointError: if the file is missing, torn, or not a checkpoint of this framework.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
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


def victim_state(victim: Victim) -> dict[str, Any]:
    """The minimal checkpoint that rebuilds ``victim``: its spec and weights."""
    return {"spec": victim.spec, "model": victim.state_dict()}


def load_state_into(victim: Victim, state: dict[str, Any], source: str | Path) -> None:
    """``load_state_dict`` with a one-line error naming the mismatch (e.g. another architecture)."""
    own = victim.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        first = (missing or unexpected or shapes)[0]
        raise CheckpointError(
            f"checkpoint {source} does not fit this victim: {len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(shapes)} mis-shaped tensors (first: '{first}')")
    victim.load_state_dict(state)


def load_victim(path: str | Path, map_location: str | torch.device = "cpu") -> Victim:
    """Rebuild a trained victim from a checkpoint file (eval mode).

    Raises:
        CheckpointError: if the file cannot be read or its weights do not fit its spec.
    """
    ckpt = load_checkpoint(path, map_location)
    victim = victim_from_spec(ckpt["spec"])
    load_state_into(victim, ckpt["model"], path)
    return victim.to(map_location).eval()
