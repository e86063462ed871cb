"""A victim: front-end + per-band normaliser + backbone, one module from waveform to logits.

An attack can work on either side of the front-end (seed 000 attacks the waveform end to end,
seed 004 the representation), so the victim exposes both halves and the bounds of each domain.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Literal, Sequence

import torch
from torch import Tensor, nn

from victims.bounds import Bounds
from victims.frontends import FRONTENDS, FrontEnd
from victims.normalize import BandNorm

Domain = Literal["waveform", "representation"]
DOMAINS: tuple[str, ...] = ("waveform", "representation")


class Victim(nn.Module):
    """``logits = backbone(normalizer(frontend(wave)))`` for waveforms ``(B, 1, T)``.

    Args:
        frontend: waveform → ``(B, 1, F, frames)`` transform.
        backbone: ``(B, 1, F, frames)`` → ``(B, num_classes)`` classifier.
        class_names: label names, index = class id.
        num_samples: the clip length ``T`` the victim was built for.
        spec: the config that rebuilds this victim (stored in checkpoints).
    """

    def __init__(self, frontend: FrontEnd, backbone: nn.Module, class_names: Sequence[str],
                 num_samples: int, spec: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.frontend = frontend
        self.normalizer = BandNorm(frontend.n_bands)
        self.backbone = backbone
        self.class_names = list(class_names)
        self.num_samples = int(num_samples)
        self.spec = copy.deepcopy(spec or {})

    @property
    def sample_rate(self) -> int:
        return self.frontend.sample_rate

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def features(self, wave: Tensor) -> Tensor:
        """Front-end output in its own units (e.g. dB), for plots and for fitting the normaliser."""
        return self.frontend(wave)

    def represent(self, wave: Tensor) -> Tensor:
        """The backbone's input: normalised representation ``(B, 1, F, frames)``."""
        return self.normalizer(self.frontend(wave))

    def classify(self, rep: Tensor) -> Tensor:
        """Logits from a (possibly perturbed) representation."""
        return self.backbone(rep)

    def forward(self, wave: Tensor) -> Tensor:
        return self.classify(self.represent(wave))

    def logits_fn(self, domain: Domain, bpda: str | None = None, eot_samples: int = 1) -> Callable[[Tensor], Tensor]:
        """The function an attack differentiates: waveform → logits or representation → logits.

        ``bpda`` and ``eot_samples`` (adaptive attacks on an input-transform defense,
        :class:`defense.defended_victim.TransformedVictim`) are ignored: an undefended victim has no transform.
        """
        if domain == "waveform":
            return self.forward
        if domain == "representation":
            return self.classify
        raise ValueError(f"unknown domain '{domain}'; known: {', '.join(DOMAINS)}")

    def to_domain(self, wave: Tensor, domain: Domain) -> Tensor:
        """The clean input an attack starts from in ``domain`` (detached)."""
        with torch.no_grad():
            return wave.detach() if domain == "waveform" else self.represent(wave).detach()

    def bounds(self, domain: Domain) -> Bounds:
        """Box of valid inputs: ``[-1, 1]`` for waveforms; for representations, the front-end's
        per-band output range mapped through the normaliser, shaped ``(1, 1, F, 1)``."""
        if domain == "waveform":
            return Bounds(-1.0, 1.0)
        if domain != "representation":
            raise ValueError(f"unknown domain '{domain}'; known: {', '.join(DOMAINS)}")
        lo, hi = self.frontend.output_bounds()
        dev = self.normalizer.mean.device
        lo = self.normalizer(lo.to(dev).view(1, 1, -1, 1))
        hi = self.normalizer(hi.to(dev).view(1, 1, -1, 1))
        return Bounds(lo.detach(), hi.detach())


def build_victim(frontend: dict[str, Any], backbone: dict[str, Any], class_names: Sequence[str],
                 sample_rate: int, num_samples: int, *, meta_backbone: bool = False) -> Victim:
    """Build a victim from the ``frontend`` and ``victim`` config groups.

    Args:
        frontend: ``{"name": <FRONTENDS name>, **kwargs}``.
        backbone: ``{"backbone": <BACKBONES name>, **kwargs}``.
        class_names: label names.
        sample_rate: waveform rate in Hz.
        num_samples: clip length in samples.
        meta_backbone: build the backbone on PyTorch's ``meta`` device (shapes, no storage, no random
            initialisation), for a caller that assigns its weights next (:func:`training.checkpoints.load_victim`).

    Raises:
        ConfigError: for an unknown name or keyword.
    """
    fe = build_frontend(frontend, sample_rate)
    net = build_backbone(backbone, len(class_names), fe.output_shape(num_samples), sample_rate, meta=meta_backbone)
    spec = {"frontend": dict(frontend), "victim": dict(backbone), "class_names": list(class_names),
            "sample_rate": int(sample_rate), "num_samples": int(num_samples)}
    return Victim(fe, net, class_names, num_samples, spec)


def build_frontend(frontend: dict[str, Any], sample_rate: int) -> FrontEnd:
    """The front-end of a ``frontend`` config group at ``sample_rate`` Hz.

    Raises:
        ConfigError: for an unknown name or keyword.
    """
    return FRONTENDS.create(frontend["name"], sample_rate=sample_rate,
                            **{k: v for k, v in frontend.items() if k != "name"})


def build_backbone(backbone: dict[str, Any], num_classes: int, input_shape: tuple[int, int],
                   sample_rate: int, *, meta: bool = False) -> nn.Module:
    """The backbone of a ``victim`` config group for ``(F, frames)`` inputs; a waveform model (seed 003's gammatone
    CNN) is given the data's ``sample_rate``. ``meta`` builds it on PyTorch's ``meta`` device: shapes without storage
    or random initialisation (the dry run's full-size check, a checkpoint's weights to be assigned).

    Raises:
        ConfigError: for an unknown name or keyword.
    """
    import inspect

    from victims.backbones import BACKBONES

    kwargs = {k: v for k, v in backbone.items() if k != "backbone"}
    if "sample_rate" in inspect.signature(BACKBONES.get(backbone["backbone"])).parameters:
        kwargs["sample_rate"] = sample_rate
    with torch.device("meta") if meta else contextlib.nullcontext():
        net = BACKBONES.create(backbone["backbone"], num_classes=num_classes, input_shape=input_shape, **kwargs)
    return in_preferred_layout(net)


def in_preferred_layout(net: nn.Module) -> nn.Module:
    """``net`` with channels-last weights where it :func:`uses_2d_convolutions`, else as it is."""
    return net.to(memory_format=torch.channels_last) if uses_2d_convolutions(net) else net


def uses_2d_convolutions(net: nn.Module) -> bool:
    """Whether ``net`` holds a 2D convolution: such a backbone is built with channels-last (NHWC) weights, which
    oneDNN convolved 1.2-1.9x faster than NCHW ones on a 2-core CPU (AlexNet's input gradient the one loss). On an
    H200 (bf16) every training step was faster (1.03-3.9x) but the input gradient slower for 5 of 8 backbones
    (0.84-0.94x; ``benchmarks/memory_format.py``, ``benchmarks/RESULTS.md``). Inputs may stay NCHW (the first
    convolution converts them), and values, state dicts and checkpoints are the same."""
    return any(isinstance(m, nn.Conv2d) for m in net.modules())


def victim_from_spec(spec: dict[str, Any], *, meta_backbone: bool = False) -> Victim:
    """Rebuild an (untrained) victim from the ``spec`` stored in a checkpoint (``meta_backbone``: see
    :func:`build_victim`).

    The backbone's ``checkpoint`` key (initial weights it was trained from) is dropped: the weights
    come from the checkpoint holding the spec, and the file need not exist on this machine.
    """
    backbone = {k: v for k, v in spec["victim"].items() if k != "checkpoint"}
    return build_victim(spec["frontend"], backbone, spec["class_names"], spec["sample_rate"], spec["num_samples"],
                        meta_backbone=meta_backbone)
