"""The Koerich et al. study's config: composed from ``configs/`` options, validated before anything runs.

Layout of ``configs/experiment/koerich*.yaml`` (Koerich et al. 2020, Sections II-IV)::

    study: koerich
    name: koerich                    # MLflow experiment
    dataset: gtzan                   # a dataset option; segment: true cuts recordings into windows
    train: seed003                   # a train option, copied into every model
    spectrogram_models:              # 2D CNNs, each attacked on its dB spectrogram (Tables III, V)
      stft: {frontend: stft_db, victim: koerich_cnn2d}
      mel: {frontend: mel_db_seed003, victim: koerich_cnn2d}
    waveform_model: {frontend: waveform, victim: abdoli_cnn1d}   # the 1D CNN (Tables IV, VI)
    attacks:                         # attack configs, run on the dB spectrogram (front-end units)
      fgsm: {name: fgsm, norm: linf, eps: 0.3}
    test_folds: [0, 1, 2]            # one run per held-out fold (kfold/official splits); null: as configured
    evaluation: {...}                # EvalOptions
    overrides: {train.epochs: 2, spectrogram_models.stft.frontend.n_fft: 256, ...}

``train.*`` overrides reach every model's schedule; ``<models>.<key>.train.*`` one model's. Every bad
key or value is a one-line :class:`~victims.registry.ConfigError` naming it.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from attacks import ATTACKS
from training.data import parse_config
from training.trainer import TrainConfig
from defense.config import load_option, set_dotted
from victims.frontends import FRONTENDS
from victims.frontends.spectral import MelDb, StftDb
from victims.frontends.waveform import Waveform
from victims.registry import ConfigError, _suggest, to_dataclass

STUDY = "koerich"
ALIASES = ("seed003",)
"""Earlier names of the study, accepted as ``study:`` values (and MLflow tags) and read as :data:`STUDY`."""
TOP_KEYS = ("study", "name", "dataset", "train", "spectrogram_models", "waveform_model", "attacks", "test_folds",
            "evaluation", "overrides")
INVERTIBLE = (StftDb, MelDb)
"""Front-ends with a waveform inverse (:mod:`victims.inverse`): kept-phase iSTFT and Griffin-Lim."""


@dataclass
class EvalOptions:
    """``evaluation:`` of the study.

    Attributes:
        batch_size: test segments attacked and reconstructed at once.
        griffin_lim_iters: Griffin-Lim iterations for mel-dB inversion (momentum 0.99, zero initial phase).
        max_recordings: test recordings evaluated (a seeded, class-balanced choice, all their segments);
            ``None`` for the whole test split.
        n_boot: bootstrap resamples of the test recordings for every interval.
        confidence: level of every interval.
        seed: seeds the choice of recordings and the bootstrap.
        wavs: examples per attack written as WAV (clean reconstruction, adversarial reconstruction, perturbation).
        random_control: also measure random-sign perturbations ``±eps`` dB of each L∞ attack's budget (beyond
            the paper: whether what reaches the 1D CNN is the attack or just a perturbation of that size).
    """

    batch_size: int = 64
    griffin_lim_iters: int = 32
    max_recordings: int | None = None
    n_boot: int = 1000
    confidence: float = 0.95
    seed: int = 0
    wavs: int = 2
    random_control: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.griffin_lim_iters < 1 or self.n_boot < 1 or self.wavs < 0:
            raise ConfigError("evaluation.batch_size, griffin_lim_iters and n_boot must be >= 1, wavs >= 0")
        if self.max_recordings is not None and self.max_recordings < 1:
            raise ConfigError(f"evaluation.max_recordings must be >= 1 or null, got {self.max_recordings}")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"evaluation.confidence must lie in (0, 1), got {self.confidence}")


@dataclass
class Study:
    """A validated Koerich et al. study; ``source`` is the composed config (logged, and hashed for resuming)."""

    name: str
    dataset: dict[str, Any]
    spectrogram_models: dict[str, dict[str, Any]]
    waveform_model: dict[str, Any]
    attacks: dict[str, dict[str, Any]]
    test_folds: list[int] | None
    evaluation: EvalOptions
    source: dict[str, Any] = field(default_factory=dict)
    norms: dict[str, str] = field(default_factory=dict)

    def controls(self) -> dict[str, float]:
        """``random_<eps>`` → ``eps`` for each distinct budget of the L∞ attacks (if ``random_control``)."""
        if not self.evaluation.random_control:
            return {}
        budgets = sorted({float(c["eps"]) for k, c in self.attacks.items() if self.norms[k] == "linf"})
        return {f"random_{eps:g}": eps for eps in budgets}

    def folds(self) -> list[int | None]:
        """The test folds to run (``[None]``: the dataset's split as configured)."""
        return list(self.test_folds) if self.test_folds is not None else [None]

    def dataset_for(self, fold: int | None) -> dict[str, Any]:
        """The dataset config with ``split.test_fold`` set to ``fold``."""
        cfg = copy.deepcopy(self.dataset)
        if fold is not None:
            cfg.setdefault("split", {})["test_fold"] = fold
        return cfg

    def train_config(self, model: dict[str, Any], fold: int | None) -> dict[str, Any]:
        """The config :func:`defense.pipeline.train_from_config` takes for ``model`` on ``fold`` (clean training)."""
        return {"dataset": self.dataset_for(fold), "frontend": copy.deepcopy(model["frontend"]),
                "victim": copy.deepcopy(model["victim"]), "train": copy.deepcopy(model["train"]),
                "defense": {"name": "clean"}}


def load_study(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Study:
    """Compose and validate a study config (see the module docstring).

    Raises:
        ConfigError: one line naming the first bad key or value.
    """
    spec = compose_study(raw, overrides)
    return validate(spec)


def compose_study(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Expand option names into their configs and apply the file's, then the command line's, overrides."""
    spec = copy.deepcopy(dict(raw))
    for key in spec:
        if key not in TOP_KEYS:
            raise ConfigError(f"unknown key '{key}' in a koerich study{_suggest(key, list(TOP_KEYS))}; "
                              f"accepted: {', '.join(TOP_KEYS)}")
    pending = {**(spec.pop("overrides", None) or {}), **(overrides or {})}
    for group in ("dataset", "train"):
        if isinstance(pending.get(group), str):
            spec[group] = pending.pop(group)
        if not isinstance(spec.get(group), str):
            raise ConfigError(f"koerich study needs '{group}: <option>' naming a configs/{group}/ file")
        spec[group] = load_option(group, spec[group])
    if not isinstance(spec.get("spectrogram_models"), Mapping) or not spec["spectrogram_models"]:
        raise ConfigError("koerich study needs spectrogram_models: {<name>: {frontend: <option>, victim: <option>}}")
    spec["spectrogram_models"] = {str(k): _model(f"spectrogram_models.{k}", v, spec["train"])
                                  for k, v in spec["spectrogram_models"].items()}
    spec["waveform_model"] = _model("waveform_model", spec.get("waveform_model"), spec["train"])
    spec.setdefault("attacks", {})
    spec.setdefault("test_folds", None)
    spec.setdefault("evaluation", {})
    for key, value in pending.items():
        set_dotted(spec, key, value)
        if key.startswith("train."):
            for model in _models(spec):
                set_dotted(model, key, value)
    return spec


def _model(where: str, entry: Any, train: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(entry, Mapping) or set(entry) - {"frontend", "victim", "train"} or \
            not isinstance(entry.get("frontend"), str) or not isinstance(entry.get("victim"), str):
        raise ConfigError(f"{where} must be {{frontend: <option>, victim: <option>}} "
                          "(optionally train: {key: value})")
    schedule = copy.deepcopy(train)
    for key, value in (entry.get("train") or {}).items():
        set_dotted(schedule, str(key), value)
    return {"frontend": load_option("frontend", entry["frontend"]), "victim": load_option("victim", entry["victim"]),
            "train": schedule}


def _models(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec["spectrogram_models"].values(), spec["waveform_model"]]


def validate(spec: dict[str, Any]) -> Study:
    """Check every part of a composed study without reading data or building a model.

    Raises:
        ConfigError: e.g. a spectrogram model whose front-end has no waveform inverse, a waveform model on
            a spectrogram, an attack outside the representation domain, or test folds on a fractions split.
    """
    if spec.get("study") not in (STUDY, *ALIASES):
        raise ConfigError(f"study must be '{STUDY}', got {spec.get('study')!r}")
    spec["study"] = STUDY
    dataset = parse_config(spec["dataset"])
    for name, model in spec["spectrogram_models"].items():
        _check_model(f"spectrogram_models.{name}", model, spec["dataset"]["sample_rate"])
        frontend = FRONTENDS.get(model["frontend"]["name"])
        if not (inspect.isclass(frontend) and issubclass(frontend, INVERTIBLE)):
            raise ConfigError(f"spectrogram_models.{name}: front-end '{model['frontend']['name']}' has no waveform "
                              "inverse; Koerich et al. attack STFT-dB (kept-phase iSTFT) or mel-dB (Griffin-Lim) "
                              "spectrograms")
    wave = spec["waveform_model"]
    _check_model("waveform_model", wave, spec["dataset"]["sample_rate"])
    if FRONTENDS.get(wave["frontend"]["name"]) is not Waveform:
        raise ConfigError(f"waveform_model: front-end '{wave['frontend']['name']}' is not the raw waveform; "
                          "Koerich et al.'s 1D CNN hears the reconstructed audio itself (frontend: waveform)")
    attacks, norms = _attacks(spec["attacks"])
    folds = spec["test_folds"]
    if folds is not None:
        if not isinstance(folds, list) or not folds or not all(isinstance(f, int) for f in folds):
            raise ConfigError(f"test_folds must be a non-empty list of fold numbers or null, got {folds!r}")
        if dataset.split.method == "fractions":
            raise ConfigError("test_folds needs dataset.split.method kfold or official (a fractions split has one "
                              "test part); set test_folds: null")
    evaluation = to_dataclass(EvalOptions, spec["evaluation"] or {}, "evaluation")
    spec["evaluation"] = asdict(evaluation)
    return Study(str(spec.get("name") or STUDY), spec["dataset"], spec["spectrogram_models"], wave, attacks, folds,
                 evaluation, spec, norms)


def _check_model(where: str, model: dict[str, Any], sample_rate: int) -> None:
    """The model's schedule and front-end keywords are valid (the front-end is built: it is small)."""
    to_dataclass(TrainConfig, model["train"], f"{where}.train")
    fe = {k: v for k, v in model["frontend"].items() if k != "name"}
    try:
        FRONTENDS.create(model["frontend"]["name"], sample_rate=sample_rate, **fe)
    except ConfigError as err:
        raise ConfigError(f"{where}.frontend: {err}") from None


def _attacks(entries: Any) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Each attack is a registered, untargeted, fixed-budget attack with a budget, on the representation;
    returns the configs and each attack's norm."""
    if not isinstance(entries, Mapping) or not entries:
        raise ConfigError("attacks must map names to attack configs, e.g. {fgsm: {name: fgsm, norm: linf, eps: 0.3}}")
    out, norms = {}, {}
    for key, cfg in entries.items():
        if not isinstance(cfg, Mapping) or "name" not in cfg:
            raise ConfigError(f"attacks.{key} must be a mapping with a registered 'name'")
        cfg = dict(cfg)
        if cfg.setdefault("domain", "representation") != "representation":
            raise ConfigError(f"attacks.{key}: domain '{cfg['domain']}'; Koerich et al. attack the spectrogram "
                              "(domain: representation, in the front-end's dB units)")
        needs = f"attacks.{key}: Koerich et al. run untargeted fixed-budget attacks (FGSM, BIM) with an eps"
        if not getattr(ATTACKS.get(cfg["name"]), "fixed_budget", False):
            raise ConfigError(needs)
        try:
            attack = ATTACKS.create(cfg["name"], **{k: v for k, v in cfg.items() if k != "name"})
        except ValueError as err:
            raise ConfigError(f"attacks.{key}: {err}") from None
        if attack.eps is None or attack.targeted:
            raise ConfigError(needs)
        out[str(key)], norms[str(key)] = cfg, attack.norm
    return out, norms
