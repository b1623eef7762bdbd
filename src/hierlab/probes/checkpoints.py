"""Checkpoint sources behind one interface: hierlab runs, local HF folders, hub revisions.

A source is named by a string (``--checkpoints``):

* a hierlab run dir ``RUN`` (every ``RUN/models/<corpus>/checkpoints/step-XXXXXXXX/``),
  or one ``RUN/models/<corpus>``: source ``"run"``, model = the corpus name, step and
  tokens seen from each checkpoint's ``state.json``;
* any local folder of HF checkpoints (subfolders ``checkpoint-<N>``, ``step<N>-tokens<M>B``,
  ``step<N>``, ``stage1-step<N>-tokens<M>B``, ``step-<N>``, ...; the step is parsed from the
  name), or one checkpoint folder: source ``"local:<path>"``, model = the folder name;
* ``hub:<repo>`` (every revision), ``hub:<repo>@<rev>,<rev>`` (explicit revisions) or
  ``hub:<repo>@max=<m>`` (``m`` evenly spaced by step, indices ``floor(i(n-1)/(m-1))`` as the
  reference's ``--max-checkpoints``): one revision per training step, named as each suite
  publishes them -- OLMo-1B-hf ``step<N>-tokens<M>B``, OLMo-2 ``stage1-step<N>-tokens<M>B``
  and ``stage2-ingredient<K>-step<N>-tokens<M>B``, Pythia ``step<N>``, the Stanford CRFM
  GPT-2 runs ``checkpoint-<N>``. The hub is used only when named; listing revisions needs
  the network (refused under ``HF_HUB_OFFLINE``), explicit revisions load from the local
  cache when offline. With ``delete_after`` each revision is downloaded to a temporary
  folder, probed and deleted, so disk use stays at one checkpoint.

Tokens seen come from the name when it carries them (OLMo); otherwise step times the
suite's tokens per step (``hub.tokens_per_step``, or :data:`SUITE_TOKENS_PER_STEP` for a
known hub suite), else unknown. A later training stage restarts its step count and forks
from the end of stage 1 (OLMo-2's stage-2 ingredients are separate runs, souped later), so
its revisions form their own model, ``<repo>:stage2-ingredient<K>``, whose steps and tokens
count from the start of that stage.

Models load with ``from_pretrained(local_path)`` after ``snapshot_download(repo,
revision=...)`` for hub sources. A checkpoint that fails to load is the runner's to log
and skip.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import list_repo_refs, snapshot_download

from hierlab.errors import DataError
from hierlab.io import list_step_dirs, read_json
from hierlab.probes.config import HubConfig

log = logging.getLogger(__name__)

__all__ = [
    "SUITE_TOKENS_PER_STEP",
    "Checkpoint",
    "discover_checkpoints",
    "evenly_spaced",
    "load_model",
    "materialize",
    "parse_step",
    "suite_tokens_per_step",
    "trajectory",
]

_TOKENS_RE = re.compile(r"step[-_]?(\d+)[-_]tokens(\d+(?:\.\d+)?)([BMK]?)", re.IGNORECASE)
_STEP_RE = re.compile(r"(?:global_step|checkpoint|ckpt|step|iter)[-_]?(\d+)", re.IGNORECASE)
_STAGE_RE = re.compile(r"^(stage(\d+)(?:-ingredient\d+)?)-", re.IGNORECASE)
_SCALE = {"B": 10**9, "M": 10**6, "K": 10**3, "": 1}

#: tokens per optimizer step of the hub suites whose revision names carry no token count
#: (repo pattern, tokens). Pythia: 1024 sequences x 2048 tokens, "143 checkpoints ... saved
#: every 2,097,152,000 tokens" (github.com/EleutherAI/pythia README), for the eight sizes of
#: the paper; the early ``-v0`` release used other batch sizes and is not listed. Stanford
#: CRFM GPT-2 (Mistral): batch 512 x 1024 tokens (github.com/stanford-crfm/mistral,
#: conf/mistral-{small,medium}.yaml ``effective_bsz: 512``, conf/models ``seq_len: 1024``).
SUITE_TOKENS_PER_STEP: tuple[tuple[str, int], ...] = (
    (r"^EleutherAI/pythia-(70m|160m|410m|1b|1\.4b|2\.8b|6\.9b|12b)(-deduped)?$", 2_097_152),
    (r"^stanford-crfm/[a-z]+-gpt2-(small|medium)-x\d+$", 524_288),
)
HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.bin"]


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of one model; ``path`` for local ones, ``repo``/``revision`` for hub."""

    source: str
    model: str
    step: int
    tokens_seen: int | None = None
    path: Path | None = None
    repo: str | None = None
    revision: str | None = None
    run_dir: Path | None = None
    corpus: str | None = None

    @property
    def name(self) -> str:
        """Human-readable id used in logs: ``model@revision-or-folder``."""
        return f"{self.model}@{self.revision or (self.path.name if self.path else self.step)}"


def parse_step(name: str) -> tuple[int | None, int | None]:
    """(step, tokens seen) from a folder or branch name; ``(None, None)`` if none."""
    m = _TOKENS_RE.search(name)
    if m:
        return int(m.group(1)), int(float(m.group(2)) * _SCALE[m.group(3).upper()])
    m = _STEP_RE.search(name)
    if m:
        return int(m.group(1)), None
    return None, None


def trajectory(name: str) -> str | None:
    """The later training stage a revision belongs to (``stage2-ingredient1``), or ``None``
    for the main pretraining run (no stage, or stage 1)."""
    m = _STAGE_RE.match(name)
    return m.group(1).lower() if m and int(m.group(2)) > 1 else None


def suite_tokens_per_step(repo: str) -> int | None:
    """Tokens per step of a known hub suite (:data:`SUITE_TOKENS_PER_STEP`), else None."""
    for pattern, tokens in SUITE_TOKENS_PER_STEP:
        if re.match(pattern, repo):
            return tokens
    return None


def _tokens(step: int, tokens: int | None, per_step: int | None) -> int | None:
    return tokens if tokens is not None or per_step is None else step * per_step


def _model(base: str, name: str) -> str:
    stage = trajectory(name)
    return base if stage is None else f"{base}:{stage}"


def evenly_spaced(n: int, m: int | None) -> list[int]:
    """Indices ``floor(i(n-1)/(m-1))``, i = 0..m-1 (all when ``m`` is None or >= n)."""
    if m is None or m >= n:
        return list(range(n))
    if m <= 1:
        return [0] if n else []
    return sorted({(i * (n - 1)) // (m - 1) for i in range(m)})


def _run_checkpoints(model_dir: Path, run_dir: Path) -> list[Checkpoint]:
    """The ``checkpoints/step-N`` folders hierlab's training wrote, by step; step and
    tokens seen from each ``state.json`` (the folder name's step when it lacks one)."""
    out = []
    for step, d in list_step_dirs(model_dir / "checkpoints"):
        state = read_json(d / "state.json") or {}
        tokens = state.get("tokens_seen")
        out.append(Checkpoint("run", model_dir.name, int(state.get("step", step)),
                              None if tokens is None else int(tokens),
                              path=d, run_dir=run_dir, corpus=model_dir.name))
    return out


def _local_checkpoints(folder: Path, per_step: int | None) -> list[Checkpoint]:
    source = f"local:{folder}"
    if (folder / "config.json").exists():
        step, tokens = parse_step(folder.name)
        if step is None:
            ts = read_json(folder / "trainer_state.json") or {}
            step = int(ts.get("global_step", 0))
        return [Checkpoint(source, _model(folder.parent.name, folder.name), step,
                           _tokens(step, tokens, per_step), path=folder)]
    out = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        step, tokens = parse_step(d.name)
        if step is None:
            continue
        state = read_json(d / "state.json") or {}
        step = int(state.get("step", step))
        tokens = state.get("tokens_seen", _tokens(step, tokens, per_step))
        out.append(Checkpoint(source, _model(folder.name, d.name), step, tokens, path=d))
    return out


def _hub_checkpoints(spec: str, hub: HubConfig) -> list[Checkpoint]:
    repo, _, sel = spec.partition("@")
    revisions = hub.revisions
    max_m = hub.max_checkpoints
    if sel.startswith("max="):
        max_m = int(sel[4:])
    elif sel:
        revisions = [r for r in sel.split(",") if r]
    if revisions is None:
        if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
            raise DataError(
                f"hub:{repo}: listing revisions needs the network but HF_HUB_OFFLINE is set; "
                "name the revisions (hub:REPO@rev1,rev2)"
            )
        try:
            refs = list_repo_refs(repo)
        except Exception as err:  # network or auth failure: the user's to fix
            raise DataError(f"hub:{repo}: cannot list revisions ({err})") from None
        revisions = [b.name for b in refs.branches if b.name != "main"]
        if hub.revision_pattern is not None:
            keep = re.compile(hub.revision_pattern)
            revisions = [r for r in revisions if keep.search(r)]
    per_step = hub.tokens_per_step or suite_tokens_per_step(repo)
    parsed = []
    for rev in revisions:
        step, tokens = parse_step(rev)
        if step is None:
            log.warning("hub:%s: revision %s has no step in its name; skipped", repo, rev)
            continue
        parsed.append((step, rev, _tokens(step, tokens, per_step)))
    # by step; a later stage's steps restart, so its revisions are a model of their own
    parsed.sort(key=lambda p: (p[0], trajectory(p[1]) or "", p[1]))
    chosen = [parsed[i] for i in evenly_spaced(len(parsed), max_m)]
    return [Checkpoint(f"hub:{repo}", _model(repo, r), s, t, repo=repo, revision=r)
            for s, r, t in chosen]


def discover_checkpoints(
    spec: str | Path | None, run_dir: Path, hub: HubConfig | None = None
) -> list[Checkpoint]:
    """Every checkpoint named by ``spec`` (None: every model of ``run_dir``), sorted."""
    hub = hub or HubConfig()
    if spec is not None and str(spec).startswith("hub:"):
        return _hub_checkpoints(str(spec)[4:], hub)
    path = Path(spec) if spec is not None else Path(run_dir)
    if not path.exists():
        raise DataError(f"{path}: no such checkpoint source (a run dir, a folder, or hub:REPO)")
    if (path / "models").is_dir():
        out = []
        for md in sorted(p for p in (path / "models").iterdir() if (p / "checkpoints").is_dir()):
            out += _run_checkpoints(md, path)
        return sorted(out, key=lambda c: (c.model, c.step))
    if (path / "checkpoints").is_dir() and path.parent.name == "models":
        return _run_checkpoints(path, path.parent.parent)
    if path.name == "checkpoints" and path.parent.parent.name == "models":
        return _run_checkpoints(path.parent, path.parent.parent.parent)
    return sorted(_local_checkpoints(path, hub.tokens_per_step), key=lambda c: (c.model, c.step))


@contextlib.contextmanager
def materialize(ckpt: Checkpoint, hub: HubConfig | None = None,
                fresh: bool = False) -> Iterator[Path]:
    """A local folder holding the checkpoint (downloaded for hub ones; deleted after if
    ``hub.delete_after``; ``fresh``: downloaded again even if cached, for a revision whose
    earlier copy failed)."""
    hub = hub or HubConfig()
    if ckpt.path is not None:
        yield ckpt.path
        return
    tmp: str | None = None
    cache_dir = hub.cache_dir
    if hub.delete_after:
        if cache_dir:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix="hierlab-ckpt-", dir=cache_dir)
        cache_dir = tmp
    try:
        try:
            again = {"force_download": True} if fresh else {}
            local = snapshot_download(repo_id=ckpt.repo, revision=ckpt.revision,
                                      cache_dir=cache_dir, allow_patterns=HUB_FILES, **again)
        except Exception as err:  # offline, missing revision, network: skip this one
            raise DataError(f"download failed ({str(err).splitlines()[0] if str(err) else err!r})"
                            ) from None
        yield Path(local)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model(
    path: Path, device: str = "cpu", dtype: str = "float32", tokenizer_dir: Path | None = None
) -> tuple[torch.nn.Module, Any]:
    """(model in eval mode on ``device``, tokenizer or None) from a local folder.

    Raises whatever ``from_pretrained`` raises for a missing or corrupt checkpoint.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=_DTYPES[dtype])
    model.to(device).eval()
    tok = None
    for cand in (path, tokenizer_dir):
        if cand is None:
            continue
        cand = Path(cand)
        if (cand / "tokenizer.json").exists() or (cand / "tokenizer_config.json").exists():
            try:
                tok = AutoTokenizer.from_pretrained(str(cand))
                break
            except Exception as err:  # a missing tokenizer only disables the word-list tasks
                log.warning("%s: tokenizer not loaded (%s)", cand, err)
    return model, tok
