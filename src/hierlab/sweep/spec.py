"""The sweep file: a base config plus a grid and/or a list of dotted-key overrides.

Every run's config is built and validated when the file is loaded, before any work, so
a typo in one run's key fails the whole sweep at once with the run and the field named.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hierlab.config import ExperimentConfig, config_from_dict, load_config
from hierlab.errors import ConfigError
from hierlab.overrides import apply_overrides

_SAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


class RunOverride(BaseModel):
    """One explicitly listed run: its name and its dotted-key overrides."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="run name (its directory under runs/)")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted key -> value")


class SweepConfig(BaseModel):
    """A sweep: ``base`` config, shared ``set``, a cartesian ``grid`` and explicit ``runs``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("sweep", description="sweep name; default output dir is sweeps/<name>")
    base: str = Field("quickstart", description="preset name or path of the base config")
    parallel: int = Field(1, ge=1, description="runs at once (threads split between them)")
    set: dict[str, Any] = Field(default_factory=dict, description="overrides for every run")
    grid: dict[str, list[Any]] = Field(
        default_factory=dict, description="dotted key -> values; one run per combination"
    )
    runs: list[RunOverride] = Field(default_factory=list, description="explicit runs")


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its name, the overrides that define it and its validated config."""

    name: str
    overrides: dict[str, Any]
    config: ExperimentConfig


def _fmt(value: Any) -> str:
    text = "none" if value is None else (str(value).lower() if isinstance(value, bool) else
                                          str(value))
    return _SAFE.sub("-", text).strip("-") or "x"


def grid_run_name(values: dict[str, Any]) -> str:
    """Deterministic, filesystem-safe name of a grid point: ``leaf=value`` joined by ``+``,
    where leaf is the shortest unique tail of each dotted key."""
    keys = list(values)
    tails = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            tail = ".".join(parts[-n:])
            if sum(k.endswith(tail) and (k == tail or k.endswith("." + tail)) for k in keys) == 1:
                break
        tails[key] = tail
    return "+".join(f"{_SAFE.sub('-', tails[k])}={_fmt(values[k])}" for k in keys) or "base"


def _base_dict(base: str, sweep_file: Path | None) -> dict[str, Any]:
    path = Path(base)
    if sweep_file is not None and not path.is_absolute() and not path.exists():
        rel = sweep_file.parent / path
        if rel.exists():
            base = str(rel)
    return load_config(base).model_dump(mode="json")


def plan_runs(sweep: SweepConfig, sweep_file: Path | None = None,
              cli: dict[str, Any] | None = None) -> list[PlannedRun]:
    """Every run's name, overrides and validated config (errors name the run and field).
    ``cli`` (the command's ``--set``) overrides every run last; a key the grid varies is
    refused, since it would make every grid point the same run."""
    where = f"sweep '{sweep.name}'"
    cli = cli or {}
    clash = sorted(set(cli) & set(sweep.grid))
    if clash:
        raise ConfigError(f"--set {clash[0]}: the sweep's grid varies this key; set it in the "
                          "grid, or leave it out of --set")
    base = _base_dict(sweep.base, sweep_file)
    specs: list[tuple[str, dict[str, Any]]] = []
    if sweep.grid:
        keys = list(sweep.grid)
        for combo in itertools.product(*(sweep.grid[k] for k in keys)):
            point = dict(zip(keys, combo, strict=True))
            specs.append((grid_run_name(point), point))
    specs += [(r.name, dict(r.set)) for r in sweep.runs]
    if not specs:
        specs = [("base", {})]
    runs, seen = [], set()
    for name, own in specs:
        if name in seen:
            raise ConfigError(f"{where}: run name '{name}' appears twice")
        if _SAFE.search(name) or name in (".", ".."):
            raise ConfigError(f"{where}: run '{name}': name must be filesystem-safe "
                              "(letters, digits, . _ = + -)")
        seen.add(name)
        overrides = {**sweep.set, **own, **cli}
        src = f"{where}: run '{name}'"
        data = apply_overrides({**base, "name": name}, overrides, src)
        runs.append(PlannedRun(name, overrides, config_from_dict(data, src)))
    return runs


def load_sweep(
    path: str | Path, cli: dict[str, Any] | None = None
) -> tuple[SweepConfig, list[PlannedRun]]:
    """Read and validate a sweep file and every run it defines.

    Args:
        path: the sweep YAML file.
        cli: dotted-key overrides for every run, applied last (the command's ``--set``).

    Returns:
        The sweep's settings and its planned runs, each with its validated config.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such sweep file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the sweep file must be a mapping")
    try:
        sweep = SweepConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(map(str, first["loc"]))
        raise ConfigError(f"{p}: {loc}: {first['msg']}") from None
    return sweep, plan_runs(sweep, p, cli)
