"""The sweep file: a base config plus a grid and/or a list of dotted-key overrides.

Every run's config is built and validated when the file is loaded, before any work, so
a typo in one run's key fails the whole sweep at once with the run and the field named.
Listed runs may name an ``arm`` and a ``seed``: the emergence statistics compare arms over
the seeds they share (``emergence`` section; :mod:`hierlab.sweep.emergence`).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hierlab.config import ExperimentConfig, config_from_dict, load_config
from hierlab.contracts import MECHANISM_LABELS
from hierlab.errors import ConfigError
from hierlab.overrides import apply_overrides

_SAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


class RunOverride(BaseModel):
    """One explicitly listed run: its name, its dotted-key overrides and, for the emergence
    statistics, the arm it belongs to and its seed (the key that pairs it across arms)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="run name (its directory under runs/)")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted key -> value")
    arm: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._=+-]+$",
        description="emergence statistics: the arm (condition) of this run; give with seed",
    )
    seed: int | None = Field(
        None, ge=0,
        description="emergence statistics: the pairing key; runs of two arms with the same "
        "seed form a pair. A label only: set training.seed (or corpus seeds) in 'set'",
    )


class EmergenceSettings(BaseModel):
    """How the emergence statistics read a sweep whose runs name an ``arm`` and ``seed``."""

    model_config = ConfigDict(extra="forbid")

    control: str = Field("F", description="the arm every other arm is paired with and "
                         "tested against (log ratios, pairwise log-rank)")
    label: str | list[str] = Field(
        "content induction", description="the mechanism label (a name of MECHANISM_LABELS), "
        "or a list of them, whose stable arrival is t*: a list counts any of its labels, e.g. "
        "[local content copy, content induction] for any content-matching copy head")
    model: str | None = Field(None, description="the model (corpus name) read in every run; "
                              "None: each armed run's only corpus")
    reference_score_threshold: float = Field(
        0.3, ge=0, le=1, description="alternative t*: the study's offset-n induction score "
        "(reference variant, k = 1, best head) stays >= this (claim C5's 0.3)")
    prefix_matching_threshold: float = Field(
        0.3, ge=0, le=1, description="alternative t*: standard prefix matching on repeated "
        "random ids (best head) stays >= this (the 0.3 of the random-repeat test)")
    statistic: Literal["mean", "median"] = Field(
        "mean", description="statistic of the paired log ratios over seeds")
    bootstrap_resamples: int = Field(10_000, ge=100, description="paired bootstrap resamples")
    confidence: float = Field(0.95, gt=0, lt=1, description="level of the bootstrap CI and "
                              "of the Kaplan-Meier bands")
    seed: int = Field(0, ge=0, description="seed of the bootstrap's numpy Generator")


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
    emergence: EmergenceSettings = Field(
        default_factory=EmergenceSettings,
        description="emergence statistics over the runs that name an arm and a seed",
    )


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its name, the overrides that define it and its validated config;
    ``arm`` and ``seed`` when the sweep file gives them (emergence statistics)."""

    name: str
    overrides: dict[str, Any]
    config: ExperimentConfig
    arm: str | None = None
    seed: int | None = None


def _fmt(value: Any) -> str:
    text = "none" if value is None else (str(value).lower() if isinstance(value, bool) else
                                          str(value))
    return _SAFE.sub("-", text).strip("-") or "x"


def grid_run_name(values: dict[str, Any]) -> str:
    """The deterministic, filesystem-safe name of a grid point, so reruns find its folder.

    Args:
        values: dotted key -> value of the point.

    Returns:
        ``leaf=value`` joined by ``+``, where leaf is the shortest unique tail of each
        dotted key (``base`` for no keys).
    """
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
              cli_overrides: dict[str, Any] | None = None) -> list[PlannedRun]:
    """Every run's name, overrides and validated config, before any work.

    Args:
        sweep: the sweep file's settings.
        sweep_file: the sweep file, to resolve a relative ``base`` path against.
        cli_overrides: dotted keys set on every run last (the command's ``--set``); a key
            the grid varies is refused, since it would make every grid point the same run.

    Returns:
        The planned runs, grid points first; an invalid run is a
        :class:`~hierlab.errors.ConfigError` naming the run and the field.
    """
    where = f"sweep '{sweep.name}'"
    cli = cli_overrides or {}
    clash = sorted(set(cli) & set(sweep.grid))
    if clash:
        raise ConfigError(f"--set {clash[0]}: the sweep's grid varies this key; set it in the "
                          "grid, or leave it out of --set")
    base = _base_dict(sweep.base, sweep_file)
    specs: list[tuple[str, dict[str, Any], str | None, int | None]] = []
    if sweep.grid:
        keys = list(sweep.grid)
        for combo in itertools.product(*(sweep.grid[k] for k in keys)):
            point = dict(zip(keys, combo, strict=True))
            specs.append((grid_run_name(point), point, None, None))
    specs += [(r.name, dict(r.set), r.arm, r.seed) for r in sweep.runs]
    if not specs:
        specs = [("base", {}, None, None)]
    runs, seen = [], set()
    for name, own, arm, seed in specs:
        if name in seen:
            raise ConfigError(f"{where}: run name '{name}' appears twice")
        if _SAFE.search(name) or name in (".", ".."):
            raise ConfigError(f"{where}: run '{name}': name must be filesystem-safe "
                              "(letters, digits, . _ = + -)")
        seen.add(name)
        overrides = {**sweep.set, **own, **cli}
        src = f"{where}: run '{name}'"
        data = apply_overrides({**base, "name": name}, overrides, src)
        runs.append(PlannedRun(name, overrides, config_from_dict(data, src), arm, seed))
    check_arms(runs, sweep.emergence, where)
    return runs


def check_arms(runs: list[PlannedRun], settings: EmergenceSettings, where: str) -> None:
    """Refuse, at load time, arms the emergence statistics could not read.

    That is an arm without a seed (or the reverse), an (arm, seed) given twice, a control
    that is no arm, a label that is no mechanism label, or a run whose model to read is
    ambiguous or absent.

    Args:
        runs: the planned runs.
        settings: the sweep's ``emergence`` section.
        where: the sweep's name, to start the error message with.
    """
    armed = [r for r in runs if r.arm is not None or r.seed is not None]
    if not armed:
        return
    pairs: dict[tuple[str, int], str] = {}
    for r in armed:
        src = f"{where}: run '{r.name}'"
        if r.arm is None or r.seed is None:
            raise ConfigError(f"{src}: arm and seed go together (give both or neither)")
        if (r.arm, r.seed) in pairs:
            raise ConfigError(f"{src}: arm '{r.arm}' seed {r.seed} is also run "
                              f"'{pairs[r.arm, r.seed]}' (one run per arm and seed)")
        pairs[r.arm, r.seed] = r.name
        corpora = list(r.config.corpora)
        if settings.model is None and len(corpora) != 1:
            raise ConfigError(f"{src}: emergence.model: the run trains {len(corpora)} models "
                              f"({', '.join(corpora)}); name the one to read")
        if settings.model is not None and settings.model not in corpora:
            raise ConfigError(f"{src}: emergence.model '{settings.model}' is not one of its "
                              f"corpora ({', '.join(corpora)})")
    arms = sorted({r.arm for r in armed if r.arm is not None})
    if settings.control not in arms:
        raise ConfigError(f"{where}: emergence.control: '{settings.control}' is not an arm "
                          f"(arms: {', '.join(arms)})")
    labels = [settings.label] if isinstance(settings.label, str) else settings.label
    wrong = [lab for lab in labels if lab not in MECHANISM_LABELS]
    if wrong or not labels:
        raise ConfigError(f"{where}: emergence.label: {wrong or labels} is not a mechanism "
                          f"label (allowed: {', '.join(MECHANISM_LABELS)})")


def load_sweep(
    path: str | Path, cli_overrides: dict[str, Any] | None = None
) -> tuple[SweepConfig, list[PlannedRun]]:
    """Read and validate a sweep file and every run it defines.

    Args:
        path: the sweep YAML file.
        cli_overrides: dotted-key overrides for every run, applied last (the command's
            ``--set``).

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
    return sweep, plan_runs(sweep, p, cli_overrides)
