"""The experiment config: one typed section per stage, loaded from YAML.

``load_config(None)`` returns the quickstart config shipped inside the package, so every
``hierlab`` command works without a path. Validation errors become one-line
:class:`~hierlab.errors.ConfigError` messages that name the field and what is allowed.
"""

from __future__ import annotations

import copy
import types
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hierlab.corpus.config import CorpusConfig, NgramConfig, PcfgConfig
from hierlab.errors import ConfigError
from hierlab.figures.config import FiguresConfig
from hierlab.overrides import apply_overrides
from hierlab.probes.config import ProbesConfig
from hierlab.train.config import ModelConfig, TrainingConfig

__all__ = [
    "CorpusOverrides",
    "ExperimentConfig",
    "NgramConfig",
    "PcfgConfig",
    "load_config",
    "preset_names",
]


#: ``probes`` fields that say where the checkpoints come from and how a probe run is split
#: and run: one value for the whole run, so a corpus cannot override them
RUN_WIDE_PROBES = ("probes", "variants", "checkpoints", "device", "hub", "merge_timeout_s")


class CorpusOverrides(BaseModel):
    """One corpus's own settings, merged key by key over the experiment's sections.

    Each section is a partial mapping (only the fields that differ); nested sections merge
    at every depth, any other value (a number, a list, null) replaces the experiment's.
    """

    model_config = ConfigDict(extra="forbid")

    model: dict[str, Any] = Field(
        default_factory=dict,
        description="model fields of this corpus's model (e.g. context_length), merged over "
        "'model'",
    )
    training: dict[str, Any] = Field(
        default_factory=dict,
        description="training fields of this corpus's model (batch_size, lr, max_tokens, "
        "checkpoints, ...), merged over 'training'",
    )
    probes: dict[str, Any] = Field(
        default_factory=dict,
        description="probe settings for this corpus's checkpoints (induction.n, hydra, "
        "mechanism, ...), merged over 'probes'; not the run-wide "
        + ", ".join(RUN_WIDE_PROBES),
    )


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in: mappings key by key at every depth, anything else
    replaced, so an override names only the fields that differ."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


_Section = TypeVar("_Section", bound=BaseModel)
#: the corpus kinds, read off the corpus union so that a new kind is named in errors at once
_KINDS = [f"'{get_args(m.model_fields['kind'].annotation)[0]}'"
          for m in get_args(get_args(CorpusConfig)[0])]


def _merged(base: _Section, given: dict[str, Any], where: tuple[str, ...]) -> _Section:
    """``base`` with ``given`` merged in, validated as the whole section would be; an error
    is a ValueError located under ``where`` (``per_corpus.<name>.<section>``)."""
    if not given:
        return base
    try:
        return type(base).model_validate(_merge(base.model_dump(mode="json"), given))
    except ValidationError as err:
        raise ValueError(_describe(err, where, type(base))) from None


def _check_sections(model: ModelConfig, training: TrainingConfig, probes: ProbesConfig) -> None:
    """Settings that are valid alone but not together, refused at load time rather than at
    first use (minutes into a run). Raises ValueError naming the fields."""
    t = training
    if t.micro_batch_size is not None and t.micro_batch_size > t.batch_size:
        raise ValueError(
            f"training.micro_batch_size ({t.micro_batch_size}) must be <= "
            f"training.batch_size ({t.batch_size})"
        )
    if probes.checkpoints is None:  # probing this run's models: their context is known
        ctx = model.context_length
        for field, value, halves in _probe_lengths(probes):
            if value * halves <= ctx:
                continue
            if halves == 1:
                raise ValueError(f"probes.{field} ({value}) is longer than "
                                 f"model.context_length ({ctx}); set it <= {ctx} or null "
                                 "(= the model's context)")
            raise ValueError(f"probes.{field} ({value}) is repeated twice: {2 * value} "
                             f"tokens, longer than model.context_length ({ctx}); set it "
                             f"<= {ctx // 2}")


def _probe_lengths(probes: ProbesConfig) -> list[tuple[str, int, int]]:
    """(field, value, halves) of every probe length given in tokens, where a prompt needs
    ``value * halves`` tokens; induction prompts are a span and its repeat. Only the
    probes that run (``probes.probes``) are checked: a section that never runs cannot
    fail (a ``--probes`` choice beyond the config is checked at first use)."""
    ind, hy = probes.induction, probes.hydra
    out = [("induction.n", ind.n, 2)]
    out += [(f, v, h) for f, v, h in (("induction.indist_n", ind.indist_n, 2),
                                      ("induction.icl_length", ind.icl_length, 1),
                                      ("hydra.length", hy.length, 1),
                                      ("hydra.standard_length", hy.standard_length, 1))
            if v is not None]
    running = set(probes.probes)
    return [(f, v, h) for f, v, h in out if f.split(".")[0] in running]


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
    per_corpus: dict[str, CorpusOverrides] = Field(
        default_factory=dict,
        description="corpus name -> its own model, training and probes settings, merged "
        "over the experiment's sections (a corpus not named here uses them as they are)",
    )

    @model_validator(mode="after")
    def _cross_field(self) -> ExperimentConfig:
        """Settings that are valid alone but not together, refused at load time rather than
        at first use (minutes into a run): for every corpus, with its own settings."""
        unknown = [k for k in self.per_corpus if k not in self.corpora]
        if unknown:
            raise ValueError(f"per_corpus.{unknown[0]}: not a corpus of the config (corpora: "
                             f"{', '.join(self.corpora) or 'none'})")
        if not self.corpora or set(self.corpora) - set(self.per_corpus):
            _check_sections(self.model, self.training, self.probes)  # the shared settings
        for name in self.per_corpus:
            sections = self._sections(name)  # its own errors are located already
            try:
                _check_sections(*sections)
            except ValueError as err:
                raise ValueError(f"per_corpus.{name}: {err}") from None
        return self

    def _sections(self, name: str) -> tuple[ModelConfig, TrainingConfig, ProbesConfig]:
        """The model, training and probes sections of corpus ``name``: the experiment's,
        with the corpus's ``per_corpus`` settings merged in and validated as a whole."""
        over = self.per_corpus.get(name)
        if over is None:
            return self.model, self.training, self.probes
        bad = [k for k in over.probes if k in RUN_WIDE_PROBES]
        if bad:
            raise ValueError(f"per_corpus.{name}.probes.{bad[0]}: applies to the whole run; "
                             "set it in the experiment's probes section (a corpus may set "
                             "seed, dtype and the probes' own sections)")
        return (_merged(self.model, over.model, ("per_corpus", name, "model")),
                _merged(self.training, over.training, ("per_corpus", name, "training")),
                _merged(self.probes, over.probes, ("per_corpus", name, "probes")))

    def for_corpus(self, name: str) -> ExperimentConfig:
        """The config one corpus's model is trained and probed with.

        The stages train and probe each corpus with its own settings through this, so a
        corpus that needs another model shape or other probe lengths (``per_corpus``) sits
        in the same run as the others.

        Args:
            name: a corpus of the config.

        Returns:
            A config whose ``corpora`` holds only that corpus, whose ``model``, ``training``
            and ``probes`` are the corpus's merged settings and whose ``per_corpus`` is
            empty (already applied).

        Raises:
            ConfigError: ``name`` is not a corpus of the config.
        """
        if name not in self.corpora:
            raise ConfigError(f"{name!r} is not a corpus of the config (corpora: "
                              f"{', '.join(self.corpora) or 'none'})")
        model, training, probes = self._sections(name)
        return ExperimentConfig(name=self.name, corpora={name: self.corpora[name]},
                                model=model, training=training, probes=probes,
                                figures=self.figures)


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


def _fields_at(loc: tuple[Any, ...], root: Any = None) -> list[str] | None:
    """The field names of the config section at ``loc`` below ``root`` (the experiment
    config by default), or None if it is not a section."""
    tp: Any = ExperimentConfig if root is None else root
    for part in loc:
        tp = _step(tp, str(part))
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return list(tp.model_fields) if _is_model(tp) else None


def _describe(err: ValidationError, prefix: tuple[str, ...] = (), root: Any = None) -> str:
    """The first error of ``err`` as ``field: what is wrong``, its location under
    ``prefix`` when ``err`` came from validating a section (``root``) on its own."""
    first = err.errors()[0]
    loc = ".".join([*prefix, *(str(x) for x in first["loc"]
                               if not str(x).startswith("function-"))])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
        parent = first["loc"][:-1]
        where = ".".join([*prefix, *map(str, parent)]) or "top level"
        fields = _fields_at(tuple(parent), root)
        msg += (f" (the fields of '{where}': {', '.join(fields)})" if fields else
                f" (check the spelling; see the config reference for the fields of '{where}')")
    elif first["type"] == "union_tag_invalid":
        msg = f"'kind' must be {', '.join(_KINDS[:-1])} or {_KINDS[-1]}"
    elif first["type"] == "union_tag_not_found":
        msg = f"missing 'kind' (one of {', '.join(_KINDS)})"
    got = first.get("input")
    suffix = ""
    if first["type"] not in ("extra_forbidden", "missing") and not isinstance(got, (dict, list)):
        suffix = f" (got {got!r})"
    more = f" [+{len(err.errors()) - 1} more]" if len(err.errors()) > 1 else ""
    where = f"{loc}: " if loc else ""  # cross-field errors name their fields in the message
    return f"{where}{msg}{suffix}{more}"


def _format_error(err: ValidationError, source: str) -> str:
    return f"{source}: {_describe(err)}"


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
