"""``advaudio benchmark``: one model evaluated under one threat model, written as a leaderboard entry (issue 21 item 2).

The model is one of our checkpoints (:func:`training.checkpoints.load_victim`, deployed as trained: a model trained
with Gaussian noise is attacked behind its noise, Cohen et al. 2019) or an external module
(:mod:`leaderboard.external`), optionally behind an input-transform defense (``--transform``). On the threat model's
clips every protocol attack runs through :func:`evaluation.harness.evaluate` (gradient attacks on an
inference-time defense with the threat model's adaptive options: BPDA, EoT; Athalye et al. 2018), and the per-clip
worst case over them (:func:`evaluation.ensemble.ensemble`, AutoAttack's principle) gives the metrics:

- clean accuracy and robust accuracy at the budget (the share of clips still classified correctly under the
  worst case), each with its Wilson interval (:func:`evaluation.stats.wilson_interval`);
- the median ensemble ε* over the base set with its percentile-bootstrap interval over the clips;
- ε_r against a reference model (seed 004 Eq. 15 on the ensemble ε*, :func:`evaluation.stats.clip_ratio_intervals`,
  as the grids' ``ensemble`` rows): the reference is an entry holding per-clip ε* or a checkpoint evaluated here;
- certified accuracy at the budget for a smoothed model (:func:`defense.inference.certify`: L2 certificates in the
  smoothing domain; an L∞ budget ε is certified through the L2 ball of radius ε·√d that holds it), else null.

Everything is seeded by the threat model, so benchmarking a checkpoint twice gives the same entry but for
``created``, ``evaluation.wall_time_s`` and ``evaluation.mlflow_run_id`` (each benchmark is an MLflow run of its
own in the experiment ``leaderboard``, with the metrics and the entry as ``entry.json``).
"""
from __future__ import annotations

import logging
import math
import re
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import mlflow
import numpy as np
import torch
from torch import Tensor

from attacks import create_attack
from attacks.base import GRADIENT_FREE
from defense.config import load_option
from defense.defended_victim import INPUT_TRANSFORM, is_transform
from defense.inference import adaptive_options, certify, deployed, is_smoothing, transform_config
from evaluation import metrics as M
from evaluation import stats
from evaluation.certify import certified_accuracy_interval
from evaluation.ensemble import ensemble, found_by_counts
from evaluation.harness import AttackEvaluation, evaluate, to_record
from evaluation.selection import random_targets, select_examples
from evaluation.tracking import RECORD_ARTIFACT, default_tracking_uri, flatten, mark_finished, setup_tracking, tags
from leaderboard.card import advaudio_card, external_card, sha256
from leaderboard.entry import EntryError, encode_per_clip, load_entry, per_clip, schema_problem, write_entry
from leaderboard.external import ExternalVictim, external_victim
from leaderboard.threat_model import ThreatModel, load_threat_model
from training.checkpoints import CheckpointError, load_victim
from training.data import load_splits
from training.files import check_output_file, writable_folder
from victims.registry import ConfigError
from victims.victim import Victim

log = logging.getLogger(__name__)
EXPERIMENT = "leaderboard"
"""The MLflow experiment of benchmark runs."""
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")


@dataclass
class Model:
    """A model ready to benchmark: the deployed victim, the undeployed one (certification), its card and entry
    fields, and the inference-time defense it is evaluated behind (``{}``: none)."""

    deployed: Victim
    base: Victim
    card: dict[str, Any]
    model: dict[str, Any]
    defense: dict[str, Any]


@dataclass
class Evaluated:
    """One model's evaluation under a threat model: every attack's and the ensemble's."""

    members: dict[str, AttackEvaluation]
    ensemble: AttackEvaluation
    found_by: list[str]


@dataclass
class Benchmark:
    """What :func:`benchmark` made: the entry, its file and its MLflow run."""

    entry: dict[str, Any]
    path: Path
    run_id: str


def benchmark(checkpoint: str | Path, threat_model: str, *, name: str | None = None, reference: str | None = None,
              outputs: Path, entries: Path | None = None, external: str | None = None, transform: str | None = None,
              tracking_uri: str | None = None, data_root: str | None = None,
              progress: Callable[[str], None] | None = None) -> Benchmark:
    """Evaluate ``checkpoint`` under ``threat_model`` and write its entry to ``<entries>/<name>.json`` (default
    ``entries``: ``<outputs>/leaderboard/<threat_model>``, where ``advaudio leaderboard`` reads) and to MLflow.

    Args:
        checkpoint: our victim checkpoint, or the weights file an ``external`` factory loads.
        threat_model: a ``configs/threat_model`` option.
        name: the entry's display name (default: the checkpoint's file name without ``.victim.pt``).
        reference: an entry file (with per-clip ε*) or one of our checkpoints to measure ε_r against.
        outputs: the outputs folder (default store, default entries folder).
        entries: the folder of the threat model's entries.
        external: ``package.module:factory`` of an external model (:mod:`leaderboard.external`).
        transform: a ``configs/defense`` input-transform option the model is deployed behind.
        tracking_uri: MLflow store (default: SQLite under ``outputs``); also where the training run is looked up.
        data_root: where this machine keeps the threat model's data set.
        progress: called with a line before each step.

    Raises:
        ConfigError: (one line) an unknown threat model, a model of another class set, rate or clip length than the
            threat model's data, an external module that is no (N, classes) logits map, a bad reference entry, an
            entry name that is no file name. Nothing is written before the entry is valid.
        CheckpointError: a checkpoint that cannot be read.
    """
    say = progress or (lambda line: log.info("%s", line))
    started = time.monotonic()
    tm = load_threat_model(threat_model, data_root=data_root)
    checkpoint = Path(checkpoint)
    name = name or re.sub(r"\.(victim|train)\.pt$|\.pt$", "", checkpoint.name)
    if not NAME.match(name):
        raise ConfigError(f"entry name {name!r} must be a file name: letters, digits and _ . + = - (no / or leading .)")
    folder = writable_folder(entries or outputs / "leaderboard" / tm.name, "entries folder")
    path = check_output_file(folder / f"{name}.json", "entry", {"CHECKPOINT": checkpoint})
    uri = tracking_uri or default_tracking_uri(outputs)
    say(f"loading {tm.name} clips")
    splits = load_splits(tm.dataset)
    waves, labels = select_examples(splits.test, tm.protocol.n_clips, tm.protocol.seed)
    ref = _reference(reference, tm, labels, splits.class_names, waves, uri, say) if reference else None
    model = load_model(checkpoint, tm, splits.class_names, splits.test.num_samples, uri, external, transform)
    say(f"attacking {name}")
    found = evaluate_model(model, tm, waves, labels, say)
    metrics = _metrics(found, tm, ref)
    metrics["certified_accuracy"] = _certified(model, tm, waves, labels, say)
    entry = {"schema_version": 1,
             "threat_model": {"name": tm.name, "version": tm.version, "config_hash": tm.config_hash},
             "model": {"name": name, **model.model}, "card": model.card, "metrics": metrics,
             "evaluation": _evaluation(found, tm, waves, labels, round(time.monotonic() - started, 3)),
             "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    problem = schema_problem(entry)
    if problem is not None:  # a bug here, not the user's input: before any run or file exists
        raise RuntimeError(f"the benchmark built an entry that violates entry.schema.json, {problem}")
    return _record(entry, found, tm, path, uri, outputs)


def load_model(checkpoint: Path, tm: ThreatModel, class_names: list[str], num_samples: int, tracking_uri: str,
               external: str | None = None, transform: str | None = None) -> Model:
    """The model to benchmark, checked against the threat model's data (classes, rate, clip length) and domain."""
    sample_rate = int(tm.dataset["sample_rate"])
    if not checkpoint.is_file():
        raise CheckpointError(f"checkpoint not found: {checkpoint}")
    if external is not None:
        base: Victim = external_victim(external, checkpoint, class_names, sample_rate, num_samples)
        card, defense = external_card(base, external), {}
        if tm.domain == "representation":
            raise ConfigError(f"threat model {tm.name} attacks the representation; the external module maps waveforms "
                              "to logits and has none (benchmark it under a waveform threat model)")
    else:
        base = load_victim(checkpoint)
        _check_fit(base, checkpoint, tm, class_names, sample_rate, num_samples)
        card, defense = advaudio_card(base, checkpoint, tracking_uri)
    if transform is not None:
        option = load_option("defense", transform)
        if not is_transform(option):
            raise ConfigError(f"--transform {transform} is a training defense ({option.get('name')}), not an "
                              f"{INPUT_TRANSFORM} option")
        if transform_config(defense) is not None:
            raise ConfigError(f"the model is already deployed behind {defense.get('name')}; one inference-time "
                              "defense per model")
        defense = option
        card["objective_settings"] = {**card["objective_settings"], "input_transform": {"option": transform, **option}}
    model = {"source": "external" if isinstance(base, ExternalVictim) else "advaudio",
             "checkpoint": str(checkpoint), "checkpoint_sha256": sha256(checkpoint)}
    return Model(deployed(base, defense), base, card, model, defense)


def _check_fit(victim: Victim, checkpoint: Path, tm: ThreatModel, class_names: list[str], sample_rate: int,
               num_samples: int) -> None:
    """Refuse a checkpoint of another class set, rate or clip length than the threat model's data."""
    if list(victim.class_names) != list(class_names):
        raise ConfigError(f"checkpoint {checkpoint} classifies {victim.class_names}, threat model {tm.name}'s data "
                          f"({tm.dataset['name']}) has the classes {class_names}")
    if victim.sample_rate != sample_rate or victim.num_samples != num_samples:
        raise ConfigError(f"checkpoint {checkpoint} takes {victim.num_samples} samples at {victim.sample_rate} Hz, "
                          f"threat model {tm.name}'s clips are {num_samples} samples at {sample_rate} Hz")


def evaluate_model(model: Model, tm: ThreatModel, waves: Tensor, labels: Tensor,
                   say: Callable[[str], None]) -> Evaluated:
    """Every protocol attack on the deployed model (adaptive where an inference-time defense makes it so), and
    their per-clip worst case."""
    ev_cfg = tm.eval_config()
    adaptive = adaptive_options(model.defense, tm.adaptive()) or {}
    members: dict[str, AttackEvaluation] = {}
    for attack_name, cfg in tm.attacks.items():
        kwargs = {k: v for k, v in cfg.items() if k != "name"}
        attack = create_attack(cfg["name"], **kwargs)
        if adaptive and attack.family not in GRADIENT_FREE:
            attack = create_attack(cfg["name"], **kwargs, **adaptive)
        say(f"{attack_name}{' (adaptive)' if adaptive and attack.family not in GRADIENT_FREE else ''}")
        targets = random_targets(labels, model.deployed.num_classes, ev_cfg.seed) if attack.targeted else None
        members[attack_name] = evaluate(model.deployed, attack, waves, labels, ev_cfg, targets=targets,
                                        name=attack_name)
    ens, found_by = ensemble(list(members.values()), f"ensemble_{tm.name}")
    return Evaluated(members, ens, found_by)


def _interval(value: float, low: float, high: float, **extra: Any) -> dict[str, Any]:
    """An interval as the schema holds it: non-finite numbers are null."""
    def num(x: float) -> float | None:
        return float(x) if x is not None and math.isfinite(x) else None

    return {"value": num(value), "low": num(low), "high": num(high), **extra}


def _rate(rate: float, n: int, level: float) -> dict[str, Any]:
    return _interval(rate, *stats.wilson_interval(rate, n, level))


def median_interval(eps_clip: np.ndarray, n_boot: int, seed: int, level: float) -> stats.Interval:
    """Median ε* over the base set (``nan`` entries of :mod:`evaluation.stats`' encoding left out, ``inf`` kept) with
    its percentile-bootstrap interval over the clips (:func:`evaluation.stats.percentile_interval`)."""
    eps_clip = np.asarray(eps_clip, dtype=np.float64)
    with warnings.catch_warnings():  # a draw without base clips has no median: nan, counted as undefined
        warnings.simplefilter("ignore", RuntimeWarning)
        value = float(np.nanmedian(eps_clip)) if eps_clip.size else math.nan
        draws = np.nanmedian(eps_clip[stats.bootstrap_indices(eps_clip.size, n_boot, seed)], axis=1)
    return stats.percentile_interval(draws, value, level)


def _metrics(found: Evaluated, tm: ThreatModel, ref: tuple[str, np.ndarray] | None) -> dict[str, Any]:
    p, ens = tm.protocol, found.ensemble
    n = int(ens.labels.numel())
    eps_clip = ens.eps_clip().numpy()
    med = median_interval(eps_clip, p.n_boot, p.seed, p.confidence)
    eps_r = None
    if ref is not None:
        ratio = stats.clip_ratio_intervals(eps_clip, ref[1], n_boot=p.n_boot, seed=p.seed, level=p.confidence)["eps_r"]
        eps_r = _interval(ratio.value, ratio.low, ratio.high, reference=ref[0])
    return {"clean_accuracy": _rate(ens.summary["clean_accuracy"], n, p.confidence),
            "robust_accuracy": _rate(ens.summary["adv_accuracy"], n, p.confidence),
            "eps_star_median": _interval(med.value, med.low, med.high), "eps_r": eps_r}


def _certified(model: Model, tm: ThreatModel, waves: Tensor, labels: Tensor,
               say: Callable[[str], None]) -> dict[str, Any] | None:
    """Certified accuracy at the budget of a smoothed model whose smoothing domain is the threat model's (L2, or L∞
    through the L2 ball of radius ε·√d), with its Wilson interval; ``None`` otherwise."""
    defense = model.defense
    if not is_smoothing(defense) or tm.norm not in ("l2", "linf"):
        return None
    domain = str(defense.get("domain", "representation"))
    if domain != tm.domain:
        return None
    radius = tm.budget
    if tm.norm == "linf":
        with torch.no_grad():
            radius *= math.sqrt(model.base.to_domain(waves[:1], domain)[0].numel())
    ev_cfg = tm.eval_config()
    ev_cfg.certify_radii = {domain: [radius]}
    say("certifying the smoothed model")
    record = certify(model.base, defense, waves, labels, ev_cfg)
    pred, rad = torch.tensor(record["pred"]), torch.tensor(record["radius"], dtype=torch.float64)
    rate = float(((pred == labels) & (rad >= radius)).double().mean())
    low, high = certified_accuracy_interval(pred, rad, labels, [radius], ev_cfg.confidence)[0].tolist()
    return _interval(rate, low, high)


def budget_snr_db(tm: ThreatModel, waves: Tensor) -> float | None:
    """Median SNR over the clips of a perturbation at the budget (waveform L∞: every sample at ±ε, the largest L2
    the ball holds; L2: norm ε), :func:`evaluation.metrics.snr_db`; ``None`` for other threat models."""
    if tm.domain != "waveform" or tm.norm not in ("linf", "l2"):
        return None
    per_sample = tm.budget if tm.norm == "linf" else tm.budget / math.sqrt(waves[0].numel())
    snr = M.snr_db(waves, waves + per_sample)
    return round(float(np.median(snr.numpy())), 4)


def _evaluation(found: Evaluated, tm: ThreatModel, waves: Tensor, labels: Tensor, wall_s: float) -> dict[str, Any]:
    p = tm.protocol
    return {"domain": tm.domain, "norm": tm.norm, "budget": tm.budget, "budget_snr_db": budget_snr_db(tm, waves),
            "attacks": list(found.members),
            "per_attack_robust_accuracy": {k: ev.summary["adv_accuracy"] for k, ev in found.members.items()},
            "n_clips": int(labels.numel()), "seed": p.seed, "wall_time_s": wall_s, "mlflow_run_id": None,
            "eps_star_per_clip": encode_per_clip(labels.tolist(), found.ensemble.eps_clip().tolist())}


def _reference(reference: str, tm: ThreatModel, labels: Tensor, class_names: list[str], waves: Tensor, uri: str,
               say: Callable[[str], None]) -> tuple[str, np.ndarray]:
    """The reference's name and per-clip ensemble ε* on the threat model's clips: read from an entry (``.json``)
    or measured on one of our checkpoints."""
    path = Path(reference)
    if path.suffix == ".json":
        entry = load_entry(path, tm.config_hash)
        if entry["threat_model"]["name"] != tm.name:
            raise EntryError(f"reference entry {path} is of threat model {entry['threat_model']['name']}, not {tm.name}")
        found = per_clip(entry)
        if found is None:
            raise EntryError(f"reference entry {path} holds no evaluation.eps_star_per_clip: eps_r needs each clip's "
                             "eps*; benchmark the reference again")
        if found[0] != labels.tolist():
            raise EntryError(f"reference entry {path} was evaluated on other clips than threat model {tm.name}'s")
        return entry["model"]["name"], np.asarray(found[1], dtype=np.float64)
    model = load_model(path, tm, class_names, waves.shape[-1], uri)
    say(f"attacking the reference {path.name}")
    return path.name, evaluate_model(model, tm, waves, labels, say).ensemble.eps_clip().numpy()


def _record(entry: dict[str, Any], found: Evaluated, tm: ThreatModel, path: Path, uri: str,
            outputs: Path) -> Benchmark:
    """Log the entry's run (metrics, entry, per-clip record) and write the entry file; the run is marked finished
    only once the file is written."""
    setup_tracking(EXPERIMENT, uri, outputs)
    run_tags = tags(kind="benchmark", threat_model=tm.name, threat_model_hash=tm.config_hash,
                    model=entry["model"]["name"])
    with mlflow.start_run(run_name=f"{tm.name}/{entry['model']['name']}", tags=run_tags) as run:
        entry["evaluation"]["mlflow_run_id"] = run.info.run_id
        mlflow.log_params(flatten({"threat_model": entry["threat_model"], "model": entry["model"]}))
        mlflow.log_metrics(_flat_metrics(entry, found.found_by))
        mlflow.log_dict(entry, "entry.json")
        mlflow.log_dict({**to_record(found.ensemble), "found_by": found.found_by}, RECORD_ARTIFACT)
        written = write_entry(entry, path)
        mark_finished()
    return Benchmark(entry, written, run.info.run_id)


def _flat_metrics(entry: dict[str, Any], found_by: list[str]) -> dict[str, float]:
    """The entry's metrics as MLflow metrics: ``<metric>``, ``<metric>_ci_low``/``_ci_high`` (null ones left out),
    ``robust_accuracy.<attack>``, ``budget_snr_db`` and ``found_by.<attack>``."""
    out: dict[str, float] = {}
    for key, found in entry["metrics"].items():
        if found is None:
            continue
        for part, suffix in (("value", ""), ("low", "_ci_low"), ("high", "_ci_high")):
            if found[part] is not None:
                out[key + suffix] = float(found[part])
    evaluation = entry["evaluation"]
    out.update({f"robust_accuracy.{k}": v for k, v in evaluation["per_attack_robust_accuracy"].items()})
    out.update({f"found_by.{k}": float(v) for k, v in found_by_counts(found_by).items()})
    if evaluation["budget_snr_db"] is not None:
        out["budget_snr_db"] = evaluation["budget_snr_db"]
    return out

