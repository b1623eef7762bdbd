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
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from hierlab.contracts import METRICS_SCHEMA, VARIANTS, section_hash
from hierlab.errors import ConfigError, DataError
from hierlab.io import atomic_write_parquet
from hierlab.probes import function_vectors as fvmod
from hierlab.probes import fv_reference as fvref
from hierlab.probes import fv_tasks as fvtasks
from hierlab.probes import hydra as hymod
from hierlab.probes import in_context as icmod
from hierlab.probes import induction as indmod
from hierlab.probes.checkpoints import Checkpoint, discover_checkpoints, load_model, materialize
from hierlab.probes.config import ALL_PROBES, ProbesConfig
from hierlab.probes.hooks import HookedModel
from hierlab.probes.structure import structure_scores

log = logging.getLogger(__name__)

__all__ = ["SCHEMA", "merge_parts", "probe_checkpoint", "probe_hash", "run_probes"]

#: kept for importers of the old name (hierlab.notebook's test); the schema is a contract
SCHEMA = METRICS_SCHEMA


# ------------------------------------------------------------------ context per checkpoint
@dataclass
class ProbeContext:
    """What the probes of one checkpoint share: model, tokenizer, corpus data."""

    cfg: ProbesConfig
    ckpt: Checkpoint
    hm: HookedModel
    tokenizer: Any = None
    manifest: dict[str, Any] | None = None
    reader: Any = None
    memo: dict[str, Any] = field(default_factory=dict)

    @property
    def roles(self) -> dict[str, list[int]] | None:
        return (self.manifest or {}).get("roles") or None

    @property
    def kind(self) -> str:
        """pcfg | ngram (hierlab corpora) or nl (a natural-language model)."""
        if self.manifest is not None:
            return str(self.manifest.get("kind", "pcfg" if self.roles else "ngram"))
        return "nl"

    @property
    def vocab(self) -> int:
        """The id space random prompts draw from (the reference used the tokenizer's)."""
        if self.manifest is not None and "vocab_size" in self.manifest:
            return int(self.manifest["vocab_size"])
        if self.tokenizer is not None and getattr(self.tokenizer, "vocab_size", None):
            return int(min(self.tokenizer.vocab_size, self.hm.vocab_size))
        return self.hm.vocab_size

    @property
    def context(self) -> int:
        return int(getattr(self.hm.config, "max_position_embeddings", 512) or 512)

    def windows(self, n: int, length: int) -> torch.Tensor:
        """The first ``n`` consecutive ``length``-token chunks of the test split."""
        if self.reader is None:
            raise DataError(f"{self.ckpt.name}: no test split to read (run hierlab corpus)")
        avail = int(self.reader.total_tokens) // length
        n = min(n, avail)
        if n == 0:
            raise DataError(f"{self.ckpt.name}: test split shorter than one {length}-token chunk")
        arr = np.stack([self.reader.read(i * length, length) for i in range(n)]).astype(np.int64)
        return torch.from_numpy(arr)


def _corpus_data(ckpt: Checkpoint) -> tuple[dict | None, Any]:
    if ckpt.run_dir is None or ckpt.corpus is None:
        return None, None
    split = ckpt.run_dir / "corpus" / ckpt.corpus / "test"
    try:
        from hierlab.corpus.shards import SplitReader

        reader = SplitReader(split)
        return reader.manifest, reader
    except (DataError, ImportError, OSError) as err:
        log.warning("%s: test split unavailable (%s)", ckpt.name, err)
    run_json = ckpt.run_dir / "models" / ckpt.corpus / "run.json"
    if run_json.exists():
        import json

        info = json.loads(run_json.read_text())
        return {"kind": info.get("kind"), "vocab_size": info.get("vocab_size"),
                "roles": info.get("roles")}, None
    return None, None


# ------------------------------------------------------------------ one unit
def _induction_scores(ctx: ProbeContext) -> dict[str, torch.Tensor]:
    if "induction" not in ctx.memo:
        c = ctx.cfg.induction
        toks = indmod.repeated_random_tokens(
            c.samples, c.n, ctx.vocab, c.id_margin, c.seed, c.id_range
        )
        ctx.memo["induction"] = indmod.attention_scores(ctx.hm, toks, c.n, c.k_max, c.batch_size)
    return ctx.memo["induction"]


def _indist_scores(ctx: ProbeContext) -> dict[str, torch.Tensor] | None:
    """Scores on test-split spans repeated twice (None without a test split)."""
    if "induction_indist" not in ctx.memo:
        c = ctx.cfg.induction
        out = None
        if ctx.reader is not None:
            n = c.indist_n or c.n
            try:
                toks = icmod.repeated_spans(ctx.reader, c.indist_samples, n, c.seed)
                out = indmod.attention_scores(ctx.hm, toks, n, c.k_max, c.batch_size)
            except DataError as err:
                log.warning("%s: in-distribution induction skipped: %s", ctx.ckpt.name, err)
        ctx.memo["induction_indist"] = out
    return ctx.memo["induction_indist"]


def _in_context_rows(ctx: ProbeContext) -> list[dict[str, Any]]:
    """Loss by position, ICL score (with the band positions used) and previous-token
    scores on document-aligned test windows; [] (logged) when they cannot be measured."""
    c = ctx.cfg.induction
    if ctx.reader is None:
        return []
    if c.icl_length is not None and c.icl_length > ctx.context:
        raise ConfigError(f"induction.icl_length {c.icl_length} exceeds the model context "
                          f"({ctx.context} tokens)")
    length = c.icl_length or min(ctx.context, 512)
    try:
        windows = icmod.document_windows(ctx.reader, c.position_windows, length)
        curve = icmod.loss_by_position(ctx.hm, windows, min(c.batch_size, 8))
        rows = icmod.icl_rows(curve, len(windows), c.icl_early_band, c.icl_late_band, c.seed)
    except DataError as err:
        log.warning("%s: loss by position / ICL score skipped: %s", ctx.ckpt.name, err)
        return []
    pt = icmod.previous_token_scores(ctx.hm, windows, min(c.batch_size, 4))
    return rows + icmod.previous_token_rows(pt, c.seed)


def _hydra_samples(ctx: ProbeContext, n: int, length: int | None) -> torch.Tensor:
    c = ctx.cfg.hydra
    if ctx.manifest is not None:
        return ctx.windows(n, length or ctx.context)
    return hymod.random_token_samples(
        c.random_samples, length or c.random_length, ctx.vocab, c.id_margin, c.seed
    )


def probe_checkpoint(ctx: ProbeContext, probe: str, variant: str) -> list[dict[str, Any]]:
    """Rows (without the checkpoint columns) of one (probe, variant) unit; [] = n/a."""
    cfg = ctx.cfg
    hm = ctx.hm
    if probe == "induction":
        c = cfg.induction
        scores = _induction_scores(ctx)
        indist = _indist_scores(ctx)  # beside the random-token rows (same metrics, _indist)
        if variant == "reference":
            rows = indmod.induction_reference(scores, c.seed)
            return rows + (icmod.indist_reference_rows(indist, c.seed) if indist else [])
        rows = indmod.induction_standard(scores, indmod.copying_scores(hm), c.seed)
        rows += icmod.indist_standard_rows(indist, c.seed) if indist else []
        return rows + _in_context_rows(ctx)
    if probe == "hydra":
        c = cfg.hydra
        if variant == "reference":
            n = c.max_samples if ctx.manifest is not None else c.random_samples
            length = c.length if ctx.manifest is not None else c.random_length
            samples = _hydra_samples(ctx, n, length)
            return hymod.hydra_reference(hm, samples, c.ks, c.batch_size, c.seed)
        n = c.standard_samples if ctx.manifest is not None else c.random_samples
        length = c.standard_length or (c.length if ctx.manifest is not None else c.random_length)
        samples = _hydra_samples(ctx, n, length)
        if c.ablation != "zero" and len(samples) < 2 and ctx.reader is not None:
            # mean/resample need another sample: a short test split gets shorter chunks
            short = int(ctx.reader.total_tokens) // 2
            log.warning("%s: hydra/standard: test split holds one %s-token chunk; %s "
                        "ablation uses 2 chunks of %d", ctx.ckpt.name, samples.shape[1],
                        c.ablation, short)
            samples = _hydra_samples(ctx, 2, short)
        return hymod.hydra_standard(hm, samples, ablation=c.ablation, target=c.target,
                                    positions=c.positions, layer_batch=c.layer_batch,
                                    seed=c.seed)
    if probe == "fv":
        c = cfg.fv
        if variant == "reference":
            roles = ctx.roles
            if roles is None and ctx.kind != "nl":
                log.info("%s: no corpus roles; reference FV uses the reference id ranges",
                         ctx.ckpt.name)
            return fvref.fv_reference(hm, roles, c.reference_pairs, c.reference_seed,
                                      c.reference_connector)
        if ctx.roles is not None:
            tasks = fvtasks.corpus_tasks(c.tasks, ctx.manifest)
        elif ctx.kind == "nl" and ctx.tokenizer is not None:
            tasks = [fvtasks.nl_task(t, ctx.tokenizer) for t in c.nl_tasks]
        else:
            log.info("%s: no task applies (no roles, no natural-language tokenizer)", ctx.ckpt.name)
            return []
        # one call over all tasks: heads ranked by the CIE averaged across them (Todd et al.)
        return fvmod.fv_standard(
            hm, tasks, n_shots=c.n_shots, mean_prompts=c.mean_prompts,
            cie_prompts=c.cie_prompts, eval_prompts=c.eval_prompts, top_k=c.top_k,
            batch_size=c.batch_size, seed=c.seed,
        )
    if probe == "structure":
        if ctx.roles is None:
            log.info("%s: structure scores need a pcfg corpus; skipped", ctx.ckpt.name)
            return []
        c = cfg.structure
        return structure_scores(hm, ctx.roles, c.samples, c.seed)
    raise ConfigError(f"unknown probe {probe!r} (known: {', '.join(ALL_PROBES)})")


# ------------------------------------------------------------------ parts and tables
def probe_hash(cfg: ProbesConfig, probe: str) -> str:
    """The hash of ``probe``'s config section: its parts folder, so a changed setting
    recomputes instead of mixing with parts measured under another one."""
    return section_hash(getattr(cfg, probe))


def _part_path(root: Path, cfg: ProbesConfig, probe: str, variant: str, ck: Checkpoint) -> Path:
    ident = hashlib.sha1(f"{ck.source}|{ck.model}|{ck.name}|{ck.step}".encode()).hexdigest()[:12]
    return root / probe / variant / probe_hash(cfg, probe) / f"{ck.step:012d}-{ident}.parquet"


def _atomic_parquet(table: pa.Table, path: Path) -> None:
    atomic_write_parquet(table, path)


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
    _atomic_parquet(table, out)
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


def run_probes(
    cfg: Any,
    run_dir: Path,
    checkpoints: str | Path | None = None,
    probes: Sequence[str] | str | None = None,
    variant: str | Sequence[str] | None = None,
    device: str | None = None,
) -> dict[str, Path]:
    """Probe every checkpoint of the source; return ``{probe: metrics/<probe>.parquet}``.

    ``cfg`` is the experiment config (its ``probes`` section is used) or a
    :class:`ProbesConfig`. ``variant`` is reference, standard or both.
    """
    pc: ProbesConfig = cfg if isinstance(cfg, ProbesConfig) else cfg.probes
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
    for ck in tqdm(mine, desc=f"probes (rank {rank})" if world > 1 else "probes",
                   unit="ckpt", disable=None):
        todo = [(p, v) for p in probe_list for v in variants
                if not _part_path(parts, pc, p, v, ck).exists()]
        if not todo:
            continue
        _probe_one(pc, ck, todo, parts, dev)
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
               dev: str) -> None:
    try:
        with materialize(ck, pc.hub) as path:
            tok_dir = (ck.run_dir / "corpus" / ck.corpus / "tokenizer"
                       if ck.run_dir is not None and ck.corpus else None)
            try:
                model, tok = load_model(path, dev, pc.dtype, tok_dir)
                hm = HookedModel(model)
            except ConfigError:
                raise
            except Exception as err:  # missing / corrupt checkpoint: log by name, skip
                log.warning("skipping checkpoint %s: cannot load (%s)",
                            ck.name, str(err).splitlines()[0] if str(err) else type(err).__name__)
                return
            manifest, reader = _corpus_data(ck)
            ctx = ProbeContext(pc, ck, hm, tok, manifest, reader)
            for probe, variant in todo:
                t0 = time.perf_counter()
                try:
                    rows = probe_checkpoint(ctx, probe, variant)
                except DataError as err:
                    log.warning("%s: %s/%s skipped: %s", ck.name, probe, variant, err)
                    continue
                _atomic_parquet(_to_table(rows, ck, probe, variant),
                                _part_path(parts, pc, probe, variant, ck))
                log.debug("%s %s/%s: %.2fs", ck.name, probe, variant, time.perf_counter() - t0)
    except DataError as err:
        log.warning("skipping checkpoint %s: %s", ck.name, err)
        return
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

