"""hierlab: hierarchical latent structure in training data and the mechanisms it grows.

The package is organised by stage: :mod:`hierlab.corpus` (synthetic corpora),
:mod:`hierlab.train` (small Llama-style models), :mod:`hierlab.probes` (induction heads,
function vectors, Hydra effect, structure scores) and :mod:`hierlab.figures`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING  # noqa: E402

from hierlab._lazy import lazy_getattr  # noqa: E402
from hierlab.errors import ConfigError, DataError, HierlabError  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from hierlab.notebook import Run, load_run

__all__ = ["ConfigError", "DataError", "HierlabError", "Run", "__version__", "load_run"]

# deferred so that `import hierlab` (every CLI command) stays free of pandas and torch
__getattr__ = lazy_getattr(__name__, {"load_run": "hierlab.notebook", "Run": "hierlab.notebook"})
