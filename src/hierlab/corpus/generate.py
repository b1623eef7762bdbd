"""Corpus generation: plan shards, build them on local processes or an engine, resume.

Shard i of a split is a pure function of (corpus config, split, i), so shards can be built
in any order, by any number of local processes or on a Dask cluster, with identical bytes,
and a killed run redoes only the shards that were not finished. Memory is bounded by one
shard per worker, never by the corpus size. Why Dask, and how resuming works:
``docs/design-pipeline.md``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from hierlab import __version__, preempt
from hierlab.contracts import section_hash
from hierlab.corpus.config import CORPUS_ADAPTER, NgramConfig, PcfgConfig
from hierlab.corpus.dask_engine import dask_map
from hierlab.corpus.dedup import SentenceSet
from hierlab.corpus.entropy import loss_floors
from hierlab.corpus.ngram import NgramSampler
from hierlab.corpus.pcfg import PcfgSampler
from hierlab.corpus.shards import (
    MANIFEST,
    SplitReader,
    finished_shard,
    read_manifest,
    write_manifest,
    write_shard,
)
from hierlab.errors import ConfigError, DataError
from hierlab.io import atomic_dir, atomic_write_json
from hierlab.lock import writes
from hierlab.progress import progress_bar

log = logging.getLogger(__name__)
SPLITS = ("test", "train")  # test first: train de-duplication reads it

#: the corpora section of an experiment: corpus name -> its config
Corpora = Mapping[str, PcfgConfig | NgramConfig]


def corpus_hash(cfg: PcfgConfig | NgramConfig) -> str:
    """The identity of one corpus's config, so that a finished split is recognised and reused.

    Args:
        cfg: the corpus config.

    Returns:
        Its :func:`~hierlab.contracts.section_hash` (``config_hash`` in ``corpus.json``
        and every manifest): equal hashes mean byte-identical shards.
    """
    return section_hash(cfg)


# per-process caches (worker processes build each once)
_SAMPLERS: dict[str, PcfgSampler | NgramSampler] = {}
_TEST_SETS: dict[str, SentenceSet] = {}


def make_sampler(cfg: PcfgConfig | NgramConfig) -> PcfgSampler | NgramSampler:
    """The sampler of a corpus's kind, so callers need not tell the kinds apart.

    Args:
        cfg: the corpus config.

    Returns:
        A :class:`~hierlab.corpus.pcfg.PcfgSampler` or
        :class:`~hierlab.corpus.ngram.NgramSampler`.
    """
    return PcfgSampler(cfg) if isinstance(cfg, PcfgConfig) else NgramSampler(cfg)


def plan_shards(cfg: PcfgConfig | NgramConfig, split: str) -> list[tuple[int, int]]:
    """Cut a split into shards of a fixed number of units (documents or sentences).

    Args:
        cfg: the corpus config (``units_per_shard``, the split's size).
        split: ``train`` or ``test``.

    Returns:
        The ``[start, stop)`` unit range of every shard, in order; the last may be short.
    """
    total, per = cfg.split_units(split), cfg.units_per_shard
    return [(i * per, min(total, (i + 1) * per)) for i in range(math.ceil(total / per))]


TABLE_DIR = ".sentence-table"  # inside the test split: a derived, rebuildable cache


def _table_dir(test_dir: Path) -> Path:
    return Path(test_dir) / TABLE_DIR


def save_test_set(cfg: PcfgConfig, test_dir: Path) -> Path:
    """Build the test split's sentence table once and save it beside the split.

    Workers memory-map it instead of each rebuilding it (seconds and ~0.8 GB per worker at
    the reference scale); the OS shares the pages between processes on one machine.
    Written to a temporary folder and renamed, so a partial table is never read.

    Args:
        cfg: the grammar's config.
        test_dir: the complete test split.

    Returns:
        The table's folder (``test_dir/.sentence-table``); an existing one is kept.
    """
    out = _table_dir(test_dir)
    if (out / "table.npy").exists():
        return out
    reader = SplitReader(test_dir)
    tokens = np.concatenate(
        [reader.shard_tokens(i) for i in range(reader.num_shards)] or [np.zeros(0, np.uint16)]
    )
    ss = SentenceSet.from_tokens(tokens, cfg.eos_id, cfg.boundary_id)
    # another process that finishes the same table first wins: its copy is kept
    with atomic_dir(out, prefix=".sentence-table.") as tmp:
        for name, arr in (("tokens", ss.tokens), ("table", ss.table), ("starts", ss.starts),
                          ("lens", ss.lens)):
            np.save(tmp / f"{name}.npy", arr)
        (tmp / "n_unique.txt").write_text(str(ss.n_unique))
    return out


def load_test_set(cfg: PcfgConfig, test_dir: Path) -> SentenceSet:
    """Every distinct test sentence, for exact de-duplication of the train split.

    Memory-mapped from the saved table (built first if missing) and cached per process,
    so every shard a worker builds shares one copy.

    Args:
        cfg: the grammar's config.
        test_dir: the complete test split.

    Returns:
        The test split's sentence set.
    """
    key = f"{corpus_hash(cfg)}:{Path(test_dir).resolve()}"
    if key not in _TEST_SETS:
        d = _table_dir(test_dir)
        if not (d / "table.npy").exists():
            save_test_set(cfg, test_dir)
        arrs = {n: np.load(d / f"{n}.npy", mmap_mode="r")
                for n in ("tokens", "table", "starts", "lens")}
        _TEST_SETS[key] = SentenceSet(arrs["tokens"], arrs["table"], arrs["starts"],
                                      arrs["lens"], int((d / "n_unique.txt").read_text()))
    return _TEST_SETS[key]


def build_shard(cfg_json: str, split: str, index: int, split_dir: str) -> dict[str, Any]:
    """Generate and write shard ``index`` of ``split``: the unit of work of every engine.

    Takes only plain arguments (a JSON config and paths) so it can run in a spawned
    process or on a remote Dask worker.

    Args:
        cfg_json: the corpus config as JSON.
        split: ``train`` or ``test``.
        index: the shard's index in :func:`plan_shards`.
        split_dir: the split's folder.

    Returns:
        The shard's record (:func:`~hierlab.corpus.shards.write_shard`) plus ``sentences``
        and ``rejected``.
    """
    cfg = CORPUS_ADAPTER.validate_json(cfg_json)
    key = cfg_json
    if key not in _SAMPLERS:
        _SAMPLERS[key] = make_sampler(cfg)
    sampler = _SAMPLERS[key]
    start, stop = plan_shards(cfg, split)[index]
    test_set = None
    if isinstance(cfg, PcfgConfig) and split == "train" and cfg.dedup and cfg.test_documents:
        test_set = load_test_set(cfg, Path(split_dir).parent / "test")
    out = sampler.generate(split, start, stop, test_set)
    rec = write_shard(
        Path(split_dir), index, out.tokens, units=out.units, doc_starts=out.doc_starts,
        annotations=out.annotations,
    )
    rec["sentences"] = out.sentences
    rec["rejected"] = out.rejected
    return rec


def _split_fields(name: str, cfg: PcfgConfig | NgramConfig, split: str,
                  floors: dict[str, float]) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "corpus": name,
        "split": split,
        "kind": cfg.kind,
        "config": cfg.model_dump(mode="json"),
        "config_hash": corpus_hash(cfg),
        "seed": cfg.seed,
        "vocab_size": cfg.vocab_size if isinstance(cfg, PcfgConfig) else cfg.tokenizer_size,
        "eos_id": cfg.eos_id,
        "pad_id": cfg.pad_id,
        "unk_id": cfg.unk_id,
        "boundary_id": cfg.boundary_id,
        "loss_floors": dict(floors),
    }
    if isinstance(cfg, PcfgConfig):
        o = cfg.role_offsets
        lx = cfg.lexicon
        fields["roles"] = {
            "subject": [o[0], o[0] + lx.subjects],
            "verb": [o[1], o[1] + lx.verbs],
            "object": [o[2], o[2] + lx.objects],
            "connector": [o[3], o[3] + lx.connectors],
        }
        fields["units_name"] = "documents"
    else:
        fields["units_name"] = "sentences"
    cols = ["input_ids"]
    if cfg.annotations:
        cols += (["doc", "section", "paragraph", "sentence", "role"]
                 if isinstance(cfg, PcfgConfig) else ["sentence", "role"])
    fields["columns"] = cols
    return fields


def _run_jobs(jobs: list[tuple], workers: int, engine: str, scheduler: str | None,
              desc: str) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    bar = progress_bar(total=len(jobs), desc=desc, unit="shard", enabled=None if jobs else False)
    if engine == "dask":
        results = dask_map(build_shard, jobs, workers, scheduler, bar)
    elif engine != "local":
        raise ConfigError(f"--engine: unknown engine {engine!r} (allowed: local, dask)")
    elif workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            _stop_between_shards(desc, len(results), len(jobs))
            results.append(build_shard(*job))
            bar.update(1)
    else:
        # workers ignore SIGTERM/SIGINT: each finishes its shard, this process stops the rest
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                 initializer=preempt.ignore_in_workers) as ex:
            futures = [ex.submit(build_shard, *job) for job in jobs]
            for fut in as_completed(futures):
                if fut.cancelled():
                    continue
                results.append(fut.result())
                bar.update(1)
                if preempt.requested():
                    for f in futures:
                        f.cancel()
    bar.close()
    _stop_between_shards(desc, len(results), len(jobs))
    return results


def _stop_between_shards(desc: str, done: int, total: int) -> None:
    preempt.stop(f"corpus {desc}: after {done} of {total} shards (finished shards are kept, "
                 "none is half-written)")


def generate_shards(
    cfg: PcfgConfig | NgramConfig,
    split: str,
    split_dir: Path,
    indices: Iterable[int] | None = None,
    *,
    workers: int = 1,
    engine: str = "local",
    scheduler: str | None = None,
    desc: str | None = None,
) -> list[dict[str, Any]]:
    """Build some shards of a split; the bytes do not depend on ``workers`` or ``engine``.

    De-duplicated PCFG train shards need the complete test split beside ``split_dir``: its
    sentence table is built here once, before the workers start. Neither resume markers
    are checked nor a manifest written: that is :func:`generate_corpus`'s part.

    Args:
        cfg: the corpus config.
        split: ``train`` or ``test``.
        split_dir: the split's folder.
        indices: the shards to build (default: every shard of :func:`plan_shards`).
        workers: ``local``: spawned processes (1 = this process); ``dask``: the local
            cluster's processes.
        engine: ``local`` or ``dask``.
        scheduler: a running Dask scheduler's address (None: start a local cluster).
        desc: the progress bar's label (default: the split).

    Returns:
        The shards' records (file, tokens, sha256, ... plus ``sentences`` and
        ``rejected``) in the order of ``indices``.
    """
    order = list(range(len(plan_shards(cfg, split))) if indices is None else indices)
    if (order and split == "train" and isinstance(cfg, PcfgConfig) and cfg.dedup
            and cfg.test_documents):
        save_test_set(cfg, Path(split_dir).parent / "test")
    cfg_json = cfg.model_dump_json()
    jobs = [(cfg_json, split, i, str(split_dir)) for i in order]
    done = {int(rec["file"][6:11]): rec
            for rec in _run_jobs(jobs, workers, engine, scheduler, desc or split)}
    return [done[i] for i in order]


def generate_corpus(
    name: str,
    cfg: PcfgConfig | NgramConfig,
    corpus_dir: Path,
    *,
    workers: int = 1,
    engine: str = "local",
    scheduler: str | None = None,
) -> Path:
    """Generate (or finish) one corpus: its loss floors, tokenizer and both splits.

    Finished shards are kept and a complete split is skipped, so a rerun after a kill
    resumes; a folder made from a different config is refused, never overwritten.

    Args:
        name: the corpus's name in the config.
        cfg: its config.
        corpus_dir: its folder (``RUN/corpus/<name>``).
        workers: as for :func:`generate_shards`.
        engine: as for :func:`generate_shards`.
        scheduler: as for :func:`generate_shards`.

    Returns:
        ``corpus_dir``.
    """
    corpus_dir = Path(corpus_dir)
    meta_path = corpus_dir / "corpus.json"
    chash = corpus_hash(cfg)
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("config_hash") != chash:
            raise ConfigError(
                f"{corpus_dir}: holds corpus '{name}' made from a different config "
                f"(hash {old.get('config_hash')} != {chash}); choose another --out or delete it"
            )
        floors = old["loss_floors"]  # a pure function of the config: not estimated again
    else:
        corpus_dir.mkdir(parents=True, exist_ok=True)
        floors = {k: float(v) for k, v in loss_floors(cfg).items()}
        atomic_write_json(meta_path, {
            "corpus": name, "kind": cfg.kind, "config": cfg.model_dump(mode="json"),
            "config_hash": chash, "hierlab_version": __version__, "loss_floors": floors,
        })
    tok_dir = corpus_dir / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        from hierlab.corpus.tokenizer import save_tokenizer

        with atomic_dir(tok_dir, overwrite=True, prefix=".tokenizer.") as tmp:
            save_tokenizer(cfg, tmp)
    for split in SPLITS:
        split_dir = corpus_dir / split
        if (split_dir / MANIFEST).exists():
            man = read_manifest(split_dir)
            if man.get("config_hash") == chash:
                log.info("%s/%s: complete, skipped", name, split)
                continue
            raise DataError(f"{split_dir}: manifest from a different config")
        split_dir.mkdir(parents=True, exist_ok=True)
        for torn in split_dir.glob(".*.tmp"):  # temp files of writers killed mid-shard
            torn.unlink(missing_ok=True)
        plan = plan_shards(cfg, split)
        records: dict[int, dict[str, Any]] = {}
        for i in range(len(plan)):
            rec = finished_shard(split_dir, i)
            if rec is not None:
                records[i] = rec
        if records:
            log.info("%s/%s: resuming, %d of %d shards done", name, split, len(records),
                     len(plan))
        todo = [i for i in range(len(plan)) if i not in records]
        recs = generate_shards(cfg, split, split_dir, todo, workers=workers, engine=engine,
                               scheduler=scheduler, desc=f"{name}/{split}")
        records.update(zip(todo, recs, strict=True))
        ordered = [records[i] for i in range(len(plan))]
        fields = _split_fields(name, cfg, split, floors)
        fields["sentences"] = int(sum(r.get("sentences", 0) for r in ordered))
        fields["rejected_sentences"] = int(sum(r.get("rejected", 0) for r in ordered))
        for r in ordered:
            r.pop("sentences", None)
            r.pop("rejected", None)
        drawn = fields["sentences"] + fields["rejected_sentences"]
        if drawn and fields["rejected_sentences"] / drawn > 0.05:
            log.warning(
                "%s/%s: %.1f%% of drawn sentences were test duplicates and redrawn; the train "
                "grammar is biased (see corpus-stats). Consider dedup: false for a lexicon "
                "this small.", name, split, 100 * fields["rejected_sentences"] / drawn)
        write_manifest(split_dir, ordered, **fields)
    return corpus_dir


@writes("run_dir")  # one writer per run folder (hierlab.lock)
@preempt.stoppable  # SIGTERM/SIGINT: stop between shards (hierlab.preempt)
def generate_corpora(
    corpora: Corpora,
    run_dir: Path,
    *,
    only: str | None = None,
    workers: int = 1,
    engine: str = "local",
    scheduler: str | None = None,
) -> dict[str, Path]:
    """Generate every corpus of an experiment under ``run_dir/corpus/``, resumably.

    Holds the run folder's writer lock, and stops between shards on SIGTERM/SIGINT.

    Args:
        corpora: the experiment's ``corpora`` section: name -> config.
        run_dir: the run directory.
        only: generate only the corpus of this name.
        workers: as for :func:`generate_shards`.
        engine: as for :func:`generate_shards`.
        scheduler: as for :func:`generate_shards`.

    Returns:
        corpus name -> its folder.
    """
    if only is not None and only not in corpora:
        raise ConfigError(
            f"--only: no corpus named {only!r} (config has: {', '.join(corpora) or 'none'})"
        )
    if not corpora:
        raise ConfigError("corpora: the config defines no corpus")
    out = {}
    for name, ccfg in corpora.items():
        if only is not None and name != only:
            continue
        out[name] = generate_corpus(name, ccfg, Path(run_dir) / "corpus" / name,
                                    workers=workers, engine=engine, scheduler=scheduler)
    return out
