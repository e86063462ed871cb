"""External models on the leaderboard: any ``nn.Module`` from waveform to logits, behind a small adapter.

The adapter contract (``advaudio benchmark CHECKPOINT --external package.module:factory``):

- ``factory(checkpoint: pathlib.Path) -> torch.nn.Module`` builds the model and loads its weights from
  ``CHECKPOINT`` (any file: the entry records its path and SHA-256);
- the module maps float32 waveforms ``(N, samples)`` in ``[-1, 1]`` at its sample rate to logits ``(N, classes)``,
  differentiably (the gradient attacks go through it);
- it has the attributes ``sample_rate`` (int, Hz, equal to the threat model's) and ``class_names`` (the labels of its
  logits in order; the same set as the threat model's data set, in any order: logits are reordered by name).

It is evaluated like our models in the waveform domain (:class:`ExternalVictim`: the raw-waveform front-end and an
identity normaliser before it); a representation-domain threat model needs a representation and refuses it.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from victims.frontends.waveform import Waveform
from victims.registry import ConfigError
from victims.victim import Victim


class _Reordered(nn.Module):
    """``(B, 1, 1, T)`` → the module's logits of ``(B, T)``, columns reordered to the data set's classes."""

    def __init__(self, module: nn.Module, order: Sequence[int]) -> None:
        super().__init__()
        self.module = module
        self.register_buffer("order", torch.tensor(list(order), dtype=torch.long), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x.flatten(1))[:, self.order]


class ExternalVictim(Victim):
    """An external module as a :class:`~victims.victim.Victim` whose representation is the waveform itself."""


def load_factory(spec: str) -> tuple[str, object]:
    """The callable ``package.module:factory`` names (the current folder is importable, as for ``python -m``).

    Raises:
        ConfigError: for a malformed spec, a module that does not import or a missing or non-callable factory.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"--external {spec!r} must look like package.module:factory")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # the user's module: whatever it raises on import is one line
        raise ConfigError(f"--external {spec}: cannot import {module_name} ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"--external {spec}: {module_name} has no callable {attr!r}")
    return spec, factory


def external_victim(spec: str, checkpoint: Path, class_names: Sequence[str], sample_rate: int,
                    num_samples: int) -> ExternalVictim:
    """Build the external model ``spec`` names from ``checkpoint`` and check it against the threat model's data.

    Raises:
        ConfigError: one line when the factory fails, the module lacks ``sample_rate``/``class_names``, its rate
            or class set differs from the data's, or it does not return ``(N, classes)`` finite logits.
    """
    _, factory = load_factory(spec)
    try:
        module = factory(checkpoint)  # type: ignore[operator]
    except Exception as err:  # the user's code: one line naming it
        raise ConfigError(f"--external {spec}: the factory failed on {checkpoint} ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"--external {spec}: the factory returned {type(module).__name__}, not a torch.nn.Module")
    rate, names = getattr(module, "sample_rate", None), getattr(module, "class_names", None)
    if not isinstance(rate, int) or isinstance(names, str) or not isinstance(names, Sequence):
        raise ConfigError(f"--external {spec}: the module needs the attributes sample_rate (int) and class_names "
                          f"(a list), got {rate!r} and {names!r}")
    names = [str(n) for n in names]
    if rate != sample_rate:
        raise ConfigError(f"--external {spec}: the module runs at {rate} Hz, the threat model's clips at "
                          f"{sample_rate} Hz")
    if sorted(names) != sorted(class_names) or len(set(names)) != len(names):
        raise ConfigError(f"--external {spec}: the module's classes {names} are not the threat model's data "
                          f"classes {list(class_names)}")
    order = [names.index(c) for c in class_names]
    victim = ExternalVictim(Waveform(sample_rate), _Reordered(module.eval(), order), class_names, num_samples,
                            {"external": spec})
    check_logits(victim, spec, num_samples)
    return victim.eval()


def check_logits(victim: Victim, spec: str, num_samples: int) -> None:
    """Refuse a module whose output on two silent clips is not ``(2, classes)`` finite floating-point logits."""
    probe = torch.zeros(2, 1, num_samples)
    inner = victim.backbone.module
    with torch.no_grad():
        try:
            out = inner(probe.flatten(1))
        except Exception as err:
            raise ConfigError(f"--external {spec}: the module fails on a (2, {num_samples}) waveform batch "
                              f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    want = (2, victim.num_classes)
    if not isinstance(out, Tensor) or tuple(out.shape) != want or not out.is_floating_point():
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ConfigError(f"--external {spec}: the module must return (N, classes) logits, {want} for a "
                          f"(2, {num_samples}) batch; it returned {got}")
    if not torch.isfinite(out).all():
        raise ConfigError(f"--external {spec}: the module returned non-finite logits on silent clips")
