"""Transferability of adversarial examples between models (seed 001, Sec. 3.3 and Table 5).

Adversarial examples crafted on model ``a`` are replayed on every other model ``b`` that saw the same
clips. T[a→b] = share of the examples crafted on ``a`` (they fool ``a`` and come from ``a``'s base set)
that also fool ``b``, among those ``b`` classifies correctly on clean input
(:func:`evaluation.metrics.transfer_masks`). Several attacks pool their examples (seed 001 pools
DeepFool and C&W); the interval is a percentile bootstrap over clips, every attack's example of a clip
moving together (:func:`evaluation.stats.ratio_of_sums_interval`).

Examples move between models as waveforms (any two models of one data set), or, for a
representation-domain attack, as representations between models of one front-end: the adversarial
representation is taken back to front-end units with ``a``'s normaliser and into ``b``'s with ``b``'s.
Models of different class sets cannot be compared: :func:`check_class_sets` says so in one line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from attacks.perceptual import perturbation_size
from evaluation import metrics as M
from evaluation import stats
from victims.registry import ConfigError
from victims.victim import Domain, Victim


def check_class_sets(class_names: Mapping[str, Sequence[str]]) -> None:
    """Raise a one-line ConfigError unless every model has the same class names in the same order."""
    items = list(class_names.items())
    for name, classes in items[1:]:
        first, first_classes = items[0]
        if list(classes) != list(first_classes):
            raise ConfigError(f"transfer between models of different class sets: '{first}' has {len(first_classes)} "
                              f"classes ({', '.join(first_classes)}), '{name}' has {len(classes)} "
                              f"({', '.join(classes)})")


@dataclass
class TransferRecord:
    """Replay outcome of one attack's examples between ``M`` models on the same ``N`` clips.

    Attributes:
        attack: the attack's label.
        models: model names, index = position in the arrays.
        labels: ``(N,)`` true labels.
        correct: ``(M, N)`` bool, model ``b`` classifies clip ``i`` correctly on clean input.
        fooled: ``(M, M, N)`` bool, the example crafted on ``a`` for clip ``i`` fools ``b`` (``False``
            where ``a`` crafted none).
    """

    attack: str
    models: list[str]
    labels: Tensor
    correct: Tensor
    fooled: Tensor

    def to_dict(self) -> dict[str, Any]:
        return {"attack": self.attack, "models": self.models, "labels": self.labels.tolist(),
                "correct": self.correct.tolist(), "fooled": self.fooled.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TransferRecord":
        m, n = len(data["models"]), len(data["labels"])
        return cls(str(data["attack"]), list(data["models"]), torch.tensor(data["labels"], dtype=torch.int64),
                   torch.tensor(data["correct"], dtype=torch.bool).view(m, n),
                   torch.tensor(data["fooled"], dtype=torch.bool).view(m, m, n))


def _device(victim: Victim) -> torch.device:
    return next(iter(victim.buffers())).device


@torch.no_grad()
def _predict(victim: Victim, inputs: Tensor, domain: Domain, batch_size: int) -> Tensor:
    was_training = victim.training
    victim.eval()
    try:
        fn = victim.logits_fn(domain)
        return torch.cat([fn(inputs[i:i + batch_size].to(_device(victim))).argmax(dim=1).cpu()
                          for i in range(0, len(inputs), batch_size)] or [torch.zeros(0, dtype=torch.int64)])
    finally:
        victim.train(was_training)


def _carry(source: Victim, target: Victim, adversarial: Tensor, domain: Domain) -> Tensor:
    """The adversarial input of ``source`` as ``target``'s input in ``domain``."""
    if domain == "waveform":
        return adversarial
    if source.spec.get("frontend") != target.spec.get("frontend"):
        raise ConfigError("representation-domain examples transfer only between models of one front-end")
    with torch.no_grad():
        units = source.normalizer.inverse(adversarial.to(_device(source))).to(_device(target))
        return target.normalizer(units).cpu()


def replay(attack: str, victims: Mapping[str, Victim], clean: Tensor, labels: Tensor,
           crafted: Mapping[str, tuple[Tensor, Tensor]], *, domain: Domain = "waveform",
           batch_size: int = 64) -> TransferRecord:
    """Replay every model's adversarial examples on every model.

    Args:
        attack: the attack's label.
        victims: the models, in table order.
        clean: ``(N, 1, T)`` clean waveforms of the clips every model was attacked on.
        labels: ``(N,)`` their labels.
        crafted: model → ``(index, adversarial)``: clip indices whose attack succeeded on that model (in
            its base set) and the adversarial inputs ``(k, ...)`` in ``domain``.
        domain: ``"waveform"`` or ``"representation"``.
        batch_size: clips per forward pass.

    Raises:
        ConfigError: for models of different class sets, or representations of different front-ends.
    """
    check_class_sets({name: v.class_names for name, v in victims.items()})
    names = list(victims)
    n = len(labels)
    labels = labels.cpu().long()
    correct = torch.stack([_predict(victims[b], victims[b].to_domain(clean.to(_device(victims[b])), domain).cpu(),
                                    domain, batch_size) == labels for b in names])
    fooled = torch.zeros(len(names), len(names), n, dtype=torch.bool)
    for a, source in enumerate(names):
        for b, target in enumerate(names):
            fooled[a, b] = fooled_by(victims[source], victims[target], *crafted[source], labels,
                                     domain=domain, batch_size=batch_size)
    return TransferRecord(attack, names, labels, correct, fooled)


def fooled_by(source: Victim, target: Victim, index: Tensor, adversarial: Tensor, labels: Tensor, *,
              domain: Domain = "waveform", batch_size: int = 64) -> Tensor:
    """``(N,)`` bool: the example ``source``'s attack crafted for clip ``i`` (``adversarial[k]`` for clip
    ``index[k]``, in ``domain``) fools ``target`` (``False`` where none was crafted)."""
    labels = labels.cpu().long()
    out = torch.zeros(len(labels), dtype=torch.bool)
    out[index] = _predict(target, _carry(source, target, adversarial, domain), domain, batch_size) != labels[index]
    return out


@torch.no_grad()
def carried_sizes(source: Victim, target: Victim, index: Tensor, adversarial: Tensor, clean: Tensor, norm: str, *,
                  domain: Domain = "waveform") -> Tensor:
    """``(N,)`` float64: the size, in ``norm`` and ``target``'s units of ``domain``, of the perturbation
    ``source``'s example of clip ``i`` makes on ``target``'s input (∞ where none was crafted)."""
    out = torch.full((clean.shape[0],), math.inf, dtype=torch.float64)
    if len(index):
        carried = _carry(source, target, adversarial, domain)
        reference = target.to_domain(clean[index].to(_device(target)), domain).cpu()
        out[index] = perturbation_size(carried - reference, reference, norm, target.sample_rate).double()
    return out


def transfer_rates(records: Sequence[TransferRecord], *, n_boot: int = 1000, level: float = 0.95,
                   seed: int = 0) -> dict[str, pd.DataFrame]:
    """T[a→b] pooled over the records' attacks, with bootstrap intervals over clips.

    Returns:
        ``value``, ``low``, ``high`` (float) and ``n`` (eligible examples) as ``M × M`` frames with rows =
        the model tested on (``b``) and columns = the model the examples were crafted on (``a``), seed
        001's Table 5 layout; the diagonal is left empty (``nan``, the paper's "NA").

    Raises:
        ConfigError: if the records do not share models and clips.
    """
    if not records:
        raise ValueError("transfer_rates needs at least one record")
    names = records[0].models
    for r in records[1:]:
        if r.models != names or not torch.equal(r.labels, records[0].labels):
            raise ConfigError(f"transfer records '{records[0].attack}' and '{r.attack}' cover different models or "
                              "clips")
    masks = [M.transfer_masks(r.fooled, r.correct) for r in records]
    eligible = sum(e.double() for e, _ in masks).numpy()
    hit = sum(h.double() for _, h in masks).numpy()
    out = {k: pd.DataFrame(np.nan, index=names, columns=names) for k in ("value", "low", "high", "n")}
    for a, source in enumerate(names):
        for b, target in enumerate(names):
            if a == b:
                continue
            found = stats.ratio_of_sums_interval(hit[a, b], eligible[a, b], n_boot=n_boot, seed=seed, level=level)
            for key, value in (("value", found.value), ("low", found.low), ("high", found.high),
                               ("n", float(eligible[a, b].sum()))):
                out[key].at[target, source] = value
    for frame in out.values():
        frame.index.name = "tested on \\ crafted on"
    return out
