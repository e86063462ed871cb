"""Defenses a grid applies at inference (issue 11): input transforms and randomized smoothing.

- An *input-transform* defense (``name: input_transform``, :mod:`defense.transforms`) is not trained: it
  wraps a trained model of its column (``base``, default the original) in the transform, in the waveform
  domain before the front-end or on the representation (:class:`defense.defended_victim.TransformedVictim`).
- *Randomized smoothing* (``name: gaussian_augment``; Cohen, Rosenfeld & Kolter 2019) trains the base
  classifier on Gaussian-noised inputs; it is attacked as deployed with one noise draw per query (the
  ``gaussian_noise`` transform of the same σ and domain), and the smoothed classifier is certified
  (:func:`certify`).

Both are attacked twice (Athalye, Carlini & Wagner 2018): *naive*, with gradients through the transform as it
is, and *adaptive* (:func:`adaptive_options`), with BPDA where the transform has no useful gradient and EoT
where it is random. A transform that is differentiable and deterministic has no adaptive variant: the naive
attack is already the adaptive one.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import Tensor

from attacks.base import BPDA_MODES
from attacks.threat import perturbation_norm
from defense.objective_base import eval_mode
from defense.defended_victim import INPUT_TRANSFORM, defend, is_transform
from defense.transforms import TRANSFORMS
from evaluation.certify import (ABSTAIN, SmoothedClassifier, certified_accuracy, certified_curve_area,
                                radius_violations)
from evaluation.config import EvalConfig
from evaluation.harness import victim_device
from evaluation import stats
from evaluation.stats import wilson_interval
from victims.registry import ConfigError
from victims.victim import Victim

SMOOTHING = "gaussian_augment"


@dataclass(frozen=True)
class AdaptiveConfig:
    """``adaptive:`` of a grid: the attack options of the adaptive evaluation (Athalye et al. 2018).

    Attributes:
        bpda: backward pass of a non-differentiable transform: ``"identity"`` (straight-through) or
            ``"approx"`` (the transform's differentiable approximation).
        eot_samples: draws of a random transform averaged per gradient (expectation over transformation).
    """

    bpda: str = "identity"
    eot_samples: int = 16

    def __post_init__(self) -> None:
        if self.bpda not in BPDA_MODES:
            raise ConfigError(f"adaptive.bpda must be one of {', '.join(BPDA_MODES)}, got {self.bpda!r}")
        if not isinstance(self.eot_samples, int) or self.eot_samples < 2:
            raise ConfigError(f"adaptive.eot_samples must be an integer >= 2, got {self.eot_samples!r}")


def is_smoothing(defense_cfg: dict[str, Any]) -> bool:
    """Randomized smoothing: a noise-trained model, attacked with noise at inference and certified."""
    return defense_cfg.get("name") == SMOOTHING


def base_defense(defense_cfg: dict[str, Any], default: str) -> str:
    """The defense option whose trained model an input transform wraps (``base``, default ``default``)."""
    return str(defense_cfg.get("base", default))


def transform_config(defense_cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The transform a defense applies at inference (``None`` for a trained defense)."""
    if is_transform(defense_cfg):
        return {k: v for k, v in defense_cfg.items() if k != "base"}
    if is_smoothing(defense_cfg):
        return {"name": INPUT_TRANSFORM, "transform": "gaussian_noise", "sigma": defense_cfg["sigma"],
                "domain": defense_cfg.get("domain", "representation"), "clip": False}  # as trained and certified
    return None


def transform_domain(defense_cfg: dict[str, Any]) -> str | None:
    """Where a defense's inference-time transform acts (``None`` for a trained defense)."""
    cfg = transform_config(defense_cfg)
    if cfg is None:
        return None
    return str(cfg.get("domain") or TRANSFORMS.get(cfg["transform"]).domain)


def deployed(victim: Victim, defense_cfg: dict[str, Any]) -> Victim:
    """The model as an attacker meets it: ``victim`` wrapped in the defense's transform, if it has one."""
    cfg = transform_config(defense_cfg)
    return victim if cfg is None else defend(victim, cfg)


def adaptive_options(defense_cfg: dict[str, Any], adaptive: AdaptiveConfig) -> dict[str, Any] | None:
    """Attack options of the adaptive evaluation: ``bpda`` for a transform without a useful gradient,
    ``eot_samples`` for a random one; ``None`` when the naive attack is already adaptive."""
    cfg = transform_config(defense_cfg)
    if cfg is None:
        return None
    kind = TRANSFORMS.get(cfg["transform"])
    options: dict[str, Any] = {}
    if not kind.differentiable:
        options["bpda"] = adaptive.bpda
    if kind.random:
        options["eot_samples"] = adaptive.eot_samples
    return options or None


def certify_radii(ev_cfg: EvalConfig, domain: str) -> list[float]:
    """Radii certified accuracy is reported at: ``evaluation.certify_radii.<domain>``, else ¼, ½ and 1 ×
    the domain's L2 ``eps_max`` (the budget the fooling AUC is measured to)."""
    radii = (ev_cfg.certify_radii or {}).get(domain)
    if radii is not None:
        return [float(r) for r in radii]
    eps = (ev_cfg.eps_max.get(domain) or {}).get("l2")
    if eps is None:
        raise ConfigError(f"randomized smoothing in the {domain} domain needs evaluation.certify_radii.{domain} "
                          f"or evaluation.eps_max.{domain}.l2")
    return [float(eps) * f for f in (0.25, 0.5, 1.0)]


@contextlib.contextmanager
def seeded_eval(victim: Victim, seed: int) -> Iterator[torch.device]:
    """Eval mode, no gradient and torch's RNG seeded with ``seed`` (the caller's RNG state and the victim's mode
    are restored afterwards); yields the victim's device."""
    device = victim_device(victim)
    with eval_mode(victim), torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], enabled=True), \
            torch.no_grad():
        torch.manual_seed(seed)
        yield device


def certify_settings(defense_cfg: dict[str, Any], labels: Tensor, ev_cfg: EvalConfig) -> dict[str, Any]:
    """What a certification record depends on besides the model: σ, domain, n₀, n, α, the reported radii, the
    seed and the clips' labels (a logged record with the same settings is the same certification)."""
    domain = defense_cfg.get("domain", "representation")
    return {"label": labels.cpu().tolist(), "sigma": float(defense_cfg["sigma"]), "domain": domain,
            "n0": ev_cfg.certify_n0, "n": ev_cfg.certify_n, "alpha": ev_cfg.certify_alpha,
            "radii": certify_radii(ev_cfg, domain), "seed": ev_cfg.seed}


def certify(victim: Victim, defense_cfg: dict[str, Any], waves: Tensor, labels: Tensor, ev_cfg: EvalConfig
            ) -> dict[str, Any]:
    """Cohen et al.'s CERTIFY of the smoothed ``victim`` (the noise-trained base classifier) on ``waves``.

    Returns:
        A JSON-ready record: ``pred`` (−1 = abstain), certified L2 ``radius`` in the smoothing domain's units,
        and :func:`certify_settings`.
    """
    settings = certify_settings(defense_cfg, labels, ev_cfg)
    domain, sigma = settings["domain"], settings["sigma"]
    with seeded_eval(victim, ev_cfg.seed) as device:
        x = victim.to_domain(waves.to(device), domain)
        smoothed = SmoothedClassifier(victim.logits_fn(domain), victim.num_classes, sigma)
        pred, radius = smoothed.certify(x, ev_cfg.certify_n0, ev_cfg.certify_n, ev_cfg.certify_alpha,
                                        ev_cfg.batch_size)
    return {"pred": pred.cpu().tolist(), "radius": radius.double().cpu().tolist(), **settings}


def certify_metrics(record: dict[str, Any], level: float = 0.95, n_boot: int = 1000, seed: int = 0
                    ) -> dict[str, float]:
    """Certified accuracy at each reported radius, the smoothed classifier's clean accuracy and its abstention
    rate, each with its Wilson interval (``certified_accuracy.r<r>``, ``_ci_low``/``_ci_high``), and the area
    under the certified-accuracy curve (``certified_auc``, the mean certified radius of correct clips, in the
    domain's L2 units) with a percentile-bootstrap interval over the clips."""
    pred = torch.tensor(record["pred"])
    radius = torch.tensor(record["radius"], dtype=torch.float64)
    labels = torch.tensor(record["label"])
    n = len(labels)
    radii = record["radii"]
    rates = {f"certified_accuracy.r{r:g}": float(acc)
             for r, acc in zip(radii, certified_accuracy(pred, radius, labels, torch.tensor(radii, dtype=torch.float64)))}
    rates["smoothed_accuracy"] = float((pred == labels).double().mean()) if n else math.nan
    rates["abstain_rate"] = float((pred == ABSTAIN).double().mean()) if n else math.nan
    out: dict[str, float] = {}
    for name, rate in rates.items():
        low, high = wilson_interval(rate, n, level)
        out.update({name: rate, f"{name}_ci_low": low, f"{name}_ci_high": high})
    area = certified_curve_area(pred, radius, labels)
    per_clip = torch.where((pred == labels) & (pred != ABSTAIN), radius, 0.0).numpy()
    found = stats.percentile_interval(per_clip[stats.bootstrap_indices(n, n_boot, seed)].mean(axis=1), area, level)
    out.update({"certified_auc": area, "certified_auc_ci_low": found.low, "certified_auc_ci_high": found.high,
                "certify_sigma": record["sigma"]})
    return out


def accuracy(victim: Victim, waves: Tensor, labels: Tensor, batch_size: int, seed: int) -> float:
    """Test accuracy of the deployed ``victim`` (eval mode; a random transform draws once per clip, seeded)."""
    return int((predictions(victim, waves, batch_size, seed) == labels).sum()) / max(len(labels), 1)


def predictions(victim: Victim, waves: Tensor, batch_size: int, seed: int) -> Tensor:
    """The deployed ``victim``'s clean predictions (eval mode; a random transform draws once per clip, seeded as
    :func:`evaluation.harness.evaluate_attack` draws its clean predictions)."""
    parts = []
    with seeded_eval(victim, seed) as device:
        for start in range(0, len(waves), batch_size):
            parts.append(victim(waves[start:start + batch_size].to(device)).argmax(dim=1).cpu())
    return torch.cat(parts).long() if parts else torch.zeros(0, dtype=torch.long)


def attacked_labels(victim: Victim, waves: Tensor, labels: Tensor, ev_cfg: EvalConfig) -> Tensor:
    """The labels an attack's success is judged against (``evaluation.base_set``): the true ones (``correct``), or
    the deployed model's clean predictions (``all``: every clip is in the base set, seed 000's rule)."""
    return labels if ev_cfg.base_set == "correct" else predictions(victim, waves, ev_cfg.batch_size, ev_cfg.seed)


def violation_check(victim: Victim, record: dict[str, Any], index: Tensor, adversarial: Tensor, waves: Tensor,
                    batch_size: int) -> Any:
    """Cohen et al.'s guarantee checked on an attack of the smoothed model: no adversarial example found inside
    an example's certified radius changes the smoothed prediction (beyond the certificates' error rate α).

    ``record`` is :func:`certify`'s on ``waves``; ``adversarial`` the attack's successful inputs, in the smoothing
    domain, of the clips ``index``. The smoothed classifier predicts each (PREDICT with CERTIFY's n and α) and
    the perturbation's L2 norm is measured against the clip's certificate."""
    domain, sigma = record["domain"], float(record["sigma"])
    adv_pred = torch.empty(0, dtype=torch.long)
    norms = torch.empty(0, dtype=torch.float64)
    if len(index):
        smoothed = SmoothedClassifier(victim.logits_fn(domain), victim.num_classes, sigma)
        with seeded_eval(victim, 0) as device:
            adv = adversarial.to(device)
            norms = perturbation_norm(adv - victim.to_domain(waves[index].to(device), domain), "l2").double().cpu()
            adv_pred = smoothed.predict(adv, record["n"], record["alpha"], batch_size).cpu()
    pick = index.cpu()
    return radius_violations(torch.tensor(record["pred"])[pick], torch.tensor(record["radius"], dtype=torch.float64)[pick],
                             torch.tensor(record["label"])[pick], norms, adv_pred, record["alpha"])
