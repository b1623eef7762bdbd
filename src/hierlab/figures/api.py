"""``make_figures``: draw every figure of a run from its tables, in seconds.

Figures read tables only, never a model, so a change of style or threshold is redrawn
without rerunning a probe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

from hierlab.errors import ConfigError
from hierlab.figures import (
    fig2_loss,
    fig3_induction,
    fig3_mechanism,
    fig4_function_vectors,
    fig5_hydra,
    fig_in_context,
    structure,
)
from hierlab.figures.config import FiguresConfig
from hierlab.figures.data import RunData, load_run_data

log = logging.getLogger(__name__)

VARIANT_FIGURES = (fig3_induction, fig4_function_vectors, fig5_hydra, structure)
"""Figures drawn once per metric variant (Fig. 2, the loss, has no variant)."""


def make_figures(
    run_dir: Path,
    cfg: FiguresConfig | None = None,
    olmo_loss: Path | None = None,
    extra_runs: Iterable[Path] = (),
    data: RunData | None = None,
) -> list[Path]:
    """Draw all figures of ``run_dir`` into ``RUN/figures/``, from its tables only.

    Reads only ``RUN/metrics/*.parquet`` and ``RUN/models/<c>/{loss,eval}.csv, run.json``
    (plus those of ``extra_runs``, merged), never a model. Each figure is written in every
    format of ``cfg.formats`` with its data as ``<name>.csv``. A panel without data says
    "no data".

    Args:
        run_dir: the run directory.
        cfg: the figures section (None: the defaults).
        olmo_loss: a CSV of OLMo-1B's training loss for Fig. 2's third panel.
        extra_runs: other run directories whose models are merged in.
        data: the tables, when the caller already loaded them (not read again).

    Returns:
        The files written. A missing run dir or a run with nothing to draw is a
        :class:`~hierlab.errors.DataError`.
    """
    cfg = cfg or FiguresConfig()
    t0 = time.perf_counter()
    if data is None:
        data = load_run_data(run_dir, extra_runs=extra_runs, olmo_loss=olmo_loss)
    out_dir = Path(run_dir) / "figures"
    paths = fig2_loss.draw(data, out_dir, cfg)
    for module in VARIANT_FIGURES:
        for variant in cfg.variants:
            paths += module.draw(data, variant, out_dir, cfg)
    if "standard" in cfg.variants:  # loss by position and ICL score: standard rows only
        paths += fig_in_context.draw(data, out_dir, cfg)
        paths += fig3_mechanism.draw(data, out_dir, cfg)
    log.info("figures: %d files in %s (%.1f s)", len(paths), out_dir, time.perf_counter() - t0)
    return paths


def run_figures_config(run_dir: Path) -> FiguresConfig:
    """The ``figures`` section of ``RUN/config.yml`` (defaults when absent).

    Only that section is read, so a run written by an older or newer hierlab still draws.

    Args:
        run_dir: the run directory.

    Returns:
        The section, validated; an invalid one is a :class:`~hierlab.errors.ConfigError`.
    """
    import yaml
    from pydantic import ValidationError

    path = Path(run_dir) / "config.yml"
    if not path.is_file():
        return FiguresConfig()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    section = data.get("figures") if isinstance(data, dict) else None
    try:
        return FiguresConfig.model_validate(section or {})
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"{path}: figures.{loc}: {first['msg']}") from None
