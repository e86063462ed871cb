"""Declared domains of config fields: the values a field accepts beyond its type.

A config dataclass states each field's domain next to its default, as field metadata::

    @dataclass
    class TrainConfig:
        epochs: int = field(default=20, metadata=at_least(1))
        lr: float = field(default=1e-3, metadata=above(0))

        def __post_init__(self) -> None:
            check_domains(self, "train")

so the table of what is allowed is the dataclass itself, and every way a config is built (from YAML
through :func:`victims.registry.to_dataclass`, or in code) is checked once, at construction. A value
outside its domain is a one-line :class:`~victims.registry.ConfigError` naming the dotted key, e.g.
``train.epochs must be >= 1, got 0``. ``None`` is left to the field's type (an optional field allows it).
Numbers must be finite unless a domain says otherwise.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from victims.registry import ConfigError

DOMAIN = "domain"
"""The field-metadata key holding a :class:`Domain`."""


@dataclass(frozen=True)
class Domain:
    """The values a config field accepts.

    Attributes:
        low, high: bounds of a number (``high`` ``None``: unbounded above).
        low_open, high_open: exclude the bound itself.
        finite: refuse ``inf`` (``nan`` is always refused).
        pattern: a string must match this regular expression (whole), described by ``what`` (the bounds then
            do not apply).
        what: how messages name a pattern's values.
        each: the bounds apply to every number inside a list or (nested) mapping, not to the value itself.
    """

    low: float = 0.0
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    finite: bool = True
    pattern: str | None = None
    what: str = ""
    each: bool = False

    def describe(self) -> str:
        """What the domain allows, as the end of "must be ..."."""
        if self.pattern is not None:
            return self.what
        if self.high is not None:
            text = (f"in {'(' if self.low_open else '['}{_num(self.low)}, "
                    f"{_num(self.high)}{')' if self.high_open else ']'}")
        else:
            text = f"{'>' if self.low_open else '>='} {_num(self.low)}"
        return f"numbers {text}" if self.each else text

    def admits(self, value: Any) -> bool:
        """Whether ``value`` (not ``None``) lies in the domain."""
        if self.pattern is not None:
            return isinstance(value, str) and re.fullmatch(self.pattern, value) is not None
        if self.each:
            return all(self._number_ok(v) for v in _leaves(value))
        return self._number_ok(value)

    def _number_ok(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if math.isnan(value) or (self.finite and math.isinf(value)):
            return False
        if not (value > self.low if self.low_open else value >= self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _leaves(value: Any) -> list[Any]:
    """The numbers inside a list or a nested mapping (the value itself otherwise)."""
    if isinstance(value, Mapping):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def _meta(domain: Domain) -> dict[str, Domain]:
    return {DOMAIN: domain}


def at_least(low: float, each: bool = False) -> dict[str, Domain]:
    """Field metadata: ``value >= low`` (for every number inside it with ``each``)."""
    return _meta(Domain(low=low, each=each))


def above(low: float, each: bool = False, finite: bool = True) -> dict[str, Domain]:
    """Field metadata: ``value > low`` (for every number inside it with ``each``)."""
    return _meta(Domain(low=low, low_open=True, each=each, finite=finite))


def between(low: float, high: float, bounds: str = "[]", each: bool = False) -> dict[str, Domain]:
    """Field metadata: ``low <= value <= high``; ``bounds`` like ``"[)"`` opens either end."""
    return _meta(Domain(low=low, high=high, low_open=bounds[0] == "(", high_open=bounds[1] == ")", each=each))


def matching(pattern: str, what: str) -> dict[str, Domain]:
    """Field metadata: a string matching ``pattern`` in full, described by ``what`` in messages."""
    return _meta(Domain(pattern=pattern, what=what))


def check_domains(config: Any, where: str) -> None:
    """Check every field of the dataclass instance ``config`` against its declared domain.

    Args:
        config: a dataclass instance whose fields may carry :func:`at_least`, :func:`above`, ... metadata.
        where: the config key of the instance (``"train"``, ``"dataset.split"``), for messages.

    Raises:
        ConfigError: one line naming the first field outside its domain, the domain and the value.
    """
    for f in dataclasses.fields(config):
        domain = f.metadata.get(DOMAIN)
        value = getattr(config, f.name)
        if domain is not None and value is not None and not domain.admits(value):
            raise ConfigError(f"{where}.{f.name} must be {domain.describe()}, got {value!r}")
