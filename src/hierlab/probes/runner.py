"""Run probes over checkpoints into tidy Parquet tables, resumably.

Work is split into (checkpoint, probe, variant) units, each written atomically as a part
file and skipped when its part exists, so a killed run resumes where it stopped and a
table is never half-written; under torchrun the ranks split the checkpoints. What a unit
measures is looked up in :mod:`hierlab.probes.registry`. The part layout, the config hash
and the multi-GPU protocol: docs/design-probes.md#runner.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from hierlab import preempt
from hierlab.contracts import METRICS_SCHEMA, VARIANTS, section_hash
from hierlab.errors import ConfigError, DataError, DiskFullError
from hierlab.io import atomic_write_parquet
from hierlab.lock import writes
from hierlab.probes.checkpoints import Checkpoint, discover_checkpoints, load_model, materialize
from hierlab.probes.config import ALL_PROBES, HubConfig, ProbesConfig
from hierlab.probes.context import ProbeContext, corpus_data
from hierlab.probes.failures import FailureLog, verify_files
from hierlab.probes.hooks import HookedModel
from hierlab.probes.registry import lookup
from hierlab.progress import progress_bar

log = logging.getLogger(__name__)

__all__ = ["SCHEMA", "merge_parts", "probe_checkpoint", "probe_hash", "run_probes"]

#: kept for importers of the old name (hierlab.notebook's test); the schema is a contract
SCHEMA = METRICS_SCHEMA


# ------------------------------------------------------------------ one unit
def probe_checkpoint(context: ProbeContext, probe: str, variant: str) -> list[dict[str, Any]]:
    """Measure one (probe, variant) unit on one checkpoint.

    The unit is the function its probe module registered (:mod:`hierlab.probes.registry`);
    this indirection is the one place tests and benchmarks hook into a sweep.

    Args:
        context: what the probes of the checkpoint share (model, tokenizer, corpus).
        probe: the probe's name.
        variant: ``reference`` or ``standard``.

    Returns:
        The rows without the checkpoint columns; ``[]`` when the unit does not apply.
    """
    return lookup(probe, variant)(context)


# ------------------------------------------------------------------ parts and tables
def probe_hash(config: ProbesConfig, probe: str) -> str:
    """The hash of one probe's config section, which names its parts folder.

    Parts measured under other settings then sit in another folder, so a changed setting
    recomputes instead of mixing with them.

    Args:
        config: the experiment's ``probes`` section.
        probe: the probe's name (its section's attribute).

    Returns:
        The section's hash (``hierlab.contracts.section_hash``).
    """
    return section_hash(getattr(config, probe))


def _part_path(root: Path, cfg: ProbesConfig, probe: str, variant: str, ck: Checkpoint) -> Path:
    ident = hashlib.sha1(f"{ck.source}|{ck.model}|{ck.name}|{ck.step}".encode()).hexdigest()[:12]
    return root / probe / variant / probe_hash(cfg, probe) / f"{ck.step:012d}-{ident}.parquet"


def _to_table(rows: list[dict[str, Any]], ck: Checkpoint, probe: str, variant: str) -> pa.Table:
    full = [
        {"source": ck.source, "model": ck.model, "step": ck.step, "tokens_seen": ck.tokens_seen,
         "probe": probe, "variant": variant, **r}
        for r in rows
    ]
    cols = {f.name: [r.get(f.name) for r in full] for f in METRICS_SCHEMA}
    return pa.table(cols, schema=METRICS_SCHEMA)


def merge_parts(metrics_dir: Path, config: ProbesConfig, probe: str,
                model_configs: Mapping[str, ProbesConfig] | None = None) -> Path:
    """Rebuild ``metrics/<probe>.parquet`` from every part of the current config.

    Each model's rows come from the parts of its own config (``model_configs``, else
    ``config``), so a model probed with other settings than the rest never mixes in rows
    of a stale config, and the others' rows are kept.

    Args:
        metrics_dir: the run's ``metrics`` folder.
        config: the experiment's ``probes`` section (selects the parts by its hash).
        probe: the probe whose table to rebuild.
        model_configs: the checkpoint's ``model`` -> its own ``probes`` section, for the
            models probed with other settings (None: every model with ``config``).

    Returns:
        The table's path, written atomically (sorted; empty when there are no rows).
    """
    root = metrics_dir / ".parts" / probe
    h = probe_hash(config, probe)
    own = {m: probe_hash(c, probe) for m, c in (model_configs or {}).items()}
    own = {m: mh for m, mh in own.items() if mh != h}  # same settings: the shared parts
    tables = []
    for folder_hash in sorted({h, *own.values()}):
        files = sorted(root.glob(f"*/{folder_hash}/*.parquet")) if root.exists() else []
        for f in files:
            table = pq.read_table(f, schema=METRICS_SCHEMA)
            models = set(table.column("model").unique().to_pylist())
            keep = [m for m in models if own.get(m, h) == folder_hash]
            if len(keep) < len(models):  # another model's rows under a config not its own
                table = table.filter(pc.is_in(table.column("model"), pa.array(keep, pa.string())))
            tables.append(table)
    table = pa.concat_tables(tables) if tables else METRICS_SCHEMA.empty_table()
    if table.num_rows:
        table = table.sort_by([(c, "ascending") for c in
                               ("source", "model", "step", "variant", "metric", "layer",
                                "head", "k")])
    out = metrics_dir / f"{probe}.parquet"
    atomic_write_parquet(table, out)
    return out


def _resolve_device(device: str | None, cfg: ProbesConfig) -> str:
    dev = device or cfg.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {dev!r} requested but CUDA is not available")
        if dev == "cuda" and "LOCAL_RANK" in os.environ:
            dev = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    elif dev != "cpu":
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {dev!r}")
    return dev


def _parse_list(value: Sequence[str] | str | None, default: Sequence[str], allowed: Sequence[str],
                what: str) -> list[str]:
    if value is None:
        return list(default)
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value)]
    items = [v for v in items if v]
    if what == "variant" and items == ["both"]:
        return list(VARIANTS)
    bad = [v for v in items if v not in allowed]
    if bad:
        raise ConfigError(f"unknown {what} {', '.join(bad)} (known: {', '.join(allowed)})")
    return items


@writes("run_dir")  # one writer per run folder (hierlab.lock)
@preempt.stoppable  # SIGTERM/SIGINT: stop between units (hierlab.preempt)
def run_probes(
    config: ProbesConfig,
    run_dir: Path,
    checkpoints: str | Path | None = None,
    probes: Sequence[str] | str | None = None,
    variant: str | Sequence[str] | None = None,
    device: str | None = None,
    model_configs: Mapping[str, ProbesConfig] | None = None,
) -> dict[str, Path]:
    """Probe every checkpoint of a source into ``RUN/metrics/<probe>.parquet``.

    Finished units are kept as part files, so a killed run resumes; a checkpoint that
    fails to download, verify or load is logged, recorded in
    ``metrics/failed_checkpoints.json`` and skipped. A model listed in ``model_configs``
    is probed with its own settings (a shorter induction span for a short-context model),
    its parts kept under that config's hash.

    Args:
        config: the experiment's ``probes`` section.
        run_dir: the run folder; the tables go to its ``metrics`` folder.
        checkpoints: the checkpoint source, overriding ``config.checkpoints``
            (see :func:`~hierlab.probes.checkpoints.discover_checkpoints`).
        probes: the probes to run (a list or comma-separated), overriding
            ``config.probes``.
        variant: ``reference``, ``standard`` or ``both`` (or a list), overriding
            ``config.variants``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, overriding ``config.device``.
        model_configs: a checkpoint's ``model`` (a corpus name, for a run's models) -> the
            ``probes`` section its units run with; other models use ``config``. The
            run-wide choices (probes, variants, device, checkpoint source, hub) are
            always ``config``'s.

    Returns:
        ``{probe: path of its table}``; ``{}`` on a torchrun rank other than 0.

    Raises:
        ConfigError: an unknown probe, variant or device.
        DataError: rank 0 waited longer than ``merge_timeout_s`` for the other ranks.
    """
    run_dir = Path(run_dir)
    probe_list = _parse_list(probes, config.probes, ALL_PROBES, "probe")
    variants = _parse_list(variant, config.variants, VARIANTS, "variant")
    dev = _resolve_device(device, config)
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    metrics = run_dir / "metrics"
    parts = metrics / ".parts"
    ckpts = discover_checkpoints(checkpoints if checkpoints is not None else config.checkpoints,
                                 run_dir, config.hub)
    if not ckpts:
        log.warning("no checkpoints found in %s", checkpoints or run_dir)
    mine = [c for i, c in enumerate(ckpts) if i % world == rank]
    failures = FailureLog(metrics, rank, world)  # metrics/failed_checkpoints.json
    for ck in progress_bar(mine, desc=f"probes (rank {rank})" if world > 1 else "probes",
                           unit="ckpt"):
        own = (model_configs or {}).get(ck.model, config)
        todo = [(p, v) for p in probe_list for v in variants
                if not _part_path(parts, own, p, v, ck).exists()]
        if not todo:
            continue
        preempt.stop(f"probe: before {ck.name}; finished units are kept in {parts}")
        _probe_one(own, ck, todo, parts, dev, failures, hub=config.hub)
    if world > 1:
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "local")
        marker = parts / f".done-{run_id}-rank{rank}"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(time.time()))
        if rank != 0:
            return {}
        deadline = time.time() + config.merge_timeout_s
        while not all((parts / f".done-{run_id}-rank{r}").exists() for r in range(world)):
            if time.time() > deadline:
                raise DataError(f"rank 0 waited {config.merge_timeout_s:.0f}s for the other ranks")
            time.sleep(2.0)
        for r in range(world):
            (parts / f".done-{run_id}-rank{r}").unlink(missing_ok=True)
    metrics.mkdir(parents=True, exist_ok=True)
    return {p: merge_parts(metrics, config, p, model_configs) for p in probe_list}


def _probe_one(pc: ProbesConfig, ck: Checkpoint, todo: list[tuple[str, str]], parts: Path,
               dev: str, failures: FailureLog, hub: HubConfig) -> None:
    stage = "download"
    try:
        with materialize(ck, hub, fresh=failures.was_failed(ck)) as path:
            stage = "verify"
            problem = verify_files(path)  # truncated or corrupt: recorded, the sweep goes on
            if problem is not None:
                log.warning("skipping checkpoint %s: %s (recorded in %s)", ck.name, problem,
                            failures.path)
                failures.failed(ck, stage, problem)
                return
            stage = "load"
            tok_dir = (ck.run_dir / "corpus" / ck.corpus / "tokenizer"
                       if ck.run_dir is not None and ck.corpus else None)
            try:
                model, tok = load_model(path, dev, pc.dtype, tok_dir)
                hm = HookedModel(model)
            except ConfigError:
                raise
            except Exception as err:  # missing / corrupt checkpoint: log by name, skip
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                log.warning("skipping checkpoint %s: cannot load (%s)", ck.name, reason)
                failures.failed(ck, stage, f"cannot load ({reason})")
                return
            stage = "probe"
            manifest, reader = corpus_data(ck)
            ctx = ProbeContext(pc, ck, hm, tok, manifest, reader)
            for probe, variant in todo:
                preempt.stop(f"probe: before {ck.name} {probe}/{variant}; finished "
                             f"units are kept in {parts}")
                t0 = time.perf_counter()
                try:
                    rows = probe_checkpoint(ctx, probe, variant)
                except DataError as err:
                    log.warning("%s: %s/%s skipped: %s", ck.name, probe, variant, err)
                    continue
                atomic_write_parquet(_to_table(rows, ck, probe, variant),
                                _part_path(parts, pc, probe, variant, ck))
                log.debug("%s %s/%s: %.2fs", ck.name, probe, variant, time.perf_counter() - t0)
            failures.succeeded(ck)
    except DiskFullError:  # the run's own disk: stop, never skip (a re-run resumes)
        raise
    except DataError as err:
        log.warning("skipping checkpoint %s: %s", ck.name, err)
        failures.failed(ck, stage, str(err))
        return
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

