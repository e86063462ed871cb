"""The Prinz & Flexer study's configuration: one victim, waveform attacks with their target modes, evaluation.

An experiment file with ``study: prinz_flexer`` (``configs/experiment/prinz_flexer.yaml``)::

    study: prinz_flexer
    name: prinz_flexer                  # MLflow experiment
    dataset: gm_instruments        # configs/<group>/<option>.yaml, as for `advaudio train`
    frontend: mel_db
    victim: averagepool_cnn
    train: seed000
    attacks:                       # one table row each: attack: <configs/attack option>, its keys overridden
      pgdn: {attack: pgdn, eps: 0.0005, lr: 1.0e-5, paper: pgdn_150}
      cw: {attack: cw_seed000, targets: all, paper: cw_180}
    evaluation: {n_examples: 48, snr_trim: 2048}   # see EvalOptions
    overrides: {train.epochs: 15}  # dotted keys, as on the command line

``targets`` (absent: untargeted) makes an attack targeted (Prinz & Flexer, Sec. 5.1 and 5.3): ``random`` (one
class per clip other than its clean prediction, drawn with ``evaluation.seed``), ``all`` (every class
that is neither the clip's true class nor its clean prediction: the source × target matrix), a class
name (every clip not already predicted as it), or a list of ``[source, target]`` class pairs (the clips
of the source class aimed at the target). ``paper`` names the line of Prinz & Flexer's Table 1 the row is
compared with in the report's caption. Command-line overrides reach every key:
``evaluation.n_examples=16``, ``attacks.cw.max_iterations=50``, ``attacks.cw.targets=accordion``.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from attacks import ATTACKS, Attack
from attacks.base import ADAPTIVE_KEYS
from defense.config import compose, load_option
from evaluation.tracking import stable_key
from victims.registry import ConfigError, check_kwargs, to_dataclass

STUDY = "prinz_flexer"
ALIASES = ("seed000",)
"""Earlier names of the study, accepted as ``study:`` values (and MLflow tags) and read as :data:`STUDY`."""
STUDY_KEYS = ("study", "name", "dataset", "frontend", "victim", "train", "attacks", "evaluation", "overrides")
MODES = ("untargeted", "random", "all", "class", "pairs")
PAPER_LINES = ("clean", "fgsm_150", "pgdn_150", "cw_150", "cw_multiscale_150", "fgsm_180", "pgdn_180", "cw_180",
               "cw_multiscale_180", "cw_accordion", "cw_multiscale_accordion")
"""Lines of Prinz & Flexer's results an attack row can be compared with (Table 1's two settings, Sec. 5.3)."""


@dataclass
class EvalOptions:
    """How the attacks are run and summarised (``evaluation:``).

    Attributes:
        n_examples: test clips attacked (a seeded, class-balanced subset; Prinz & Flexer attack their 200
            validation clips, correctly classified or not).
        seed: seeds the clips, random targets, PGDn's random start and the noise (Prinz & Flexer: 21).
        snr_trim: samples left out at each end of a clip for the SNR (Prinz & Flexer: 2048).
        batch_size: attempts per attack call.
        n_boot: bootstrap resamples of the clips for every interval.
        confidence: level of every interval.
        wavs: successful attempts per attack written as WAV (original, adversarial, perturbation, noise).
    """

    n_examples: int = 48
    seed: int = 21
    snr_trim: int = 2048
    batch_size: int = 64
    n_boot: int = 1000
    confidence: float = 0.95
    wavs: int = 2


@dataclass(frozen=True)
class AttackSpec:
    """One attack row of the study.

    Attributes:
        name: row name (the key under ``attacks:``).
        option: the ``configs/attack`` option it starts from.
        registry: the attack's registered name.
        kwargs: constructor keywords (``targeted`` set from ``targets``).
        mode: one of :data:`MODES`.
        targets: the class (``class``), the ``[source, target]`` pairs (``pairs``), else ``None``.
        paper: line of Prinz & Flexer's results it is compared with, or ``None``.
    """

    name: str
    option: str
    registry: str
    kwargs: dict[str, Any]
    mode: str
    targets: Any = None
    paper: str | None = None

    def build(self) -> Attack:
        """The attack object."""
        return ATTACKS.create(self.registry, **self.kwargs)

    @property
    def config(self) -> dict[str, Any]:
        """What identifies the row's results (for resuming)."""
        return {"option": self.option, "registry": self.registry, "kwargs": self.kwargs, "mode": self.mode,
                "targets": self.targets}


@dataclass
class Study:
    """A resolved Prinz & Flexer study."""

    name: str
    train_cfg: dict[str, Any]
    attacks: dict[str, AttackSpec]
    evaluation: EvalOptions
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Stable hash of the resolved study (the parent MLflow run is found by it)."""
        return stable_key([self.source])


def load_study(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Study:
    """Resolve and validate a Prinz & Flexer experiment (file contents plus command-line overrides).

    Raises:
        ConfigError: one line naming the wrong key or value: an unknown key, attack or class, an attack
            outside the waveform domain, a targeted pair with source = target, a bad target mode, an SNR
            window longer than the clip.
    """
    unknown = sorted(set(raw) - set(STUDY_KEYS))
    if unknown:
        raise ConfigError(f"unknown key '{unknown[0]}' in a prinz_flexer experiment; accepted: {', '.join(STUDY_KEYS)}")
    entries = raw.get("attacks")
    if not isinstance(entries, Mapping) or not entries:
        raise ConfigError("a prinz_flexer experiment needs 'attacks:', a mapping of row names to attack entries")
    spec = {k: copy.deepcopy(v) for k, v in raw.items() if k != "study"}
    spec["defense"] = "none"
    spec["attacks"] = {str(name): _expand(str(name), entry) for name, entry in entries.items()}
    spec["evaluation"] = {**asdict(EvalOptions()), **(raw.get("evaluation") or {})}
    cfg = compose(spec, overrides)
    evaluation = to_dataclass(EvalOptions, cfg["evaluation"], "evaluation")
    _check_evaluation(evaluation, cfg["dataset"])
    attacks = {name: _attack_spec(name, entry) for name, entry in cfg["attacks"].items()}
    train_cfg = {k: cfg[k] for k in ("dataset", "frontend", "victim", "train", "defense")}
    return Study(str(cfg.get("name") or STUDY), train_cfg, attacks, evaluation, cfg)


def _expand(name: str, entry: Any) -> dict[str, Any]:
    """An attack entry merged over its ``configs/attack`` option, so every key can be overridden."""
    if not isinstance(entry, Mapping) or "attack" not in entry:
        raise ConfigError(f"attack row '{name}' must be a mapping with 'attack: <configs/attack option>'")
    option = str(entry["attack"])
    return {"targets": None, "paper": None, **load_option("attack", option), **dict(entry)}


def _attack_spec(name: str, entry: dict[str, Any]) -> AttackSpec:
    kwargs = {k: v for k, v in entry.items() if k not in ("attack", "targets", "paper", "name")}
    registry = str(entry.get("name") or entry["attack"])
    ctor = ATTACKS.get(registry)
    check_kwargs(ctor, {k: v for k, v in kwargs.items() if k not in ADAPTIVE_KEYS},
                 f"attack '{registry}' (row '{name}')")
    mode, targets = _mode(name, entry.get("targets"))
    if kwargs.get("targeted") and mode == "untargeted":
        raise ConfigError(f"attack row '{name}' is targeted: set targets: random | all | <class> | "
                          "[[source, target], ...]")
    kwargs["targeted"] = mode != "untargeted"
    paper = entry.get("paper")
    if paper is not None and paper not in PAPER_LINES:
        raise ConfigError(f"attack row '{name}': unknown paper line '{paper}'; known: {', '.join(PAPER_LINES)}")
    spec = AttackSpec(name, str(entry["attack"]), registry, kwargs, mode, targets, paper)
    try:
        attack = spec.build()
    except ConfigError as err:  # a bad name, key or value, named by the registry
        raise ConfigError(f"attack row '{name}': {err}") from None
    if attack.domain != "waveform":
        raise ConfigError(f"attack row '{name}' works in the {attack.domain} domain; Prinz & Flexer attack the "
                          "waveform end to end (set domain: waveform): its SNR and WAVs need a waveform, and a "
                          "representation has no exact inverse to give one back")
    return spec


def _mode(name: str, targets: Any) -> tuple[str, Any]:
    """Target mode and its argument from a row's ``targets`` value."""
    if targets is None:
        return "untargeted", None
    if targets in ("random", "all"):
        return str(targets), None
    if isinstance(targets, str):
        return "class", targets
    if isinstance(targets, (list, tuple)) and targets:
        pairs = []
        for pair in targets:
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(c, str) for c in pair)):
                raise ConfigError(f"attack row '{name}': targets pair {pair!r} must be [source, target] class names")
            if pair[0] == pair[1]:
                raise ConfigError(f"attack row '{name}': targeted pair ({pair[0]} -> {pair[1]}) has source = target; "
                                  "a targeted attack must aim at another class")
            pairs.append([pair[0], pair[1]])
        return "pairs", pairs
    raise ConfigError(f"attack row '{name}': targets must be random, all, a class name or [[source, target], ...], "
                      f"got {targets!r}")


def _check_evaluation(ev: EvalOptions, dataset: Mapping[str, Any]) -> None:
    if ev.n_examples < 1 or ev.batch_size < 1 or ev.n_boot < 1 or ev.wavs < 0:
        raise ConfigError("evaluation.n_examples, batch_size and n_boot must be >= 1 and wavs >= 0")
    if not 0 < ev.confidence < 1:
        raise ConfigError(f"evaluation.confidence must lie in (0, 1), got {ev.confidence}")
    seconds, rate = dataset.get("clip_seconds"), dataset.get("sample_rate")
    if isinstance(seconds, (int, float)) and isinstance(rate, int):
        length = int(round(seconds * rate))
        if ev.snr_trim < 0 or 2 * ev.snr_trim >= length:
            raise ConfigError(f"evaluation.snr_trim {ev.snr_trim} leaves no sample of a {length}-sample clip "
                              f"({seconds} s at {rate} Hz); use at most {(length - 1) // 2}")


def check_classes(study: Study, class_names: list[str]) -> None:
    """Every class a row names exists in the data set.

    Raises:
        ConfigError: naming the unknown class and listing the known ones.
    """
    for spec in study.attacks.values():
        named = [spec.targets] if spec.mode == "class" else [c for p in spec.targets or [] for c in p]
        for cls in named:
            if cls not in class_names:
                raise ConfigError(f"attack row '{spec.name}': unknown class '{cls}'; known: {', '.join(class_names)}")
