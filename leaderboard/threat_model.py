"""Named, versioned threat models of the audio leaderboard (issue 21 item 1): ``configs/threat_model/<name>.yaml``.

A threat model fixes everything an entry's numbers depend on besides the model: the data set and its split (the
clips are the test split's seeded, class-balanced subset of ``n_clips``, :func:`evaluation.selection.select_examples`),
the domain, norm and budget, and the evaluation protocol: the attacks with their settings (each a
``configs/attack`` option with overrides, run through :func:`evaluation.harness.evaluate`), the ε* search, the
seed, the intervals, the adaptive options against inference-time defenses (Athalye et al. 2018) and randomized
smoothing's certification settings (Cohen et al. 2019). Its identity is ``version`` and the 12-hex
:func:`evaluation.tracking.stable_key` of the resolved content (:attr:`ThreatModel.config_hash`): editing an attack
option, a budget or the protocol changes the hash, and entries made before are refused
(:func:`leaderboard.entry.load_entry`). Where the data lie (``root``, ``cache_dir``) is not part of it.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from defense.config import CONFIG_ROOT, load_option, options, read_yaml, set_dotted
from defense.inference import AdaptiveConfig
from evaluation.config import EvalConfig
from victims.registry import ConfigError, to_dataclass
from victims.schema import at_least, between, check_domains

GROUP = "threat_model"
"""The config group (``configs/threat_model/``)."""
LOCATION_KEYS = ("root", "cache_dir")
"""Data set keys that say where a copy lies, not what it holds: left out of the hash."""
DOMAIN_NORMS = {"waveform": ("linf", "l2", "perceptual"), "representation": ("linf", "l2")}


@dataclass
class Protocol:
    """``protocol:`` of a threat model: how every model is evaluated.

    Attributes:
        n_clips: test clips evaluated (a seeded, class-balanced subset of the test split).
        seed: seeds the clips, the attacks' randomness, the targets of targeted attacks, certification and the
            bootstrap.
        n_budgets: size of the geometric ε sweep of fixed-budget attacks (ending at ``search_eps_max``).
        eps_rtol: relative resolution ε* is bisected to.
        batch_size: clips per attack call.
        n_boot: bootstrap resamples of every percentile interval.
        confidence: level of every interval.
        attacks: ``[{option: <configs/attack option>, overrides: {...}, name: <optional>}, ...]``.
        adaptive: options of the attacks on an inference-time defense (``bpda``, ``eot_samples``).
        certify_n0, certify_n, certify_alpha: CERTIFY's draws and error rate for a smoothed model.
    """

    n_clips: int = field(default=100, metadata=at_least(1))
    seed: int = 0
    n_budgets: int = field(default=4, metadata=at_least(1))
    eps_rtol: float = field(default=0.05, metadata=between(0, 1, "()"))
    batch_size: int = field(default=100, metadata=at_least(1))
    n_boot: int = field(default=1000, metadata=at_least(1))
    confidence: float = field(default=0.95, metadata=between(0, 1, "()"))
    attacks: list[dict[str, Any]] = field(default_factory=list)
    adaptive: dict[str, Any] = field(default_factory=lambda: {"bpda": "identity", "eot_samples": 8})
    certify_n0: int = field(default=100, metadata=at_least(1))
    certify_n: int = field(default=1000, metadata=at_least(1))
    certify_alpha: float = field(default=0.001, metadata=between(0, 0.5, "()"))

    def __post_init__(self) -> None:
        check_domains(self, "protocol")


@dataclass
class ThreatModel:
    """A resolved threat model (see the module docstring).

    Attributes:
        name, version: its identity with :attr:`config_hash`.
        dataset: the resolved ``dataset`` config group (option and overrides applied).
        split: the split the clips come from (``test``).
        domain, norm, budget: where, in which norm and up to which size the attacker perturbs.
        search_eps_max: how far ε* is searched (≥ ``budget``).
        protocol: the evaluation protocol.
        attacks: attack name → its resolved ``configs/attack`` config.
    """

    name: str
    version: int
    dataset: dict[str, Any]
    split: str
    domain: str
    norm: str
    budget: float
    search_eps_max: float
    protocol: Protocol
    attacks: dict[str, dict[str, Any]]

    @property
    def config_hash(self) -> str:
        """12-hex :func:`evaluation.tracking.stable_key` of the resolved content (data set locations left out)."""
        from evaluation.tracking import stable_key

        return stable_key(self.identity())

    def identity(self) -> dict[str, Any]:
        """What the hash covers: everything resolved but where the data set lies."""
        data = {k: v for k, v in self.dataset.items() if k not in LOCATION_KEYS}
        return {"name": self.name, "version": self.version, "dataset": data, "split": self.split,
                "domain": self.domain, "norm": self.norm, "budget": self.budget,
                "search_eps_max": self.search_eps_max, "protocol": asdict(self.protocol), "attacks": self.attacks}

    def eval_config(self) -> EvalConfig:
        """The harness settings of the protocol (:func:`evaluation.harness.evaluate`): budgets of this domain and
        norm only, no quality scores, the base set of correctly classified clips."""
        p = self.protocol
        return EvalConfig(n_examples=p.n_clips, eps_max={self.domain: {self.norm: self.budget}},
                          search_eps_max={self.domain: {self.norm: self.search_eps_max}}, n_budgets=p.n_budgets,
                          eps_rtol=p.eps_rtol, batch_size=p.batch_size, seed=p.seed, quality=False, n_boot=p.n_boot,
                          confidence=p.confidence, certify_n0=p.certify_n0, certify_n=p.certify_n,
                          certify_alpha=p.certify_alpha, base_set="correct")

    def adaptive(self) -> AdaptiveConfig:
        """The adaptive options against an inference-time defense."""
        return AdaptiveConfig(**self.protocol.adaptive)


def threat_models(root: Path = CONFIG_ROOT) -> list[str]:
    """The names of the threat models in ``configs/threat_model/``."""
    return options(GROUP, root)


def load_threat_model(name: str, root: Path = CONFIG_ROOT, data_root: str | None = None) -> ThreatModel:
    """Read and resolve ``configs/threat_model/<name>.yaml`` (or a YAML file's threat model, named as the file).

    Args:
        name: the option, or the path of a ``.yaml`` file.
        root: the ``configs/`` folder.
        data_root: where this machine keeps the data set (replaces ``dataset.root``; not part of the hash).

    Raises:
        ConfigError: one line for an unknown option, key or value, an attack of another domain or norm, or a
            search range below the budget.
    """
    if Path(name).suffix in (".yaml", ".yml"):
        return resolve(read_yaml(Path(name)), Path(name).stem, root, data_root)
    return resolve(copy.deepcopy(load_option(GROUP, name, root)), name, root, data_root)


def resolve(raw: dict[str, Any], name: str, root: Path = CONFIG_ROOT, data_root: str | None = None) -> ThreatModel:
    """A threat model from its YAML mapping (see :func:`load_threat_model`)."""
    where = f"threat model '{name}'"
    known = ("name", "version", "dataset", "split", "domain", "norm", "budget", "search_eps_max", "protocol")
    for key in raw:
        if key not in known:
            raise ConfigError(f"{where}: unknown key '{key}'; accepted: {', '.join(known)}")
    missing = [key for key in known if key not in raw]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    if raw["name"] != name:
        raise ConfigError(f"{where}: its file says name '{raw['name']}'; the name must be the file's")
    version = raw["version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(f"{where}: version must be an integer >= 1, got {version!r}")
    if raw["split"] != "test":
        raise ConfigError(f"{where}: split must be 'test' (the clips are the data set's test split), got {raw['split']!r}")
    domain, norm = raw["domain"], raw["norm"]
    if norm not in DOMAIN_NORMS.get(domain, ()):
        raise ConfigError(f"{where}: no {norm!r} threat model in the {domain!r} domain; known: "
                          + "; ".join(f"{d}: {', '.join(n)}" for d, n in DOMAIN_NORMS.items()))
    budget, search = raw["budget"], raw["search_eps_max"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (budget, search)) \
            or not 0 < budget <= search:
        raise ConfigError(f"{where}: need 0 < budget <= search_eps_max, got {budget!r} and {search!r}")
    protocol = to_dataclass(Protocol, raw["protocol"], f"{name}.protocol")
    AdaptiveConfig(**protocol.adaptive)
    return ThreatModel(name=name, version=version, dataset=_dataset(raw["dataset"], where, root, data_root),
                       split="test", domain=domain, norm=norm, budget=float(budget), search_eps_max=float(search),
                       protocol=protocol, attacks=_attacks(protocol.attacks, domain, norm, where, root))


def _dataset(spec: Any, where: str, root: Path, data_root: str | None) -> dict[str, Any]:
    """The ``dataset`` group: ``{option: fsdd, overrides: {clip_seconds: 0.5}}`` resolved."""
    if not isinstance(spec, dict) or "option" not in spec or set(spec) - {"option", "overrides"}:
        raise ConfigError(f"{where}: dataset must be {{option: <configs/dataset option>, overrides: {{...}}}}")
    cfg = load_option("dataset", str(spec["option"]), root)
    for key, value in (spec.get("overrides") or {}).items():
        set_dotted(cfg, key, value)
    if data_root is not None:
        cfg["root"] = str(data_root)
    return cfg


def _attacks(entries: list[dict[str, Any]], domain: str, norm: str, where: str, root: Path
             ) -> dict[str, dict[str, Any]]:
    """Each protocol attack resolved (option + overrides), named, and checked to be of the threat model's domain
    and norm."""
    from attacks import ATTACKS

    if not entries:
        raise ConfigError(f"{where}: protocol.attacks is empty")
    out: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or "option" not in entry or set(entry) - {"option", "overrides", "name"}:
            raise ConfigError(f"{where}: each protocol attack is {{option: ..., overrides: {{...}}, name: ...}}, "
                              f"got {entry!r}")
        cfg = load_option("attack", str(entry["option"]), root)
        for key, value in (entry.get("overrides") or {}).items():
            if key in cfg:
                set_dotted(cfg, key, value)
            else:
                cfg[key] = value  # a constructor keyword the option file leaves at its default (checked when built)
        name = str(entry.get("name", entry["option"]))
        if name in out:
            raise ConfigError(f"{where}: two protocol attacks are named '{name}'; give one a name")
        kwargs = {k: v for k, v in cfg.items() if k != "name"}
        attack = ATTACKS.create(cfg["name"], **kwargs)
        if (attack.domain, attack.norm) != (domain, norm):
            raise ConfigError(f"{where}: attack '{name}' is {attack.domain}/{attack.norm}, the threat model "
                              f"{domain}/{norm}")
        out[name] = cfg
    return out
