"""One registry object per kind of component (front-end, backbone, attack, defense, data set).

Modelled on timm's ``_registry.py``/``_factory.py``: a small class is registered under a name with
``@REGISTRY.register("name")`` and built from a config with ``REGISTRY.create(name, **kwargs)``.
A typo in a name or a keyword is a one-line :class:`ConfigError` that lists what is known.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
import typing
from typing import Any, Callable, Generic, Mapping, TypeVar

T = TypeVar("T", bound=Callable[..., Any])
D = TypeVar("D")


class ConfigError(ValueError):
    """A wrong name, key or value in a config or on the command line (always one line)."""


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Registry(Generic[T]):
    """Maps names to constructors of one kind of component.

    Args:
        kind: what the registry holds, used in error messages (e.g. ``"attack"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``fn_or_cls`` under ``name``.

        Raises:
            ValueError: if ``name`` is already taken.
        """

        def add(fn_or_cls: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = fn_or_cls
            return fn_or_cls

        return add

    def names(self) -> list[str]:
        """Sorted list of registered names."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> T:
        """Return the constructor registered as ``name``.

        Raises:
            ConfigError: naming the unknown ``name`` and listing the known ones.
        """
        try:
            return self._entries[name]
        except KeyError:
            known = self.names()
            raise ConfigError(
                f"unknown {self.kind} '{name}'{_suggest(str(name), known)}; known: {', '.join(known)}"
            ) from None

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build the component ``name`` with keyword arguments from a config.

        Raises:
            ConfigError: for an unknown name, a keyword the constructor does not take, or a value it
                rejects (its ``ValueError``, prefixed with the component's name).
        """
        ctor = self.get(name)
        check_kwargs(ctor, kwargs, f"{self.kind} '{name}'")
        try:
            return ctor(**kwargs)
        except ConfigError:
            raise
        except ValueError as err:
            raise ConfigError(f"{self.kind} '{name}': {str(err).splitlines()[0] if str(err) else 'bad value'}") from err


def check_kwargs(ctor: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    """Raise a one-line :class:`ConfigError` if ``kwargs`` has a key ``ctor`` does not accept."""
    params = inspect.signature(ctor).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(
                f"unknown key '{key}' for {what}{_suggest(key, accepted)}; accepted: {', '.join(accepted)}"
            )


def to_dataclass(cls: type[D], data: Mapping[str, Any], where: str) -> D:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and values of the wrong type.

    Raises:
        ConfigError: one line naming ``where``, the key and what was expected.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"unknown key '{where}.{key}'{_suggest(key, list(fields))}; accepted: {', '.join(fields)}")
        if not _matches(hints[key], value):
            raise ConfigError(f"bad value for '{where}.{key}': {value!r} is not {_type_name(hints[key])}")
    return cls(**data)


def _matches(hint: Any, value: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(h, value) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", str(hint))
