"""The probe registry: which function measures each (probe, variant) unit.

A probe module registers one function per variant::

    @register("induction", "reference")
    def induction_reference_unit(ctx: ProbeContext) -> list[Row]: ...

The function gets the checkpoint's :class:`~hierlab.probes.context.ProbeContext` and
returns the unit's rows without the checkpoint columns (``[]`` = does not apply). A new
probe is therefore its module plus one line in :data:`PROBE_MODULES` (and its name in
``hierlab.contracts.PROBES``, which a test keeps equal to the registry). Modules are
imported on the first lookup, so importing the registry stays light.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hierlab.errors import ConfigError

if TYPE_CHECKING:
    from hierlab.probes.context import ProbeContext

Row = dict[str, Any]
ProbeUnit = Callable[["ProbeContext"], list[Row]]

#: the modules that register probe variants; probes are listed in this order
PROBE_MODULES: tuple[str, ...] = (
    "hierlab.probes.induction",
    "hierlab.probes.fv_reference",
    "hierlab.probes.function_vectors",
    "hierlab.probes.hydra",
    "hierlab.probes.structure",
    "hierlab.probes.mechanism",
)

_UNITS: dict[tuple[str, str], ProbeUnit] = {}

__all__ = ["PROBE_MODULES", "ProbeUnit", "lookup", "probe_names", "register", "registered"]


def register(probe: str, variant: str) -> Callable[[ProbeUnit], ProbeUnit]:
    """Decorator: ``fn`` measures ``(probe, variant)``; registering a unit twice is an error."""

    def deco(fn: ProbeUnit) -> ProbeUnit:
        key = (probe, variant)
        if key in _UNITS and _UNITS[key] is not fn:
            raise ConfigError(f"probe {probe}/{variant} registered twice "
                              f"({_UNITS[key].__module__} and {fn.__module__})")
        _UNITS[key] = fn
        return fn

    return deco


def _load() -> None:
    for name in PROBE_MODULES:
        importlib.import_module(name)


def registered() -> dict[tuple[str, str], ProbeUnit]:
    """Every ``(probe, variant) -> unit``, ordered by :data:`PROBE_MODULES` (then as
    registered), whichever module happened to be imported first."""
    _load()
    rank = {name: i for i, name in enumerate(PROBE_MODULES)}
    return dict(sorted(_UNITS.items(), key=lambda kv: rank.get(kv[1].__module__, len(rank))))


def probe_names() -> tuple[str, ...]:
    """The registered probes, in :data:`PROBE_MODULES` order."""
    return tuple(dict.fromkeys(p for p, _ in registered()))


def lookup(probe: str, variant: str) -> ProbeUnit:
    """The unit measuring ``(probe, variant)``; a :class:`ConfigError` for unknown ones."""
    units = registered()
    if (probe, variant) not in units:
        known = probe_names()
        if probe not in known:
            raise ConfigError(f"unknown probe {probe!r} (known: {', '.join(known)})")
        variants = [v for p, v in units if p == probe]
        raise ConfigError(f"probe {probe} has no variant {variant!r} "
                          f"(known: {', '.join(variants)})")
    return units[(probe, variant)]
