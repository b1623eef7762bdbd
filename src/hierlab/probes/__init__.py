"""Probes: induction heads, function vectors, the Hydra effect and structure scores.

Each probe has a ``reference`` variant (the reference study's definition, SPEC §5) and a
``standard`` one (the literature's). :func:`hierlab.probes.runner.run_probes` runs them over
checkpoints into tidy tables ``RUN/metrics/<probe>.parquet``; each probe module registers
its variants in :mod:`hierlab.probes.registry`, and :mod:`hierlab.probes.hooks` is the one
hook layer they share.
"""

from __future__ import annotations

__all__ = ["run_probes"]


def run_probes(*args, **kwargs):  # noqa: ANN002, ANN003 - thin lazy alias
    """Lazy alias of :func:`hierlab.probes.runner.run_probes` (keeps imports light)."""
    from hierlab.probes.runner import run_probes as _run

    return _run(*args, **kwargs)
