"""hierlab: hierarchical latent structure in training data and the mechanisms it grows.

The package is organised by stage: :mod:`hierlab.corpus` (synthetic corpora),
:mod:`hierlab.train` (small Llama-style models), :mod:`hierlab.probes` (induction heads,
function vectors, Hydra effect, structure scores) and :mod:`hierlab.figures`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from hierlab.errors import ConfigError, DataError, HierlabError  # noqa: E402

__all__ = ["ConfigError", "DataError", "HierlabError", "__version__"]
