"""The backbone registry and what every model file shares: the input checks, the upsampling to a minimum size and
the loading of local weights. Model files (:mod:`victims.backbones`, :mod:`victims.seed_models`,
:mod:`victims.wave_models`) register into :data:`BACKBONES` from here; importing :mod:`victims.backbones` registers
them all.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from victims.registry import ConfigError, Registry

log = logging.getLogger(__name__)

BACKBONES: Registry = Registry("backbone")


def check_representation(x: Tensor) -> None:
    """Raise a one-line ValueError unless ``x`` is shaped ``(B, 1, F, frames)``."""
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"backbones take representations shaped (B, 1, F, frames), got {tuple(x.shape)}")


def waveform_input(x: Tensor, num_samples: int, min_samples: int, name: str) -> Tensor:
    """The ``(B, 1, T)`` waveform of a 1D model's ``(B, 1, 1, num_samples)`` input, zero-padded on both sides
    to ``min_samples`` when the model's layers need more samples than a clip has.

    Raises:
        ValueError: for any other input shape (naming the model).
    """
    check_representation(x)
    if x.shape[2] != 1 or x.shape[3] != num_samples:
        raise ValueError(f"{name} was built for inputs of (1, {num_samples}), got {tuple(x.shape[2:])}")
    wave = x[:, :, 0, :]
    short = min_samples - num_samples
    return F.pad(wave, (short // 2, short - short // 2)) if short > 0 else wave


def upsample_to(x: Tensor, min_size: tuple[int, int]) -> Tensor:
    """Bilinearly upsample the axes of ``(B, C, F, frames)`` that are shorter than ``min_size``.

    Each example is resized on its own and the map is differentiable; an input already at least
    ``min_size`` is returned unchanged.
    """
    size = (max(x.shape[2], min_size[0]), max(x.shape[3], min_size[1]))
    if size == tuple(x.shape[2:]):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class MinSize(nn.Module):
    """:func:`upsample_to` ``min_size``, then apply ``net``.

    Args:
        net: the wrapped 1-channel network.
        min_size: smallest ``(F, frames)`` the network accepts.
    """

    def __init__(self, net: nn.Module, min_size: tuple[int, int]) -> None:
        super().__init__()
        self.net = net
        self.min_size = (int(min_size[0]), int(min_size[1]))

    def forward(self, x: Tensor) -> Tensor:
        check_representation(x)
        return self.net(upsample_to(x, self.min_size))


def load_weights(module: nn.Module, checkpoint: str | Path | None, name: str) -> nn.Module:
    """Load a local weights file into ``module`` (no-op for ``None``) and return ``module``.

    Accepts a backbone ``state_dict``, a whole victim's ``state_dict`` (keys ``backbone.*``), a
    victim checkpoint (``{"model": state_dict, ...}``), or the state of the network a
    :class:`MinSize` wraps (e.g. a 1-channel torchvision/timm model's own ``state_dict``).

    Raises:
        ConfigError: one line, if the file is missing or unreadable or its keys/shapes do not
            fit ``module`` (counting missing, unexpected and mis-shaped keys).
    """
    if checkpoint is None:
        return module
    path = Path(checkpoint)
    if not path.is_file():
        raise ConfigError(f"backbone '{name}': checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        raise ConfigError(f"backbone '{name}': cannot read checkpoint {path}: {str(err).splitlines()[0]}") from None
    state = _state_dict_of(obj)
    if state is None:
        raise ConfigError(f"backbone '{name}': {path} holds no state_dict of tensors")
    targets = [module] + ([module.net] if isinstance(module, MinSize) else [])
    target = max(targets, key=lambda t: len(set(t.state_dict()) & set(state)))
    mismatch = state_mismatch(target.state_dict(), state)
    if mismatch:
        raise ConfigError(f"backbone '{name}': checkpoint {path} {mismatch}")
    target.load_state_dict(state)
    log.info("backbone '%s' loaded %d tensors from %s", name, len(state), path)
    return module


def _state_dict_of(obj: Any) -> dict[str, Tensor] | None:
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        return None
    prefix = "backbone."
    if any(k.startswith(prefix) for k in obj):
        obj = {k[len(prefix):]: v for k, v in obj.items() if k.startswith(prefix)}
    return obj


def state_mismatch(own: dict[str, Tensor], state: dict[str, Tensor]) -> str | None:
    """Why ``state`` does not load into a module whose ``state_dict`` is ``own``, or ``None`` if it fits.

    Returns a phrase to follow "checkpoint <path>": ``"was trained for 3 classes, this model has 4 (...)"``
    when only the output layer's first dimension differs (no other change resizes that dimension
    alone: a wider hidden layer also reshapes the next layer's input), else
    ``"is from another architecture: 2 missing, 0 unexpected, 1 mis-shaped keys (first: 'fc.weight')"``.
    """
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shaped = [k for k in own if k in state and own[k].shape != state[k].shape]
    if not (missing or unexpected or shaped):
        return None
    counts = f"{len(missing)} missing, {len(unexpected)} unexpected, {len(shaped)} mis-shaped keys"
    rows = {(state[k].shape[0], own[k].shape[0]) if own[k].dim() == state[k].dim() > 0
            and own[k].shape[1:] == state[k].shape[1:] else None for k in shaped}
    change = next(iter(rows)) if len(rows) == 1 and not (missing or unexpected) else None
    if change is not None:
        return f"was trained for {change[0]} classes, this model has {change[1]} ({counts})"
    return f"is from another architecture: {counts} (first: '{(missing or unexpected or shaped)[0]}')"
