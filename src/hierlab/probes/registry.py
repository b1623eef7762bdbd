"""The probe registry: which function measures each (probe, variant) unit.

Each probe module registers one function per variant with :func:`register` and the runner
looks units up here, so a new probe never touches the runner. How to add one:
docs/design-probes.md#registry.
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
    """Decorator: the decorated function measures ``(probe, variant)``.

    Args:
        probe: the probe's name (one of ``hierlab.contracts.PROBES``).
        variant: ``reference`` or ``standard``.

    Returns:
        The decorator; it returns the function unchanged.

    Raises:
        ConfigError: another function already measures ``(probe, variant)``.
    """

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
    """Every registered unit, in an order that does not depend on import order.

    Returns:
        ``{(probe, variant): unit}``, ordered by :data:`PROBE_MODULES` (then as
        registered), whichever module happened to be imported first.
    """
    _load()
    rank = {name: i for i, name in enumerate(PROBE_MODULES)}
    return dict(sorted(_UNITS.items(), key=lambda kv: rank.get(kv[1].__module__, len(rank))))


def probe_names() -> tuple[str, ...]:
    """The registered probes.

    Returns:
        Their names, in :data:`PROBE_MODULES` order.
    """
    return tuple(dict.fromkeys(p for p, _ in registered()))


def lookup(probe: str, variant: str) -> ProbeUnit:
    """The unit measuring ``(probe, variant)``.

    Args:
        probe: the probe's name.
        variant: ``reference`` or ``standard``.

    Returns:
        The registered function.

    Raises:
        ConfigError: an unknown probe, or a variant the probe lacks (naming the known ones).
    """
    units = registered()
    if (probe, variant) not in units:
        known = probe_names()
        if probe not in known:
            raise ConfigError(f"unknown probe {probe!r} (known: {', '.join(known)})")
        variants = [v for p, v in units if p == probe]
        raise ConfigError(f"probe {probe} has no variant {variant!r} "
                          f"(known: {', '.join(variants)})")
    return units[(probe, variant)]
