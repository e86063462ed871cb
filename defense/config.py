"""YAML configs by group with dotted command-line overrides (lightning-hydra-template style).

Layout: ``configs/<group>/<option>.yaml``, one file per option. An experiment file
(``configs/experiment/<name>.yaml``) names one option per group and may override single keys::

    dataset: gm_instruments          # -> configs/dataset/gm_instruments.yaml
    frontend: stft_db
    overrides:
      train.epochs: 8

Command-line overrides use the same syntax: ``frontend=mel_db`` swaps a group option and
``train.epochs=3`` sets one key. A key that does not exist, or a value of the wrong type, is a
one-line :class:`~victims.registry.ConfigError` naming it. Typed sections (a training config,
a data set) are checked by :func:`victims.registry.to_dataclass`.
"""
from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from victims.registry import ConfigError, _suggest



def _installed_configs() -> Path:
    """``configs/`` beside the packages (a source checkout or an editable install), else the YAML a wheel
    installs as the package ``advaudio_configs``."""
    beside = Path(__file__).resolve().parents[1] / "configs"
    if beside.is_dir():
        return beside
    spec = importlib.util.find_spec("advaudio_configs")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("advaudio's configs/ are not installed: reinstall advaudio or set ADVAUDIO_CONFIGS")
    return Path(list(spec.submodule_search_locations)[0])


CONFIG_ROOT = Path(os.environ.get("ADVAUDIO_CONFIGS") or _installed_configs())
GROUPS = ("dataset", "frontend", "victim", "train", "attack", "defense")


def read_yaml(path: Path) -> dict[str, Any]:
    """Read one YAML mapping; an unreadable or non-mapping file is a one-line ConfigError."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0]
        raise ConfigError(f"invalid YAML in {path}: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping, not {type(data).__name__}")
    return data


def options(group: str, root: Path = CONFIG_ROOT) -> list[str]:
    """Names of the options available in ``configs/<group>/``."""
    return sorted(p.stem for p in (root / group).glob("*.yaml"))


def load_option(group: str, name: str, root: Path = CONFIG_ROOT) -> dict[str, Any]:
    """Load ``configs/<group>/<name>.yaml``; an unknown option lists the known ones."""
    path = root / group / f"{name}.yaml"
    if not path.is_file():
        known = options(group, root)
        raise ConfigError(f"unknown {group} option '{name}'{_suggest(name, known)}; known: {', '.join(known)}")
    return read_yaml(path)


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Turn ``["train.epochs=3", "frontend=mel_db"]`` into ``{"train.epochs": 3, ...}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' must look like key=value")
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return out


def compose(experiment: str | Path | Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
            root: Path = CONFIG_ROOT) -> dict[str, Any]:
    """Resolve an experiment into one nested dict: expand group options, then apply overrides.

    Args:
        experiment: an experiment option name, a YAML path, or an already-loaded mapping.
        overrides: dotted keys to values (command line); applied after the file's own overrides.
        root: the ``configs/`` folder.

    Returns:
        The resolved config; group entries are mappings, other keys are kept as they are.

    Raises:
        ConfigError: for an unknown option, key or a value whose type does not match.
    """
    if isinstance(experiment, Mapping):
        spec = copy.deepcopy(dict(experiment))
    elif Path(str(experiment)).suffix in (".yaml", ".yml"):
        spec = read_yaml(Path(experiment))
    else:
        spec = load_option("experiment", str(experiment), root)
    file_overrides = spec.pop("overrides", None) or {}
    all_overrides = {**file_overrides, **(overrides or {})}
    for key, value in list(all_overrides.items()):
        if key in GROUPS and isinstance(value, str):
            spec[key] = value
            del all_overrides[key]
    for group in GROUPS:
        if isinstance(spec.get(group), str):
            spec[group] = load_option(group, spec[group], root)
    for key, value in all_overrides.items():
        set_dotted(spec, key, value)
    return spec


def set_dotted(cfg: dict[str, Any], key: str, value: Any) -> None:
    """Set ``cfg["a"]["b"] = value`` for ``key="a.b"``; the key must already exist.

    A value must keep the existing value's type (an int may stand for a float; ``null`` and
    a value replacing ``null`` are always accepted; a number may replace ``auto``, a measured budget, and ``auto``
    a number).
    """
    node: Any = cfg
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:depth]) or "the config"
            known = sorted(node) if isinstance(node, dict) else []
            raise ConfigError(f"unknown key '{key}' (no '{part}' in {where}{_suggest(part, known)})")
        if depth < len(parts) - 1:
            node = node[part]
    old = node[parts[-1]]
    if not _same_kind(old, value):
        raise ConfigError(f"bad value for '{key}': {value!r} is {type(value).__name__}, expected {type(old).__name__}")
    node[parts[-1]] = float(value) if isinstance(old, float) and isinstance(value, int) else value


AUTO = "auto"
"""A value measured at run time (``eps: auto``: the budget the original model's FGSM ε* gives)."""


def _same_kind(old: Any, new: Any) -> bool:
    if old is None or new is None:
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if AUTO in (old, new) and not (isinstance(old, str) and isinstance(new, str)):
        return isinstance(old if new == AUTO else new, (int, float))
    if isinstance(old, (int, float)) and isinstance(new, (int, float)):
        return not (isinstance(old, int) and isinstance(new, float))
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return True
    return type(old) is type(new)
