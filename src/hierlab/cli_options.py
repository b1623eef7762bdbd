"""Option types and checks shared by the ``hierlab`` commands.

Every check here runs before any work, so a bad option costs nothing and exits with status
2 naming the option; :func:`friendly` turns errors met while working into one line and
status 1. Nothing here imports torch unless ``--device cuda`` asks for it.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from hierlab.contracts import PROBES, STAGES
from hierlab.errors import HierlabError, Preempted

__all__ = [
    "PROBES", "STAGES", "ConfigArg", "Engine", "OutOpt", "VariantChoice", "check_device",
    "comma_choice", "friendly", "run_dir_of",
]

ConfigArg = Annotated[
    str | None,
    typer.Argument(
        help="experiment config: a YAML path or a shipped preset name (quickstart, paper, ...); "
        "default: the shipped quickstart",
        show_default=False,
    ),
]


DEVICE_RE = re.compile(r"cpu|cuda(:\d+)?")


def check_device(value: str | None) -> str | None:
    """--device is checked before any work: its syntax, and that CUDA exists if asked for."""
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
    def check(value: str | None) -> str | None:
        if value is None:
            return None
        bad = [v.strip() for v in value.split(",") if v.strip() and v.strip() not in allowed]
        if bad:
            raise typer.BadParameter(f"unknown {what}(s) {bad} (allowed: {', '.join(allowed)})")
        return value

    return check


class Engine(StrEnum):
    local = "local"
    dask = "dask"


class VariantChoice(StrEnum):
    reference = "reference"
    standard = "standard"
    both = "both"


OutOpt = Annotated[
    Path | None,
    typer.Option("--out", help="run directory; default runs/<config name>", show_default=False),
]


def friendly(fn: Any) -> Any:
    """Turn HierlabError into a one-line message and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        # our stages show their own progress; HF's per-load weight bars would drown it
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        try:
            return fn(*args, **kwargs)
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
    """--out, else runs/<config name>."""
    return out if out is not None else Path("runs") / cfg.name
