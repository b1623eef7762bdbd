"""Dotted-key overrides of a config: ``training.lr=1e-3`` on the command line or in a sweep.

One engine for both: the sweep file's ``set``/``grid``/``runs`` and the commands' repeatable
``--set KEY=VALUE`` apply their overrides with :func:`apply_overrides` to the config as a
plain dict, and the result is validated like any config file, so a typo in a key or a bad
value is the same one-line :class:`~hierlab.errors.ConfigError` wherever it comes from.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

import yaml

from hierlab.errors import ConfigError

__all__ = ["apply_overrides", "parse_assignments"]

#: 1e-3: a number in YAML 1.2 and to every user, a string to PyYAML (YAML 1.1 wants 1.0e-3)
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _numbers(value: Any) -> Any:
    if isinstance(value, str) and _EXPONENT.fullmatch(value):
        return float(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any], where: str) -> dict[str, Any]:
    """A copy of ``data`` with dotted keys set.

    Args:
        data: the config as a plain dict (what a YAML file holds).
        overrides: dotted key (``corpora.pcfg.seed``) -> value; a ``None`` value deletes the
            key (a corpus, or a field, which then takes its default).
        where: what the overrides come from, to start the error message with.

    Returns:
        The changed copy; ``data`` is left as it was.
    """
    out = copy.deepcopy(data)
    for key, value in overrides.items():
        parts = str(key).split(".")
        if not all(parts):
            raise ConfigError(f"{where}: '{key}': empty part in dotted key")
        node: Any = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part) if isinstance(node, dict) else None
            if nxt is None and isinstance(node, dict) and value is not None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                if value is None:
                    break  # deleting below something absent: nothing to do
                raise ConfigError(
                    f"{where}: '{key}': {'.'.join(parts[: i + 1])} is not a section"
                )
            node = nxt
        else:
            if value is None:
                node.pop(parts[-1], None)
            else:
                node[parts[-1]] = copy.deepcopy(value)
    return out


def parse_assignments(items: Iterable[str], option: str = "--set") -> dict[str, Any]:
    """``KEY=VALUE`` strings as overrides, each value read as YAML (``0.5``, ``true``,
    ``null``, ``[0, 60, 97]``, ``{schedule: list}``) so it has the type a config file gives;
    ``3e-4`` is a number too.

    Args:
        items: the assignments in the order given; a later one for the same key wins.
        option: the option they came from, named in the error message.

    Returns:
        dotted key -> value, for :func:`apply_overrides`.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(c.isspace() for c in key):
            raise ConfigError(f"{option} {item!r}: expected KEY=VALUE with a dotted key, "
                              "e.g. training.lr=1e-3")
        try:
            out[key] = _numbers(yaml.safe_load(text)) if text.strip() else ""
        except yaml.YAMLError as err:
            first = str(err).splitlines()[0]
            raise ConfigError(f"{option} {key}: {text!r} is not a YAML value ({first}); "
                              "allowed: a number, a string, true/false, null or a [list]"
                              ) from None
    return out
