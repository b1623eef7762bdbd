"""The ``hierlab`` command line: a thin typer layer over the Python API.

Each command parses options, calls one API function and shows progress. Exit status
follows the Unix/click convention: 2 for a usage error (an unknown option, a value outside
its choices: checked before any work is done, the message names the option), 1 for an
error met while working (a bad config file, missing data: a
:class:`~hierlab.errors.HierlabError`, printed as one line without a traceback), 130 when
interrupted. ``python -m hierlab`` runs the same app.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from hierlab import __version__
from hierlab.cli_options import (
    PROBES,
    STAGES,
    ConfigArg,
    Engine,
    OutOpt,
    RegistryHelp,
    SetOpt,
    VariantChoice,
    check_device,
    comma_choice,
    friendly,
    overrides_of,
    run_dir_of,
)

app = typer.Typer(
    help="hierlab: corpora with controlled hierarchical latent structure, small Llama models "
    "trained on them, and the probes (induction heads, function vectors, Hydra effect) that "
    "track mechanisms across checkpoints.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hierlab {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", help="print the version and exit", is_eager=True,
                     callback=_version),
    ] = False,
) -> None:
    """Options before the command (the app's help text is set on ``app``)."""


@app.command(cls=RegistryHelp)
@friendly
def corpus(
    config: ConfigArg = None,
    out: OutOpt = None,
    set_: SetOpt = None,
    workers: Annotated[int, typer.Option(help="local worker processes", min=1)] = 1,
    only: Annotated[
        str | None, typer.Option(help="generate only this corpus (a name under 'corpora')")
    ] = None,
    engine: Annotated[
        Engine,
        typer.Option(help="'local' (processes on this machine) or 'dask' (extra 'scale')"),
    ] = Engine.local,
    scheduler: Annotated[
        str | None,
        typer.Option(help="dask scheduler address (tcp://host:8786); default: a local cluster"),
    ] = None,
) -> None:
    """Generate every corpus of the config into OUT/corpus/<name>/{train,test}/.

    Shards are written atomically and recorded as they finish, so a killed run resumes
    where it stopped; the bytes do not depend on --workers or --engine.
    """
    from hierlab.config import load_config
    from hierlab.corpus.generate import generate_corpora

    cfg = load_config(config, overrides_of(set_))
    run_dir = run_dir_of(cfg, out)
    paths = generate_corpora(
        cfg.corpora, run_dir, only=only, workers=workers, engine=engine.value, scheduler=scheduler
    )
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")


@app.command("corpus-stats")
@friendly
def corpus_stats_cmd(
    corpus_dir: Annotated[Path, typer.Argument(help="a corpus folder: RUN/corpus/<name>")],
    max_tokens: Annotated[
        int, typer.Option(help="read at most this many tokens per split (0 = all)")
    ] = 20_000_000,
) -> None:
    """Print and save (stats.json) the statistics of a generated corpus.

    Tokens, sentences, sentence-length histogram, SVO/VSO ratio, rank-frequency fit per
    role, unique-sentence fraction, train/test sentence overlap, and the loss floors.
    """
    from hierlab.corpus.stats import corpus_stats, format_stats

    stats = corpus_stats(corpus_dir, max_tokens=max_tokens or None)
    typer.echo(format_stats(stats))
    typer.echo(f"saved {corpus_dir / 'stats.json'}")


@app.command(cls=RegistryHelp)
@friendly
def config(
    config: ConfigArg = None,
    set_: SetOpt = None,
) -> None:
    """Validate a config and print it with every default filled in (YAML)."""
    import yaml

    from hierlab.config import load_config

    cfg = load_config(config, overrides_of(set_))
    yaml.safe_dump(cfg.model_dump(mode="json"), sys.stdout, sort_keys=False)


@app.command(cls=RegistryHelp)
@friendly
def train(
    config: ConfigArg = None,
    out: OutOpt = None,
    set_: SetOpt = None,
    corpus: Annotated[
        str | None, typer.Option("--corpus", help="train only this corpus (a name under 'corpora')")
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(help="cpu | cuda | cuda:N; default: training.device, else cuda if available",
                     callback=check_device),
    ] = None,
) -> None:
    """Train one model per corpus into OUT/models/<name>/ (checkpoints, loss.csv, eval.csv).

    Each corpus trains with its own per_corpus settings merged over model and training.
    A killed run resumes from its latest checkpoint; a finished one is skipped. Multi-GPU:
    torchrun --nproc-per-node N $(which hierlab) train CONFIG.
    """
    from hierlab.config import load_config
    from hierlab.pipeline import train as train_stage

    cfg = load_config(config, overrides_of(set_))
    run_dir = run_dir_of(cfg, out)
    # the same path as `hierlab run`: each corpus with its own per_corpus settings
    paths = train_stage(cfg, run_dir, only=corpus, device=device)
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")


@app.command()
@friendly
def figures(
    run_dir: Annotated[
        Path, typer.Argument(help="run directory holding metrics/*.parquet and models/<c>/")
    ],
    olmo_loss: Annotated[
        Path | None,
        typer.Option(
            "--olmo-loss",
            help="CSV with step and loss columns (e.g. an OLMo-1B W&B export); adds the "
            "third panel of Fig. 2",
            show_default=False,
        ),
    ] = None,
    extra_run: Annotated[
        list[Path] | None,
        typer.Option(
            "--extra-run",
            help="another run dir whose metrics are merged in (e.g. an OLMo sweep); repeatable",
            show_default=False,
        ),
    ] = None,
    no_report: Annotated[
        bool, typer.Option("--no-report", help="skip writing RUN/report.html")
    ] = False,
) -> None:
    """Draw every figure of RUN_DIR from its tables, check the claims, write the report.

    Figures go to RUN_DIR/figures/ (PNG, SVG and the data as CSV), the claim verdicts to
    RUN_DIR/claims.csv and everything, embedded, to RUN_DIR/report.html. Reads tables
    only, never models, so it takes seconds.
    """
    from hierlab.figures.claim_table import format_claims
    from hierlab.pipeline import figures as figures_stage

    # the same orchestrator as `hierlab run`; thresholds from RUN/config.yml's figures
    res = figures_stage(
        run_dir, olmo_loss=olmo_loss, extra_runs=extra_run or [], report=not no_report
    )
    typer.echo(f"figures: {len(res.paths)} files in {run_dir / 'figures'}")
    typer.echo(format_claims(res.claims))
    typer.echo(f"claims: {run_dir / 'claims.csv'}")
    if res.report is not None:
        typer.echo(f"report: {res.report}")


@app.command("olmo-loss")
@friendly
def olmo_loss_cmd(
    out: Annotated[
        Path, typer.Option("--out", help="CSV to write (columns step, loss, run)")
    ] = Path("olmo_loss.csv"),
    project: Annotated[str, typer.Option(help="W&B project")] = "ai2-llm/OLMo-1B",
) -> None:
    """Export OLMo-1B's training loss from its public W&B project, for Fig. 2.

    Reads every run whose name starts with "OLMo" (W&B API; needs network and the
    'tracking' extra), keys _step and train/CrossEntropyLoss, sorted by step; on a
    duplicate step the latest run wins. Then: hierlab figures RUN --olmo-loss OUT.
    """
    from hierlab.figures.olmo_loss import export_olmo_loss

    typer.echo(f"olmo loss: {export_olmo_loss(out, project=project)}")


@app.command(cls=RegistryHelp)
@friendly
def probe(
    config: ConfigArg = None,
    checkpoints: Annotated[
        str | None,
        typer.Option(
            "--checkpoints",
            help="a run dir, a models/<corpus> dir, a folder of HF checkpoints, or "
            "hub:REPO[@rev1,rev2|@max=M]; default: every models/<corpus>/checkpoints of the run",
            show_default=False,
        ),
    ] = None,
    probes: Annotated[
        str | None,
        typer.Option("--probes", help="comma list of the probes to run, from {probes} "
                     "(default: the config's probes.probes)",
                     show_default=False, callback=comma_choice(PROBES, "probe")),
    ] = None,
    variant: Annotated[
        VariantChoice | None,
        typer.Option("--variant", help="{variants}, or both (default: the config's)",
                     show_default=False),
    ] = None,
    out: OutOpt = None,
    device: Annotated[
        str | None,
        typer.Option("--device", help="cpu | cuda | cuda:N (default: the config's)",
                     show_default=False, callback=check_device),
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Run the probes over checkpoints into OUT/metrics/<probe>.parquet.

    Finished (checkpoint, probe, variant) units are kept, so a killed run resumes; a
    missing or corrupt checkpoint is logged and skipped. A run's model is probed with its
    corpus's per_corpus probes settings. Under torchrun each rank takes
    every WORLD_SIZE-th checkpoint and rank 0 merges the tables.
    """
    from hierlab.config import load_config
    from hierlab.pipeline import probe as probe_stage

    cfg = load_config(config, overrides_of(set_))
    run_dir = run_dir_of(cfg, out)
    # the same path as `hierlab run`: each model with its corpus's per_corpus settings
    paths = probe_stage(
        cfg, run_dir, checkpoints=checkpoints, probes=probes,
        variant=variant.value if variant is not None else None, device=device,
    )
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")


@app.command("run", cls=RegistryHelp)
@friendly
def run_cmd(
    config: ConfigArg = None,
    out: OutOpt = None,
    workers: Annotated[int, typer.Option(help="corpus worker processes", min=1)] = 1,
    device: Annotated[
        str | None,
        typer.Option(help="torch device for training and probes (cpu, cuda, cuda:N)",
                     callback=check_device),
    ] = None,
    olmo_loss: Annotated[
        Path | None,
        typer.Option(help="CSV (step, loss) of OLMo-1B training, for Fig. 2's third panel"),
    ] = None,
    stages: Annotated[
        str,
        typer.Option(help=f"comma-separated subset of {','.join(STAGES)}",
                     callback=comma_choice(STAGES, "stage")),
    ] = ",".join(STAGES),
    set_: SetOpt = None,
) -> None:
    """Run the whole study: corpus -> train -> probe -> figures -> report.

    Stages whose outputs are complete are skipped; a killed run resumes. With no CONFIG
    it runs the shipped quickstart (6-7 minutes on a 2-core CPU).
    """
    from rich.console import Console

    from hierlab.config import load_config
    from hierlab.pipeline import run

    chosen = tuple(s.strip() for s in stages.split(",") if s.strip())
    cfg = load_config(config, overrides_of(set_))
    run_dir = run_dir_of(cfg, out)
    console = Console(stderr=True)
    result = run(
        cfg, run_dir, stages=chosen, workers=workers, device=device, olmo_loss=olmo_loss,
        on_stage=lambda st: console.rule(f"[bold]hierlab {st}[/bold] -> {run_dir}"),
    )
    if chosen and chosen[-1] == "figures":
        typer.echo(f"report: {result}")
    else:
        typer.echo(f"run directory: {result}")


@app.command("sweep")
@friendly
def sweep_cmd(
    sweep_file: Annotated[Path, typer.Argument(help="sweep YAML: base, set, grid, runs")],
    out: Annotated[
        Path | None,
        typer.Option(help="sweep folder (runs/<name>/, summary.*); default sweeps/<name>"),
    ] = None,
    parallel: Annotated[
        int | None,
        typer.Option(help="runs at once (default: the file's 'parallel'); each run gets "
                     "max(1, cores // N) torch threads", min=1),
    ] = None,
    only: Annotated[
        str | None, typer.Option(help="comma-separated run names to execute (summary: all)")
    ] = None,
    summary_only: Annotated[
        bool, typer.Option("--summary-only", help="only rewrite the summary table and figure")
    ] = False,
    set_: SetOpt = None,
) -> None:
    """Run a sweep: one ordinary run directory per grid point or listed run, in parallel.

    --set overrides every run last (a key the grid varies is refused). Every run's config
    is validated before any work. Finished runs (report written, same
    config) are skipped, killed ones resume, a run dir holding another config is refused.
    Each run logs to runs/<name>/log.txt; the sweep writes summary.parquet/.csv and
    summary_figure.png/.svg/.csv; runs that name an arm and a seed add emergence.csv,
    emergence_stats.csv and kaplan_meier.png/.csv. Exit status 1 when a run failed (the
    others still run).
    """
    from hierlab.sweep import run_sweep

    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    table, results = run_sweep(sweep_file, out, parallel=parallel, only=names,
                               summary_only=summary_only, overrides=overrides_of(set_))
    failed = [r for r in results if r.status == "failed"]
    for r in results:
        typer.echo(f"{r.status:8s} {r.name}" + (f": {r.error} ({r.run_dir / 'log.txt'})"
                                                 if r.error else ""))
    typer.echo(f"summary: {len(table)} rows")
    if failed:
        typer.secho(f"error: {len(failed)} run(s) failed", fg="red", err=True)
        raise typer.Exit(1)
