"""Clip-passes: the unit of work a cost plan counts and a run measures.

One *clip-pass* is one clip through a network once. The backbone's passes come in four kinds, since they
cost differently: ``train`` (a forward in training mode, followed by the backward pass the optimiser steps
on), ``grad`` (a forward in eval mode that builds a graph: attacks, crafting training examples, sanity
checks), ``backward`` (a backward pass through such a graph to the input; DeepFool's candidates and JSMA's
two saliency gradients are several per forward) and ``forward`` (no gradient: evaluation, black-box
queries, certification draws). The front-end's passes are ``fe_forward`` and ``fe_backward`` (waveform-domain
gradients run back through it).

:class:`PassCounter` measures them in a real run with module hooks on the backbone and front-end of every
victim built while it is active, so a plan (:mod:`defense.plan`) can be checked against what ran.
"""
from __future__ import annotations

import contextlib
import dataclasses
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from victims.victim import Victim

KINDS = ("train", "grad", "backward", "forward", "fe_forward", "fe_backward")


@dataclass
class Passes:
    """Clip-passes of each kind (see the module docstring)."""

    train: int = 0
    grad: int = 0
    backward: int = 0
    forward: int = 0
    fe_forward: int = 0
    fe_backward: int = 0

    def __add__(self, other: "Passes") -> "Passes":
        return Passes(*(a + b for a, b in zip(self.values(), other.values())))

    def __sub__(self, other: "Passes") -> "Passes":
        return Passes(*(a - b for a, b in zip(self.values(), other.values())))

    def __mul__(self, factor: int) -> "Passes":
        return Passes(*(int(v * factor) for v in self.values()))

    __rmul__ = __mul__

    def values(self) -> tuple[int, ...]:
        return dataclasses.astuple(self)

    def max(self, other: "Passes") -> "Passes":
        """The larger count of each kind (an upper bound of both)."""
        return Passes(*(max(a, b) for a, b in zip(self.values(), other.values())))

    def fits_in(self, bound: "Passes") -> bool:
        """Every count at most ``bound``'s."""
        return all(a <= b for a, b in zip(self.values(), bound.values()))

    @property
    def backbone(self) -> int:
        """Backbone forwards of every kind."""
        return self.train + self.grad + self.forward

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def total(items: Any) -> Passes:
    """The sum of an iterable of :class:`Passes`."""
    out = Passes()
    for p in items:
        out = out + p
    return out


def model_call(clips: int, domain: str, *, graph: bool, backward: int = 0, draws: int = 1) -> Passes:
    """The passes of one call of an attacked function on ``clips`` clips in ``domain``.

    Args:
        clips: clips in the call.
        domain: ``"waveform"`` (the front-end runs in the call) or ``"representation"``.
        graph: the call builds a graph (an attack's gradient step) rather than running without gradient.
        backward: backward passes through the call's graph to its input.
        draws: EoT draws per clip (each is one backbone pass).
    """
    n = clips * draws
    wave = domain == "waveform"
    return Passes(grad=n if graph else 0, forward=0 if graph else n, backward=backward * n,
                  fe_forward=n if wave else 0, fe_backward=backward * n if wave else 0)


class PassCounter:
    """Counts clip-passes through the backbone and front-end of every :class:`Victim` built while active.

    Use as a context manager; :meth:`phase` attributes what runs inside it to a name (nested phases join
    with ``/``), and :attr:`by_phase` holds the counts per phase path (``""`` outside any phase). A
    victim built before the counter started is not counted; a module shared by several victims (an
    input-transform defense wraps its base model's modules) is hooked once.
    """

    def __init__(self) -> None:
        self.by_phase: dict[str, Passes] = {}
        self._phases: list[str] = []
        self._hooked: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # ids of freed modules are reused
        self._handles: list[Any] = []
        self._init: Callable[..., None] | None = None

    @property
    def passes(self) -> Passes:
        """Everything counted."""
        return total(self.by_phase.values())

    def under(self, prefix: str) -> Passes:
        """The counts of phase ``prefix`` and every phase nested in it."""
        return total(p for name, p in self.by_phase.items() if name == prefix or name.startswith(prefix + "/"))

    @property
    def current(self) -> str:
        """The phase path counts go to now."""
        return "/".join(self._phases)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._phases.append(name)
        try:
            yield
        finally:
            self._phases.pop()

    def watch(self, victim: Victim) -> None:
        """Hook ``victim``'s backbone and front-end, once each; a module around an already hooked one (seed 003's
        view of a model in dB units wraps its backbone) is left alone, its inner module counts."""
        for module, front in ((victim.backbone, False), (victim.frontend, True)):
            if not any(m in self._hooked for m in module.modules()):
                self._hooked.add(module)
                self._handles.append(module.register_forward_hook(self._hook(front)))

    def __enter__(self) -> "PassCounter":
        original = Victim.__init__
        counter = self

        def init(victim: Victim, *args: Any, **kwargs: Any) -> None:
            original(victim, *args, **kwargs)
            counter.watch(victim)

        self._init = original
        Victim.__init__ = init  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        Victim.__init__ = self._init  # type: ignore[method-assign]
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _add(self, kind: str, clips: int) -> None:
        found = self.by_phase.setdefault(self.current, Passes())
        setattr(found, kind, getattr(found, kind) + clips)

    def _hook(self, front: bool) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not isinstance(output, Tensor):
                return
            clips = int(output.shape[0])
            graph = torch.is_grad_enabled() and output.requires_grad
            if front:
                self._add("fe_forward", clips)
                if graph:
                    self._count_backward(output, "fe_backward", clips)
            elif module.training and graph:
                self._add("train", clips)
            else:
                self._add("grad" if graph else "forward", clips)
                if graph:
                    self._count_backward(output, "backward", clips)

        return hook

    def _count_backward(self, output: Tensor, kind: str, clips: int) -> None:
        phases = list(self._phases)

        def on_backward(grad: Tensor) -> None:
            saved, self._phases = self._phases, phases  # a backward pass belongs to its forward's phase
            try:
                self._add(kind, clips)
            finally:
                self._phases = saved

        output.register_hook(on_backward)
