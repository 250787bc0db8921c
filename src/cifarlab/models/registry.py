"""Model registry in the style of timm: families register factories, users call ``create(name, **options)``.

A factory is a function ``f(num_classes: int = 10, **options) -> nn.Module`` whose keyword options are the
configurable parts of the architecture (width multiplier, activation, ...). ``create`` checks the name and the
options against the factory's signature, so a typo gives one clear error listing the valid choices.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from cifarlab.errors import ConfigError
from cifarlab.registry import Entry, Registry

ModelFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry(Entry[ModelFactory]):
    @property
    def factory(self) -> ModelFactory:
        return self.obj

    def options(self) -> dict[str, Any]:
        """Option name -> default value (``inspect.Parameter.empty`` when required)."""
        sig = inspect.signature(self.factory)
        return {p.name: p.default for p in sig.parameters.values() if p.name != "num_classes"}


MODELS: Registry[ModelFactory] = Registry("model", entry_cls=ModelEntry)


def register(name: str | None = None, description: str = "") -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: ``@register("vgg_a", "course VGG-A ...")`` on a factory function."""
    return MODELS.register(name, description)


def list_models() -> list[str]:
    return sorted(MODELS.names())


def get_entry(name: str) -> ModelEntry:
    return MODELS.entry(name)  # type: ignore[return-value]  # entry_cls is ModelEntry


def create(name: str, num_classes: int = 10, **options: Any) -> nn.Module:
    """Build a registered model; unknown names or options raise ``ConfigError`` listing the valid ones."""
    entry = get_entry(name)
    valid = entry.options()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        listing = ", ".join(f"{k}={v!r}" for k, v in valid.items()) or "(none)"
        raise ConfigError(f"model '{name}' has no option {', '.join(repr(u) for u in unknown)}; valid: {listing}")
    try:
        return entry.factory(num_classes=num_classes, **options)
    except (ValueError, TypeError, KeyError) as exc:  # factories validate option values with ValueError
        raise ConfigError(f"model '{name}': {exc}") from None
