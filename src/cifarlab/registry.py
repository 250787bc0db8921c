"""A tiny name -> entry registry (timm style), used for models, optimizers, LR schedules and losses.

An entry is one registered object (a factory or a function) with its name, a one-line description, the config
keys of its section that it reads, and free-form tags. Adding a component is one ``@REGISTRY.register(...)``.
This module imports nothing heavy: the registries themselves live next to their code (``models/registry.py``,
``engine/optim.py``, ``engine/schedules.py``, ``engine/losses.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cifarlab.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    description: str = ""
    keys: tuple[str, ...] = ()  # config keys of the section (without prefix) that this entry reads
    tags: frozenset[str] = frozenset()


class Registry(Generic[T]):
    """Entries in registration order. ``config_key`` (e.g. ``"optim.name"``) makes unknown names a config error
    in the schema's style; without it the error reads ``unknown <kind> 'x'; valid <kind>s: ...`` (sorted)."""

    def __init__(self, kind: str, config_key: str | None = None, entry_cls: type[Entry] = Entry,
                 declared: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self.kind, self.config_key, self.entry_cls = kind, config_key, entry_cls
        self.declared = declared  # name -> keys, declared in the config schema: registering must agree
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self, name: str | None = None, description: str = "", keys: tuple[str, ...] = (), tags: tuple[str, ...] = ()
    ) -> Callable[[T], T]:
        """Decorator; the name defaults to the object's ``__name__``, the description to its docstring's first line."""

        def wrap(obj: T) -> T:
            key = name or getattr(obj, "__name__", "")
            if key in self._entries:
                raise ValueError(f"{self.kind} '{key}' registered twice")
            if self.declared is not None and self.declared.get(key) != tuple(keys):
                raise ValueError(f"{self.kind} '{key}' with keys {tuple(keys)} is not declared so in cifarlab.config "
                                 f"(declared: {self.declared.get(key)})")
            doc = description or (inspect.getdoc(obj) or "").split("\n")[0]
            self._entries[key] = self.entry_cls(key, obj, doc, tuple(keys), frozenset(tags))
            return obj

        return wrap

    def undeclared(self) -> list[str]:
        """Declared names that nothing registered (an empty list when the registry and the schema agree)."""
        return [n for n in (self.declared or {}) if n not in self._entries]

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def entry(self, name: Any) -> Entry[T]:
        found = self._entries.get(name) if isinstance(name, str) else None
        if found is not None:
            return found
        if self.config_key:
            choices = ", ".join(repr(n) for n in self._entries)
            raise ConfigError(
                f"config key '{self.config_key}': got {name!r} ({type(name).__name__}), expected one of {choices}")
        raise ConfigError(f"unknown {self.kind} '{name}'; valid {self.kind}s: {', '.join(sorted(self._entries))}")

    def get(self, name: str) -> T:
        return self.entry(name).obj
