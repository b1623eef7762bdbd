"""Run probes over checkpoints into tidy Parquet tables, resumably.

Work is split into units (checkpoint, probe, variant). Each finished unit is written
atomically (temporary file + rename) to
``RUN/metrics/.parts/<probe>/<variant>/<config hash>/<step>-<id>.parquet`` -- an empty part
marks a unit that does not apply (e.g. structure scores without a pcfg corpus) -- and a
unit whose part exists is skipped, so a killed run resumes where it stopped. The table
``RUN/metrics/<probe>.parquet`` is then rebuilt from all parts of the current config
(again temporary file + rename), so it is never half-written. The config hash covers the
probe's config section: changing a sample count recomputes, it never mixes settings.

Several GPUs (keep it simple): under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) rank ``r``
takes checkpoints ``i`` with ``i % world == r`` on ``cuda:LOCAL_RANK``, writes its parts
and a marker ``.parts/.done-<run id>-rank<r>``; rank 0 waits for every rank's marker, then
merges. No process group is needed.

What a unit measures is not decided here: :func:`probe_checkpoint` looks the (probe,
variant) up in :mod:`hierlab.probes.registry`, where each probe module registers its
variants.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from hierlab import preempt
from hierlab.contracts import METRICS_SCHEMA, VARIANTS, section_hash
from hierlab.errors import ConfigError, DataError, DiskFullError
from hierlab.io import atomic_write_parquet
from hierlab.lock import writes
from hierlab.probes.checkpoints import Checkpoint, discover_checkpoints, load_model, materialize
from hierlab.probes.config import ALL_PROBES, ProbesConfig
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
def probe_checkpoint(ctx: ProbeContext, probe: str, variant: str) -> list[dict[str, Any]]:
    """Rows (without the checkpoint columns) of one (probe, variant) unit; [] = n/a.

    The unit is the function its probe module registered (:mod:`hierlab.probes.registry`).
    """
    return lookup(probe, variant)(ctx)


# ------------------------------------------------------------------ parts and tables
def probe_hash(cfg: ProbesConfig, probe: str) -> str:
    """The hash of ``probe``'s config section: its parts folder, so a changed setting
    recomputes instead of mixing with parts measured under another one."""
    return section_hash(getattr(cfg, probe))


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


def merge_parts(metrics_dir: Path, cfg: ProbesConfig, probe: str) -> Path:
    """Rebuild ``metrics/<probe>.parquet`` from every part of the current config."""
    root = metrics_dir / ".parts" / probe
    h = probe_hash(cfg, probe)
    files = sorted(root.glob(f"*/{h}/*.parquet")) if root.exists() else []
    tables = [pq.read_table(f, schema=METRICS_SCHEMA) for f in files]
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
    pc: ProbesConfig,
    run_dir: Path,
    checkpoints: str | Path | None = None,
    probes: Sequence[str] | str | None = None,
    variant: str | Sequence[str] | None = None,
    device: str | None = None,
) -> dict[str, Path]:
    """Probe every checkpoint of the source; return ``{probe: metrics/<probe>.parquet}``.

    ``pc`` is the experiment's ``probes`` section; ``checkpoints``, ``probes`` and
    ``variant`` (reference, standard or both) override its ``checkpoints``, ``probes`` and
    ``variants``.
    """
    run_dir = Path(run_dir)
    probe_list = _parse_list(probes, pc.probes, ALL_PROBES, "probe")
    variants = _parse_list(variant, pc.variants, VARIANTS, "variant")
    dev = _resolve_device(device, pc)
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    metrics = run_dir / "metrics"
    parts = metrics / ".parts"
    ckpts = discover_checkpoints(checkpoints if checkpoints is not None else pc.checkpoints,
                                 run_dir, pc.hub)
    if not ckpts:
        log.warning("no checkpoints found in %s", checkpoints or run_dir)
    mine = [c for i, c in enumerate(ckpts) if i % world == rank]
    failures = FailureLog(metrics, rank, world)  # metrics/failed_checkpoints.json
    for ck in progress_bar(mine, desc=f"probes (rank {rank})" if world > 1 else "probes",
                           unit="ckpt"):
        todo = [(p, v) for p in probe_list for v in variants
                if not _part_path(parts, pc, p, v, ck).exists()]
        if not todo:
            continue
        preempt.stop(f"probe: before {ck.name}; finished units are kept in {parts}")
        _probe_one(pc, ck, todo, parts, dev, failures)
    if world > 1:
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "local")
        marker = parts / f".done-{run_id}-rank{rank}"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(time.time()))
        if rank != 0:
            return {}
        deadline = time.time() + pc.merge_timeout_s
        while not all((parts / f".done-{run_id}-rank{r}").exists() for r in range(world)):
            if time.time() > deadline:
                raise DataError(f"rank 0 waited {pc.merge_timeout_s:.0f}s for the other ranks")
            time.sleep(2.0)
        for r in range(world):
            (parts / f".done-{run_id}-rank{r}").unlink(missing_ok=True)
    metrics.mkdir(parents=True, exist_ok=True)
    return {p: merge_parts(metrics, pc, p) for p in probe_list}


def _probe_one(pc: ProbesConfig, ck: Checkpoint, todo: list[tuple[str, str]], parts: Path,
               dev: str, failures: FailureLog) -> None:
    stage = "download"
    try:
        with materialize(ck, pc.hub, fresh=failures.was_failed(ck)) as path:
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

