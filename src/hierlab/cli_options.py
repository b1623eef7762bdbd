"""Option types and checks shared by the ``hierlab`` commands.

Every check here runs before any work, so a bad option costs nothing and exits with status
2 naming the option; :func:`friendly` turns errors met while working into one line and
status 1. Nothing here imports torch unless ``--device cuda`` asks for it, or ``--help``
lists the probe registry (:class:`RegistryHelp`).
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperCommand

from hierlab.contracts import PROBES, STAGES, VARIANTS
from hierlab.errors import HierlabError, Preempted

__all__ = [
    "PROBES", "STAGES", "ConfigArg", "Engine", "OutOpt", "RegistryHelp", "SetOpt",
    "VariantChoice", "check_device", "comma_choice", "friendly", "overrides_of", "run_dir_of",
]

ConfigArg = Annotated[
    str | None,
    typer.Argument(
        help="experiment config: a YAML path or a shipped preset name ({presets}); "
        "default: the shipped quickstart",
        show_default=False,
    ),
]

SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="set one config field by its dotted key, e.g. training.lr=1e-3 or "
        "training.checkpoints.steps=[0, 60, 97]; the value is YAML (null = the default); "
        "repeatable, the last one of a key wins",
        show_default=False,
    ),
]


def overrides_of(items: list[str] | None) -> dict[str, Any]:
    """The ``--set KEY=VALUE`` items as dotted-key overrides.

    A malformed item or value is a one-line :class:`~hierlab.errors.ConfigError`; the keys
    themselves are checked later, with the config they apply to.

    Args:
        items: the option's values in the order given (None: the option was not used).

    Returns:
        dotted key -> value, for :func:`hierlab.overrides.apply_overrides`.
    """
    from hierlab.overrides import parse_assignments

    return parse_assignments(items or [])


def _presets() -> str:
    from hierlab.config import preset_names

    return ", ".join(preset_names())


def _probes() -> str:
    from hierlab.probes.registry import probe_names

    return ", ".join(probe_names())


def _variants() -> str:
    from hierlab.probes.registry import registered

    return ", ".join(dict.fromkeys(v for _, v in registered()))


#: help-text placeholders, filled from the registries when help is shown
_REGISTRIES: dict[str, Callable[[], str]] = {
    "{presets}": _presets, "{probes}": _probes, "{variants}": _variants,
}


class RegistryHelp(TyperCommand):
    """A command whose help lists what the registries hold (presets, probes, variants).

    The texts hold placeholders (``{probes}``) filled when help is shown, so the lists are
    always the registries' own and only ``--help`` pays for importing them (the probe
    registry imports every probe module, torch included).
    """

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Fill the registry placeholders, then let click write the help as usual.

        Args:
            ctx: click's context of the command.
            formatter: click's help formatter, written to.
        """
        for obj in [self, *self.params]:
            text = getattr(obj, "help", None)
            if text and "{" in text:
                for key, names in _REGISTRIES.items():
                    if key in text:
                        text = text.replace(key, names())
                obj.help = text
        super().format_help(ctx, formatter)


DEVICE_RE = re.compile(r"cpu|cuda(:\d+)?")


def check_device(value: str | None) -> str | None:
    """Check ``--device`` before any work: its syntax, and that CUDA exists if asked for.

    Args:
        value: the option's value (None: not given).

    Returns:
        ``value`` unchanged; a bad one raises :class:`typer.BadParameter` (exit status 2).
    """
    if value is None:
        return None
    if not DEVICE_RE.fullmatch(value):
        raise typer.BadParameter(f"{value!r}: expected cpu, cuda or cuda:N")
    if value.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise typer.BadParameter(f"{value!r}: no CUDA device is available")
    return value


def comma_choice(allowed: tuple[str, ...], what: str) -> Any:
    """A typer callback for a comma-separated option whose items must come from a list.

    Args:
        allowed: the names an item may take.
        what: what an item is (``probe``, ``stage``), named in the error.

    Returns:
        The callback: it returns the option's value unchanged, or raises
        :class:`typer.BadParameter` naming the unknown items and the allowed ones.
    """

    def check(value: str | None) -> str | None:
        if value is None:
            return None
        bad = [v.strip() for v in value.split(",") if v.strip() and v.strip() not in allowed]
        if bad:
            raise typer.BadParameter(f"unknown {what}(s) {bad} (allowed: {', '.join(allowed)})")
        return value

    return check


class Engine(StrEnum):
    """``--engine``: where corpus shards are built (local processes or a Dask cluster)."""

    local = "local"
    dask = "dask"


#: --variant: one of the contract's variants, or both
VariantChoice = StrEnum("VariantChoice", {v: v for v in (*VARIANTS, "both")})


OutOpt = Annotated[
    Path | None,
    typer.Option("--out", help="run directory; default runs/<config name>", show_default=False),
]


def friendly(command: Any) -> Any:
    """Decorate a command so that the errors a user can act on end in one line, no traceback.

    A :class:`~hierlab.errors.HierlabError` or a full disk prints ``error: ...`` and exits 1;
    a stop at a safe point prints ``stopped: ...`` and exits 128 + the signal; a
    ``KeyboardInterrupt`` (a second Ctrl-C) exits 130. Anything else is a bug and keeps
    its traceback.

    Args:
        command: the typer command function.

    Returns:
        The wrapped command, with logging set up and HF's per-load progress bars off.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        # our stages show their own progress; HF's per-load weight bars would drown it
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        try:
            return command(*args, **kwargs)
        except Preempted as err:  # stopped at a safe point on SIGTERM/SIGINT: where, how on
            typer.secho(f"stopped: {err}", fg="yellow", err=True)
            raise typer.Exit(err.exit_code) from None
        except HierlabError as err:
            typer.secho(f"error: {err}", fg="red", err=True)
            raise typer.Exit(1) from None
        except OSError as err:  # a full disk met outside hierlab's own writers
            from hierlab.io import disk_full_error, is_disk_full

            if not is_disk_full(err):
                raise
            where = err.filename or "a file"
            typer.secho(f"error: {disk_full_error(where)}", fg="red", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.secho("interrupted: finished outputs are kept; re-run to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper


def run_dir_of(cfg: Any, out: Path | None) -> Path:
    """Where a command writes: ``--out``, else ``runs/<config name>``.

    Args:
        cfg: the experiment config (its ``name`` gives the default).
        out: the ``--out`` option (None: not given).

    Returns:
        The run directory.
    """
    return out if out is not None else Path("runs") / cfg.name
