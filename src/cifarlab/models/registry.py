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
# One width option for every family: ``width_mult`` scales a family's own width option (channel lists, growth
# rate, bottleneck width) with the rule of VGG-A's: round(w * mult), at least 1; 1.0 keeps every exact count.
WIDTH_TARGETS = ("widths", "filters", "growth_rate", "bottleneck_width")


@dataclass(frozen=True)
class ModelEntry(Entry[ModelFactory]):
    @property
    def factory(self) -> ModelFactory:
        return self.obj

    def options(self) -> dict[str, Any]:
        """Option name -> default value (``inspect.Parameter.empty`` when required); ``width_mult`` for every
        family with a width (native, or scaling its widths-like option: see ``width_target``)."""
        sig = inspect.signature(self.factory)
        opts = {p.name: p.default for p in sig.parameters.values() if p.name != "num_classes"}
        if self.width_target() is not None:
            opts["width_mult"] = 1.0
        return opts

    def width_target(self) -> str | None:
        """The option ``width_mult`` scales when the factory has no ``width_mult`` of its own (None: native or none)."""
        params = inspect.signature(self.factory).parameters
        if "width_mult" in params:
            return None
        return next((t for t in WIDTH_TARGETS if t in params), None)


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
    options = _scaled_width(name, entry, options)
    try:
        return entry.factory(num_classes=num_classes, **options)
    except (ValueError, TypeError, KeyError) as exc:  # factories validate option values with ValueError
        raise ConfigError(f"model '{name}': {exc}") from None


def _scaled_width(name: str, entry: ModelEntry, options: dict[str, Any]) -> dict[str, Any]:
    target = entry.width_target()
    if target is None or "width_mult" not in options:
        return options
    options = dict(options)
    mult = options.pop("width_mult")
    if isinstance(mult, bool) or not isinstance(mult, (int, float)) or not mult > 0:
        raise ConfigError(f"model '{name}': width_mult must be a number > 0, got {mult!r}")
    if target in options:
        raise ConfigError(f"model '{name}': give width_mult or {target}, not both")
    default = inspect.signature(entry.factory).parameters[target].default
    if isinstance(default, int):
        options[target] = max(1, round(default * mult))
    else:
        options[target] = [max(1, round(w * mult)) for w in default]
    return options

