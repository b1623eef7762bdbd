"""Synthetic corpora: the hierarchical PCFG and the n-gram baseline, as Arrow shards.

The samplers are numba-compiled with an on-disk cache. Numba keys a cached function on
its own file only, not on the functions it inlines from other modules, so an edit to
``rng.py`` could leave a stale ``pcfg.py`` kernel in the cache. We therefore point the
cache at a folder named by a hash of this package's sources (unless ``NUMBA_CACHE_DIR``
is set): any change to any corpus module compiles afresh.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path


def _cache_dir() -> str:
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(here.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return str(root / "hierlab" / "numba" / digest.hexdigest()[:16])


if "NUMBA_CACHE_DIR" not in os.environ:
    os.environ["NUMBA_CACHE_DIR"] = _cache_dir()
    if "numba" in sys.modules:  # numba already configured: update it in place
        sys.modules["numba"].config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]
