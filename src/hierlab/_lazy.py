"""The one lazy-import helper of the package ``__init__`` modules.

``import hierlab`` (and so every CLI command and every config load) must stay free of
torch, pandas and matplotlib; a package therefore names its heavy public objects and
imports them on first attribute access (PEP 562).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_getattr(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``names[attr]`` (a module path) on first use.

    Args:
        package: the package's ``__name__``, named in the error for an unknown attribute.
        names: public attribute -> the module that defines it.

    Returns:
        The function to assign to the package's ``__getattr__``.
    """

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
