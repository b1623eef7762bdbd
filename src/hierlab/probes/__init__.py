"""Probes: induction heads, function vectors, the Hydra effect and structure scores.

Each probe has a ``reference`` variant (the reference study's definition, docs/reference-study.md)
and a ``standard`` one (the literature's). :func:`hierlab.probes.runner.run_probes` runs them over
checkpoints into tidy tables ``RUN/metrics/<probe>.parquet``; each probe module registers
its variants in :mod:`hierlab.probes.registry`, and :mod:`hierlab.probes.hooks` is the one
hook layer they share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hierlab._lazy import lazy_getattr

if TYPE_CHECKING:  # pragma: no cover
    from hierlab.probes.runner import run_probes

__all__ = ["run_probes"]

__getattr__ = lazy_getattr(__name__, {"run_probes": "hierlab.probes.runner"})
