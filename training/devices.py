"""Device names of configs and the command line, checked against the machine that runs the work."""
from __future__ import annotations

import re

import torch

from victims.registry import ConfigError

DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"
"""The device names a config may hold (``train.device``) or ``advaudio attack --device`` takes."""
DEVICE_SYNTAX = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str, what: str = "train.device") -> torch.device:
    """The torch device ``name`` stands for, checked to exist here; ``auto`` is the first CUDA GPU when there
    is one, else the CPU.

    Args:
        name: a device name (:data:`DEVICE_PATTERN`).
        what: the config key or option the name came from, for messages.

    Raises:
        ConfigError: one line naming ``what``: a name that is no device, CUDA on a machine without a CUDA GPU,
            an index past the last GPU, or MPS where it is unavailable.
    """
    if not isinstance(name, str) or re.fullmatch(DEVICE_PATTERN, name) is None:
        raise ConfigError(f"{what} must be {DEVICE_SYNTAX}, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{what}={name}: this machine has no CUDA GPU (torch.cuda.is_available() is False); "
                              "use cpu or auto")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{what}={name}: this machine has {count} CUDA GPU{'s' if count > 1 else ''} "
                              f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{what}={name}: MPS (Apple GPU) is not available on this machine; use cpu or auto")
    return device
