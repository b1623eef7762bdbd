"""The one place the corpus kernels get ``njit`` from, with their on-disk cache folder.

Numba keys a cached function on its own file only, not on the functions it inlines from
other modules, so the kernels are cached in a folder named by a hash of this package's
sources: any change to any corpus module compiles afresh. A folder the user chose is kept;
why it is set through numba's config: ``docs/design-pipeline.md``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numba
from numba import njit

__all__ = ["CACHE_DIR", "njit", "source_cache_dir"]


def source_cache_dir() -> str:
    """The kernel cache folder of exactly these corpus sources.

    Returns:
        ``$XDG_CACHE_HOME/hierlab/numba/<hash of the corpus package's sources>``
        (``~/.cache`` without ``XDG_CACHE_HOME``).
    """
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(here.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return str(root / "hierlab" / "numba" / digest.hexdigest()[:16])


if not numba.config.CACHE_DIR:
    numba.config.CACHE_DIR = source_cache_dir()
#: the folder the corpus kernels are cached in
CACHE_DIR: str = numba.config.CACHE_DIR
