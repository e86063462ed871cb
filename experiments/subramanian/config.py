"""The Subramanian et al. study's configuration (``configs/experiment/subramanian.yaml``), resolved and checked.

A study file names the models trained on one data set and representation set, the attacks and the
clips they run on::

    study: subramanian
    name: subramanian                       # MLflow experiment
    dataset: gm_instruments             # configs/dataset/, shared by every model
    train: demo                         # configs/train/, shared by every model
    models:                             # name -> front-end and victim options, per-model overrides
      apcnn: {frontend: mel_db_seed001_8k, victim: averagepool_cnn}
      m5: {frontend: waveform, victim: m5, overrides: {victim.width: 32}}
    attacks:                            # label -> attack option (configs/attack/) and its overrides
      fgsm: {option: fgsm, domain: waveform, norm: linf}
      lbfgs: {option: lbfgs, targeted: true}
    fixed_snr_db: 20.0                  # budget of fixed-budget attacks (noise, FGSM), as an SNR per clip
    transfer: [deepfool, cw]            # untargeted attacks whose examples are replayed on every model
    targeted_classes: [cello, violin]   # targeted attacks: every ordered pair of these classes
    evaluation: {n_examples: 36, ...}   # see EvalOptions
    overrides: {dataset.clip_seconds: 0.5, train.epochs: 6}

Command-line overrides: ``dataset.*``, ``train.*``, ``frontend.*`` and ``victim.*`` apply to every model;
``models.<model>.<group>=<option>`` swaps one model's option and ``models.<model>.<group>.<key>=v`` sets
one model's key; ``attacks.<label>.<key>=v``; ``evaluation.<field>=v``; ``fixed_snr_db``, ``transfer``,
``targeted_classes`` and ``name`` directly. Anything wrong is a one-line ConfigError naming it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from attacks import create_attack
from defense.config import compose, load_option, set_dotted
from victims.registry import ConfigError, to_dataclass

STUDY = "subramanian"
ALIASES = ("seed001",)
"""Earlier names of the study, accepted as ``study:`` values (and MLflow tags) and read as :data:`STUDY`."""
MODEL_GROUPS = ("dataset", "frontend", "victim", "train")
KNOWN = {"study", "name", "dataset", "train", "models", "attacks", "fixed_snr_db", "transfer", "targeted_classes",
         "evaluation", "overrides"}


@dataclass
class EvalOptions:
    """How the attacks are run (``evaluation:``).

    Attributes:
        n_examples: test clips of the untargeted attacks and the transfer (Subramanian et al.: 6 per class), a seeded,
            class-balanced subset shared by every model.
        targeted_per_class: test clips per targeted class, each attacked towards every other targeted
            class (Subramanian et al.: 6).
        batch_size: attempts per attack call.
        seed: seeds the clip selection and the attacks' randomness.
        n_boot: bootstrap resamples of the clips for every interval.
        confidence: level of every interval.
        wavs: adversarial examples per model and attack written as WAV files.
        threads: CPU threads torch uses during the run (``None``: leave torch's default). On a 2-core
            machine shared with other jobs, one thread ran these small models about twice as fast.
        base_set: the attempts attacked: ``correct`` (Subramanian et al.: clips the model classifies correctly) or
            ``all`` (every attempt, the clean prediction standing in for the label; attempts already predicted as their
            target are left out), which the dry run uses.
    """

    n_examples: int = 36
    targeted_per_class: int = 2
    batch_size: int = 64
    seed: int = 0
    n_boot: int = 1000
    confidence: float = 0.95
    wavs: int = 1
    threads: int | None = None
    base_set: Literal["correct", "all"] = "correct"


@dataclass
class Study:
    """A resolved Subramanian et al. study.

    Attributes:
        name: MLflow experiment name.
        models: model name → resolved training config (groups dataset, frontend, victim, train, defense).
        attacks: attack label → attack config (``name`` = registry name, other keys its arguments).
        targeted: attack label → whether it is targeted.
        fixed_snr_db: SNR every fixed-budget attack is scaled to.
        transfer: untargeted attack labels whose examples are replayed on every model (Table 5).
        targeted_classes: class names of the targeted attacks.
        evaluation: how the attacks are run.
        source: the study file with the command-line overrides applied (logged; the report reads it).
    """

    name: str
    models: dict[str, dict[str, Any]]
    attacks: dict[str, dict[str, Any]]
    targeted: dict[str, bool]
    fixed_snr_db: float | None
    transfer: list[str]
    targeted_classes: list[str]
    evaluation: EvalOptions
    source: dict[str, Any] = field(default_factory=dict)


def load_study(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Study:
    """Resolve a Subramanian et al. study file with command-line ``overrides``.

    Raises:
        ConfigError: for an unknown key, option or value, an attack outside the waveform domain, a
            transfer of an unknown or targeted attack, repeated targeted classes (a pair with source =
            target), or models trained on different data (their class sets could differ).
    """
    spec = copy.deepcopy(dict(raw))
    extra = sorted(set(spec) - KNOWN)
    if extra:
        raise ConfigError(f"unknown key '{extra[0]}' in study subramanian; accepted: {', '.join(sorted(KNOWN))}")
    if spec.get("study") in ALIASES:
        spec["study"] = STUDY
    common = dict(spec.pop("overrides", None) or {})
    models = {name: dict(entry or {}) for name, entry in (spec.get("models") or {}).items()}
    attacks = {label: dict(entry or {}) for label, entry in (spec.get("attacks") or {}).items()}
    for key, value in (overrides or {}).items():
        _route(key, value, spec, common, models, attacks)
    evaluation = to_dataclass(EvalOptions, spec.get("evaluation") or {}, "evaluation")
    resolved = _models(spec, models, common)
    built, targeted = _attacks(attacks, spec.get("fixed_snr_db"))
    transfer = list(spec.get("transfer") or [])
    for label in transfer:
        if label not in built or targeted[label]:
            raise ConfigError(f"transfer names '{label}', which is not an untargeted attack of the study "
                              f"(untargeted: {', '.join(k for k, t in targeted.items() if not t)})")
    classes = _targeted_classes(spec.get("targeted_classes"), any(targeted.values()))
    source = {**spec, "models": models, "attacks": attacks, "overrides": common}
    return Study(str(spec.get("name") or STUDY), resolved, built, targeted, spec.get("fixed_snr_db"), transfer,
                 classes, evaluation, source)


def _route(key: str, value: Any, spec: dict[str, Any], common: dict[str, Any], models: dict[str, dict[str, Any]],
           attacks: dict[str, dict[str, Any]]) -> None:
    """Send one command-line override to the part of the study it sets."""
    parts = key.split(".")
    if parts[0] in MODEL_GROUPS:
        common[key] = value
    elif parts[0] == "models" and len(parts) >= 3:
        if parts[1] not in models:
            raise ConfigError(f"unknown model '{parts[1]}' in override '{key}'; models: {', '.join(models)}")
        if len(parts) == 3 and parts[2] in ("frontend", "victim"):
            models[parts[1]][parts[2]] = value
        else:
            models[parts[1]].setdefault("overrides", {})[".".join(parts[2:])] = value
    elif parts[0] == "attacks" and len(parts) >= 3:
        if parts[1] not in attacks:
            raise ConfigError(f"unknown attack '{parts[1]}' in override '{key}'; attacks: {', '.join(attacks)}")
        attacks[parts[1]][".".join(parts[2:])] = value
    elif parts[0] == "evaluation" and len(parts) == 2:
        spec.setdefault("evaluation", {})[parts[1]] = value
    elif len(parts) == 1 and parts[0] in ("name", "fixed_snr_db", "transfer", "targeted_classes"):
        spec[parts[0]] = value
    else:
        raise ConfigError(f"unknown key '{key}' for study subramanian")


def _models(spec: dict[str, Any], models: dict[str, dict[str, Any]], common: dict[str, Any]
            ) -> dict[str, dict[str, Any]]:
    """Compose every model's training config and check that they share one data set."""
    if len(models) < 2:
        raise ConfigError("subramanian needs at least two models (it compares them and transfers between them)")
    resolved = {}
    for name, entry in models.items():
        unknown = sorted(set(entry) - {"frontend", "victim", "overrides"})
        if unknown or "frontend" not in entry or "victim" not in entry:
            raise ConfigError(f"model '{name}' needs frontend and victim (and optional overrides), got "
                              f"{', '.join(sorted(entry)) or 'nothing'}")
        base = {"dataset": spec.get("dataset", "gm_instruments"), "train": spec.get("train", "default"),
                "frontend": entry["frontend"], "victim": entry["victim"], "defense": "none"}
        try:
            resolved[name] = compose(base, {**common, **(entry.get("overrides") or {})})
        except ConfigError as err:
            raise ConfigError(f"model '{name}': {err}") from None
    first = next(iter(resolved))
    for name, cfg in resolved.items():
        if cfg["dataset"] != resolved[first]["dataset"]:
            same_classes = cfg["dataset"].get("classes") == resolved[first]["dataset"].get("classes")
            raise ConfigError(f"models '{first}' and '{name}' are trained on different "
                              f"{'data' if same_classes else 'class sets'}: Subramanian et al. compare models of one "
                              "data set and transfer examples between them")
    return resolved


def _attacks(attacks: dict[str, dict[str, Any]], fixed_snr_db: Any) -> tuple[dict[str, dict[str, Any]],
                                                                            dict[str, bool]]:
    """Load each attack option, apply its overrides and build it once to check it."""
    if not attacks:
        raise ConfigError("subramanian needs attacks")
    if fixed_snr_db is not None and not isinstance(fixed_snr_db, (int, float)):
        raise ConfigError(f"fixed_snr_db must be a number, got {fixed_snr_db!r}")
    built, targeted = {}, {}
    for label, entry in attacks.items():
        entry = dict(entry)
        if "option" not in entry:
            raise ConfigError(f"attack '{label}' needs 'option' (a file of configs/attack/)")
        try:
            cfg = load_option("attack", str(entry.pop("option")))
            for key, value in entry.items():
                set_dotted(cfg, key, value)
            attack = create_attack(cfg["name"], **{k: v for k, v in cfg.items() if k != "name"})
        except (ConfigError, TypeError, ValueError) as err:
            raise ConfigError(f"attack '{label}': {err}") from None
        if attack.domain != "waveform":
            raise ConfigError(f"attack '{label}' runs in the {attack.domain} domain: Subramanian et al. attack the "
                              "waveform (SNR, transfer between representations); set domain: waveform")
        if attack.fixed_budget and (fixed_snr_db is None or not attack.per_example_budgets):
            raise ConfigError(f"fixed-budget attack '{label}' is scaled per clip to fixed_snr_db: set fixed_snr_db "
                              "(Subramanian et al.: 20 dB) and use an attack that takes per-example budgets")
        built[label], targeted[label] = cfg, bool(attack.targeted)
    return built, targeted


def _targeted_classes(value: Any, needed: bool) -> list[str]:
    classes = list(value or [])
    if not all(isinstance(c, str) for c in classes):
        raise ConfigError(f"targeted_classes must be class names, got {value!r}")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise ConfigError(f"targeted_classes repeats '{repeated[0]}': a targeted pair needs source != target")
    if needed and len(classes) < 2:
        raise ConfigError("targeted attacks need at least two targeted_classes (every ordered pair is attacked)")
    return classes
