"""The experiment config: one typed section per stage, loaded from YAML.

``load_config(None)`` returns the quickstart config shipped inside the package, so every
``hierlab`` command works without a path. Validation errors become one-line
:class:`~hierlab.errors.ConfigError` messages that name the field and what is allowed.
"""

from __future__ import annotations

import types
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hierlab.corpus.config import CorpusConfig, NgramConfig, PcfgConfig
from hierlab.errors import ConfigError
from hierlab.figures.config import FiguresConfig
from hierlab.overrides import apply_overrides
from hierlab.probes.config import ProbesConfig
from hierlab.train.config import ModelConfig, TrainingConfig

__all__ = [
    "ExperimentConfig",
    "NgramConfig",
    "PcfgConfig",
    "load_config",
    "preset_names",
]


class ExperimentConfig(BaseModel):
    """Everything one study needs: corpora, model, training, probes, figures."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field("experiment", description="run name; default output dir is runs/<name>")
    corpora: dict[str, CorpusConfig] = Field(
        default_factory=dict, description="corpus name -> pcfg, ngram or copy settings"
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    probes: ProbesConfig = Field(default_factory=ProbesConfig)
    figures: FiguresConfig = Field(default_factory=FiguresConfig)

    @model_validator(mode="after")
    def _cross_field(self) -> ExperimentConfig:
        """Settings that are valid alone but not together, refused at load time rather than
        at first use (minutes into a run)."""
        t = self.training
        if t.micro_batch_size is not None and t.micro_batch_size > t.batch_size:
            raise ValueError(
                f"training.micro_batch_size ({t.micro_batch_size}) must be <= "
                f"training.batch_size ({t.batch_size})"
            )
        if self.probes.checkpoints is None:  # probing this run's models: their context is known
            ctx = self.model.context_length
            for field, value, halves in self._probe_lengths():
                if value * halves <= ctx:
                    continue
                if halves == 1:
                    raise ValueError(f"probes.{field} ({value}) is longer than "
                                     f"model.context_length ({ctx}); set it <= {ctx} or null "
                                     "(= the model's context)")
                raise ValueError(f"probes.{field} ({value}) is repeated twice: {2 * value} "
                                 f"tokens, longer than model.context_length ({ctx}); set it "
                                 f"<= {ctx // 2}")
        return self

    def _probe_lengths(self) -> list[tuple[str, int, int]]:
        """(field, value, halves) of every probe length given in tokens, where a prompt needs
        ``value * halves`` tokens; induction prompts are a span and its repeat. Only the
        probes that run (``probes.probes``) are checked: a section that never runs cannot
        fail (a ``--probes`` choice beyond the config is checked at first use)."""
        ind, hy = self.probes.induction, self.probes.hydra
        out = [("induction.n", ind.n, 2)]
        out += [(f, v, h) for f, v, h in (("induction.indist_n", ind.indist_n, 2),
                                          ("induction.icl_length", ind.icl_length, 1),
                                          ("hydra.length", hy.length, 1),
                                          ("hydra.standard_length", hy.standard_length, 1))
                if v is not None]
        running = set(self.probes.probes)
        return [(f, v, h) for f, v, h in out if f.split(".")[0] in running]


def preset_names() -> list[str]:
    """Names of the configs shipped inside the package, for help texts and path lookup.

    Returns:
        The preset names, sorted (``gpu``, ``paper``, ``quickstart``, ...).
    """
    root = resources.files("hierlab") / "configs"
    return sorted(p.name[:-4] for p in root.iterdir() if p.name.endswith(".yml"))


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _step(tp: Any, part: str) -> Any:
    """The type one error-location part below ``tp``: a model's field, a mapping's value
    (a corpus name), a tagged union's member (``kind``), an optional's model."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if _is_model(tp):
        field = tp.model_fields.get(part)
        return None if field is None else field.annotation
    if get_origin(tp) is dict:
        return get_args(tp)[1]
    if get_origin(tp) in (Union, types.UnionType):
        models = [a for a in get_args(tp) if _is_model(a)]
        for m in models:
            kind = m.model_fields.get("kind")
            if kind is not None and kind.default == part:
                return m
        if len(models) == 1:
            return _step(models[0], part)
    return None


def _fields_at(loc: tuple[Any, ...]) -> list[str] | None:
    """The field names of the config section at ``loc``, or None if it is not a section."""
    tp: Any = ExperimentConfig
    for part in loc:
        tp = _step(tp, str(part))
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return list(tp.model_fields) if _is_model(tp) else None


def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(x) for x in first["loc"] if not str(x).startswith("function-"))
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
        parent = first["loc"][:-1]
        where = ".".join(map(str, parent)) or "top level"
        fields = _fields_at(tuple(parent))
        msg += (f" (the fields of '{where}': {', '.join(fields)})" if fields else
                f" (check the spelling; see the config reference for the fields of '{where}')")
    elif first["type"] == "union_tag_invalid":
        msg = "'kind' must be 'pcfg' or 'ngram'"
    elif first["type"] == "union_tag_not_found":
        msg = "missing 'kind' (one of 'pcfg', 'ngram')"
    got = first.get("input")
    suffix = ""
    if first["type"] not in ("extra_forbidden", "missing") and not isinstance(got, (dict, list)):
        suffix = f" (got {got!r})"
    more = f" [+{len(err.errors()) - 1} more]" if len(err.errors()) > 1 else ""
    where = f"{loc}: " if loc else ""  # cross-field errors name their fields in the message
    return f"{source}: {where}{msg}{suffix}{more}"


def config_from_dict(data: dict[str, Any], source: str = "<config>") -> ExperimentConfig:
    """Validate a plain dict (as loaded from YAML) into an :class:`ExperimentConfig`.

    Args:
        data: the config as a plain dict.
        source: where it came from, to start the error message with.

    Returns:
        The validated config; an invalid one raises a one-line
        :class:`~hierlab.errors.ConfigError` naming the field and what is allowed.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a mapping, got {type(data).__name__}")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> ExperimentConfig:
    """Load a YAML config, with dotted-key overrides.

    Args:
        path: a YAML file, or a preset name (``None``: the shipped quickstart).
        overrides: dotted key -> value set on top of the file's config (the commands'
            ``--set``; see :func:`hierlab.overrides.apply_overrides`), then validated.

    Returns:
        The validated config.
    """
    if path is None:
        path = "quickstart"
    p = Path(path)
    if not p.exists() and str(path) in preset_names():
        text = (resources.files("hierlab") / "configs" / f"{path}.yml").read_text()
        source = f"preset '{path}'"
    elif p.is_file():
        text = p.read_text()
        source = str(p)
    else:
        raise ConfigError(
            f"{path}: no such config file or preset (presets: {', '.join(preset_names())})"
        )
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML ({str(err).splitlines()[0]})") from None
    if overrides:
        data = apply_overrides(config_from_dict(data, source).model_dump(mode="json"),
                               overrides, "--set")
        source = f"{source} with --set"
    return config_from_dict(data, source)
