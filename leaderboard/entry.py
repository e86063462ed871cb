"""Leaderboard entries: one model under one threat model, a JSON file validated by ``entry.schema.json``.

:func:`write_entry` validates before it writes and writes atomically (:func:`training.files.atomic_write`), so an
entry file is whole and valid or absent. :func:`load_entry` is how anything reads one (``advaudio benchmark
--reference``, the leaderboard page): malformed JSON, a schema violation (naming the field) or a threat model whose
current config hash differs from the entry's are one-line :class:`EntryError`\\ s.
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from training.files import atomic_write
from victims.registry import ConfigError

SCHEMA_PATH = Path(__file__).with_name("entry.schema.json")
INF = "inf"
"""How an infinite per-clip ε* is written (``evaluation.eps_star_per_clip``): JSON has no infinity."""


class EntryError(ConfigError):
    """An entry file that cannot be used: unreadable, malformed, against the schema, or of another threat model
    version (one line)."""


@lru_cache(maxsize=1)
def validator() -> Draft202012Validator:
    """The validator of ``entry.schema.json``."""
    return Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def schema_problem(entry: Any) -> str | None:
    """The most relevant schema violation of ``entry`` as ``field 'a.b': message`` (one line), or ``None``."""
    err = best_match(validator().iter_errors(entry))
    if err is None:
        return None
    where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    message = err.message.splitlines()[0]
    return f"field '{where}': {message[:200]}"


def write_entry(entry: dict[str, Any], path: str | Path) -> Path:
    """Validate ``entry`` and write it to ``path`` whole or not at all (strict JSON: no NaN or Infinity).

    Raises:
        EntryError: if it violates the schema or holds a non-finite number (nothing is written).
        OutputError: if ``path`` cannot be written.
    """
    problem = schema_problem(entry)
    if problem is not None:
        raise EntryError(f"entry for {path} violates entry.schema.json, {problem}")
    try:
        text = json.dumps(entry, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    except ValueError as err:
        raise EntryError(f"entry for {path} holds a number JSON cannot write ({err})") from None
    return atomic_write(path, lambda handle: handle.write(text.encode()), "leaderboard entry")


def read_entry(path: str | Path) -> dict[str, Any]:
    """An entry file parsed and validated against the schema (its threat model's hash is not checked).

    Raises:
        EntryError: for a missing or unreadable file, malformed JSON or a schema violation, naming the field.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
        raise EntryError(f"cannot read leaderboard entry {path}: {reason}") from None
    try:
        entry = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as err:
        raise EntryError(f"leaderboard entry {path} is not valid JSON: {err.msg} at line {err.lineno} column "
                         f"{err.colno}") from None
    except ValueError as err:
        raise EntryError(f"leaderboard entry {path} is not valid JSON: {err}") from None
    problem = schema_problem(entry)
    if problem is not None:
        raise EntryError(f"leaderboard entry {path} violates entry.schema.json, {problem}")
    return entry


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def load_entry(path: str | Path, current_hash: str | None = None) -> dict[str, Any]:
    """An entry read, validated and checked against its threat model's current config hash.

    Args:
        path: the entry file.
        current_hash: the threat model's current :attr:`~leaderboard.threat_model.ThreatModel.config_hash`;
            ``None``: resolve the threat model the entry names from ``configs/threat_model``.

    Raises:
        EntryError: malformed JSON, a schema violation (naming the field), an unknown threat model, or a hash that
            differs from the threat model's current one (the entry was made under another protocol: benchmark the
            model again).
    """
    entry = read_entry(path)
    tm = entry["threat_model"]
    if current_hash is None:
        from leaderboard.threat_model import load_threat_model

        try:
            current_hash = load_threat_model(tm["name"]).config_hash
        except ConfigError as err:
            raise EntryError(f"leaderboard entry {path}: {err}") from None
    if tm["config_hash"] != current_hash:
        raise EntryError(f"leaderboard entry {path} was made under threat model {tm['name']} v{tm['version']} with "
                         f"config hash {tm['config_hash']}, but its current hash is {current_hash}: the threat model "
                         "changed since; benchmark the model again")
    return entry


def per_clip(entry: dict[str, Any]) -> tuple[list[int], list[float]] | None:
    """``(labels, ε*)`` of an entry's clips (ε* ``nan`` outside the base set, ``inf`` unbroken: the encoding of
    :mod:`evaluation.stats`), or ``None`` when it holds no ``evaluation.eps_star_per_clip``."""
    found = entry["evaluation"].get("eps_star_per_clip")
    if found is None:
        return None
    stars = [math.nan if v is None else math.inf if v == INF else float(v) for v in found["eps_star"]]
    return list(found["labels"]), stars


def encode_per_clip(labels: list[int], eps_clip: list[float]) -> dict[str, Any]:
    """``evaluation.eps_star_per_clip`` from labels and :mod:`evaluation.stats`-encoded ε* (inverse of
    :func:`per_clip`)."""
    return {"labels": [int(v) for v in labels],
            "eps_star": [None if math.isnan(v) else INF if math.isinf(v) else float(v) for v in eps_clip]}
