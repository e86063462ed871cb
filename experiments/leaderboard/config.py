"""The leaderboard study's configuration: threat models, backbones × defenses, and the ε_r reference.

An experiment file with ``study: leaderboard`` (``configs/experiment/leaderboard_fsdd.yaml``)::

    study: leaderboard
    name: leaderboard_fsdd             # MLflow experiment; entries in <outputs>/leaderboard/<name>/<threat model>/
    threat_models: [fsdd_wave_linf, fsdd_wave_l2]   # configs/threat_model options (or .yaml files)
    train: demo                        # configs/train option, every model's schedule
    backbones:                         # entry-name suffix -> front-end and backbone options
      cnn: {frontend: stft_db_128, victim: averagepool_cnn}
    defenses:                          # entry-name prefix -> a configs/defense option with its keys overridden
      original: {defense: none}
      pgd_at: {defense: pgd_at_wave, eps: 0.25}
    reference: original                # the defense whose model (of the same backbone) is every eps_r reference
    train_data: {split.train_fraction: 0.5}   # training-split-only keys of the threat models' data set
    data_root: null                    # where this machine keeps the data set (not part of any hash)
    overrides: {train.epochs: 3}       # dotted keys, as on the command line

Every model is trained on the training split of the data set the threat models share (they must share one, but
for where it lies) and benchmarked under each threat model (:func:`leaderboard.benchmark.benchmark`); its entry
is named ``<defense>_<backbone>``. ``train_data`` may only change which training clips are used
(:data:`TRAIN_ONLY`): the test split, the threat models' clips, stays theirs. Every bad key or value is a one-line
:class:`~victims.registry.ConfigError` naming it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from defense.config import compose, load_option, set_dotted
from defense.inference import is_transform
from evaluation.tracking import stable_key
from leaderboard.threat_model import LOCATION_KEYS, ThreatModel, load_threat_model
from victims.registry import ConfigError

STUDY = "leaderboard"
STUDY_KEYS = ("study", "name", "threat_models", "train", "backbones", "defenses", "reference", "train_data",
              "data_root", "overrides")
TRAIN_ONLY = ("split.train_fraction", "split.val_fraction", "augment.pitch_factors", "augment.keep_original")
"""Data set keys ``train_data`` may set: they choose the training and validation clips, never the test clips."""


@dataclass(frozen=True)
class ModelSpec:
    """One model of the leaderboard.

    Attributes:
        name: its entry name, ``<defense>_<backbone>``.
        backbone, defense: its labels in ``backbones:`` and ``defenses:``.
        config: the training config of :func:`defense.pipeline.train_from_config`.
    """

    name: str
    backbone: str
    defense: str
    config: dict[str, Any]


@dataclass
class Study:
    """A resolved leaderboard study.

    Attributes:
        name: the MLflow experiment.
        threat_models: name -> the resolved threat model.
        threat_model_sources: name -> what :func:`leaderboard.threat_model.load_threat_model` is given for it
            (an option name or a YAML path).
        models: entry name -> model, references first.
        reference: the defense label of the ε_r reference models.
        data_root: where this machine keeps the data set.
        source: the resolved config (its hash keys the parent run).
    """

    name: str
    threat_models: dict[str, ThreatModel]
    threat_model_sources: dict[str, str]
    models: dict[str, ModelSpec]
    reference: str
    data_root: str | None = None
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Stable hash of the resolved study (the parent MLflow run is found by it)."""
        return stable_key([self.source])

    def reference_of(self, model: ModelSpec) -> ModelSpec | None:
        """The ε_r reference of ``model``: the reference defense's model of its backbone (``None`` for itself)."""
        if model.defense == self.reference:
            return None
        return self.models[entry_name(self.reference, model.backbone)]


def entry_name(defense: str, backbone: str) -> str:
    """The entry name of a model."""
    return f"{defense}_{backbone}"


def load_study(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Study:
    """Resolve and validate a leaderboard experiment (file contents plus command-line overrides).

    Raises:
        ConfigError: one line naming the wrong key or value: an unknown key, option or threat model, threat models
            of different data, a ``train_data`` key that would change the test clips, a defense with ``eps: auto``
            (no model is measured for it here) or an inference-time one, an unknown reference.
    """
    unknown = sorted(set(raw) - set(STUDY_KEYS))
    if unknown:
        raise ConfigError(f"unknown key '{unknown[0]}' in a leaderboard experiment; accepted: {', '.join(STUDY_KEYS)}")
    for key in ("threat_models", "backbones", "defenses"):
        if not raw.get(key):
            raise ConfigError(f"a leaderboard experiment needs '{key}:'")
    if not isinstance(raw["threat_models"], list):
        raise ConfigError("threat_models must be a list of configs/threat_model options")
    for key in ("backbones", "defenses"):
        if not isinstance(raw[key], Mapping):
            raise ConfigError(f"{key} must be a mapping of labels to entries")
    spec = {k: copy.deepcopy(v) for k, v in raw.items() if k != "study"}
    spec["backbones"] = {str(k): _backbone(str(k), v) for k, v in raw["backbones"].items()}
    spec["defenses"] = {str(k): _defense(str(k), v) for k, v in raw["defenses"].items()}
    spec.setdefault("train_data", {})
    spec.setdefault("data_root", None)
    spec.setdefault("reference", "original")
    cfg = compose(spec, overrides)
    data_root = cfg["data_root"]
    sources = [str(s) for s in cfg["threat_models"]]
    threat_models = {}
    for source in sources:
        tm = load_threat_model(source, data_root=data_root)
        if tm.name in threat_models:
            raise ConfigError(f"threat model '{tm.name}' is listed twice")
        threat_models[tm.name] = tm
    dataset = _shared_dataset(list(threat_models.values()))
    train_data = _train_data(dataset, cfg["train_data"] or {})
    reference = str(cfg["reference"])
    if reference not in cfg["defenses"]:
        raise ConfigError(f"reference '{reference}' is not one of the defenses: {', '.join(cfg['defenses'])}")
    order = [reference, *(d for d in cfg["defenses"] if d != reference)]
    models = {}
    for defense in order:
        for backbone, parts in cfg["backbones"].items():
            name = entry_name(defense, backbone)
            models[name] = ModelSpec(name, backbone, defense, {
                "dataset": train_data, "frontend": parts["frontend"], "victim": parts["victim"], "train": cfg["train"],
                "defense": _checked_defense(defense, cfg["defenses"][defense])})
    return Study(str(cfg.get("name") or STUDY), threat_models, dict(zip(threat_models, sources)), models, reference,
                 data_root, cfg)


def _backbone(label: str, entry: Any) -> dict[str, Any]:
    """``{frontend: <option>, victim: <option>}`` expanded, so that every key can be overridden."""
    if not isinstance(entry, Mapping) or set(entry) != {"frontend", "victim"}:
        raise ConfigError(f"backbone '{label}' must be {{frontend: <configs/frontend option>, victim: "
                          f"<configs/victim option>}}, got {entry!r}")
    return {group: load_option(group, str(entry[group])) if isinstance(entry[group], str) else dict(entry[group])
            for group in ("frontend", "victim")}


def _defense(label: str, entry: Any) -> dict[str, Any]:
    """``{defense: <option>, key: value, ...}`` merged over its ``configs/defense`` option."""
    if not isinstance(entry, Mapping) or "defense" not in entry:
        raise ConfigError(f"defense '{label}' must be a mapping with 'defense: <configs/defense option>'")
    out = load_option("defense", str(entry["defense"]))
    for key, value in entry.items():
        if key != "defense":
            out[key] = value
    return {"option": str(entry["defense"]), **out}


def _checked_defense(label: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The defense config a model trains with, refused if it cannot be trained here. The option label is dropped,
    and so is ``eps_fraction``: the share of a measured budget (``eps: auto``, :func:`defense.column.auto_defense_eps`)
    means nothing beside a stated ``eps``."""
    out = {k: v for k, v in cfg.items() if k not in ("option", "eps_fraction")}
    if is_transform(out):
        raise ConfigError(f"defense '{label}' ({cfg['option']}) is an inference-time transform; a leaderboard "
                          "trains every model (benchmark a transform with advaudio benchmark --transform)")
    if out.get("eps") == "auto":
        raise ConfigError(f"defense '{label}' ({cfg['option']}) has eps: auto, which a grid measures on its original "
                          f"model; a leaderboard trains at a stated budget: set defenses.{label}.eps")
    return out


def _identity(dataset: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dataset.items() if k not in LOCATION_KEYS}


def _shared_dataset(threat_models: list[ThreatModel]) -> dict[str, Any]:
    """The data set every threat model evaluates on (the first one's, with its location)."""
    first = threat_models[0]
    for tm in threat_models[1:]:
        if _identity(tm.dataset) != _identity(first.dataset):
            raise ConfigError(f"threat models {first.name} and {tm.name} evaluate on different data; a leaderboard "
                              "trains one set of models for threat models of one data set")
    return copy.deepcopy(first.dataset)


def _train_data(dataset: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The training data: the threat models' data set with ``train_data`` applied (:data:`TRAIN_ONLY` keys)."""
    out = copy.deepcopy(dataset)
    for key, value in changes.items():
        if key not in TRAIN_ONLY:
            raise ConfigError(f"train_data.{key}: only keys that leave the test clips alone may change the training "
                              f"data ({', '.join(TRAIN_ONLY)})")
        set_dotted(out, key, value)
    return out


def source_path(study: Study, name: str) -> str | Path:
    """What :func:`leaderboard.benchmark.benchmark` is given for threat model ``name``."""
    return study.threat_model_sources[name]
