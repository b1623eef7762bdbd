"""Checkpoint sources behind one interface: hierlab runs, local HF folders, hub revisions.

A source is one string (``--checkpoints``): a run folder, a folder of HF checkpoints, or
``hub:<repo>[@<revisions>|@max=<m>]``. :func:`discover_checkpoints` turns it into
:class:`Checkpoint` records with step and tokens seen, so every probe sees one kind of
input whatever trained the model. The forms and how steps and tokens are read:
docs/design-probes.md#checkpoint-sources and docs/checkpoint-suites.md.
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
    """One checkpoint of one model.

    Attributes:
        source: ``run``, ``local:<folder>`` or ``hub:<repo>`` (the metrics tables' column).
        model: the model it belongs to: a corpus name, a folder name or a repository,
            suffixed ``:<stage>`` for a later training stage.
        step: the training step.
        tokens_seen: tokens trained on, or ``None`` when unknown.
        path: the local folder (local and run checkpoints).
        repo: the hub repository (hub checkpoints).
        revision: the hub revision (hub checkpoints).
        run_dir: the hierlab run folder (run checkpoints), for the corpus.
        corpus: the corpus the model was trained on (run checkpoints).
    """

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
    """Read the step, and the tokens seen where named, from a folder or branch name.

    Args:
        name: e.g. ``step1000-tokens4B``, ``stage1-step140000-tokens294B``,
            ``checkpoint-300``, ``step-00001000``.

    Returns:
        ``(step, tokens seen)``; tokens ``None`` if the name has none, ``(None, None)``
        for a name without a step.
    """
    m = _TOKENS_RE.search(name)
    if m:
        return int(m.group(1)), int(float(m.group(2)) * _SCALE[m.group(3).upper()])
    m = _STEP_RE.search(name)
    if m:
        return int(m.group(1)), None
    return None, None


def trajectory(name: str) -> str | None:
    """The later training stage a revision belongs to.

    A later stage restarts its step count, so its revisions must form a model of their
    own rather than interleave with the main run's.

    Args:
        name: a revision or folder name.

    Returns:
        The stage (e.g. ``stage2-ingredient1``), or ``None`` for the main pretraining
        run (no stage, or stage 1).
    """
    m = _STAGE_RE.match(name)
    return m.group(1).lower() if m and int(m.group(2)) > 1 else None


def suite_tokens_per_step(repo: str) -> int | None:
    """Tokens per step of a known hub suite, for revision names without a token count.

    Args:
        repo: the hub repository, e.g. ``EleutherAI/pythia-160m``.

    Returns:
        Its published tokens per step (:data:`SUITE_TOKENS_PER_STEP`), else ``None``.
    """
    for pattern, tokens in SUITE_TOKENS_PER_STEP:
        if re.match(pattern, repo):
            return tokens
    return None


def _tokens(step: int, tokens: int | None, per_step: int | None) -> int | None:
    return tokens if tokens is not None or per_step is None else step * per_step


def _model(base: str, name: str) -> str:
    stage = trajectory(name)
    return base if stage is None else f"{base}:{stage}"


def evenly_spaced(count: int, keep: int | None) -> list[int]:
    """Indices of ``keep`` items spread evenly over ``count`` (the reference's rule).

    Args:
        count: how many items there are.
        keep: how many to keep; ``None`` keeps all.

    Returns:
        Sorted indices ``floor(i (count - 1) / (keep - 1))``, ``i = 0..keep-1`` (first
        and last included); every index when ``keep`` is ``None`` or ``>= count``.
    """
    if keep is None or keep >= count:
        return list(range(count))
    if keep <= 1:
        return [0] if count else []
    return sorted({(i * (count - 1)) // (keep - 1) for i in range(keep)})


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
    """Every checkpoint a source names.

    Args:
        spec: the source: a hierlab run folder (or one ``RUN/models/<corpus>``), a folder
            of HF checkpoints or one checkpoint folder, or ``hub:<repo>``,
            ``hub:<repo>@<rev>,<rev>``, ``hub:<repo>@max=<m>``; ``None``: ``run_dir``.
        run_dir: the run folder used when ``spec`` is ``None``.
        hub: the ``probes.hub`` settings (revisions, pattern, tokens per step, ...).

    Returns:
        The checkpoints, sorted by model then step.

    Raises:
        DataError: a path that does not exist, or hub revisions that cannot be listed.
    """
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
def materialize(checkpoint: Checkpoint, hub: HubConfig | None = None,
                fresh: bool = False) -> Iterator[Path]:
    """A local folder holding the checkpoint, downloading a hub one.

    Args:
        checkpoint: the checkpoint; a local one is yielded as is.
        hub: the ``probes.hub`` settings; with ``delete_after`` the download goes to a
            temporary folder removed on exit, so a sweep holds one revision on disk.
        fresh: download again even if cached, for a revision whose earlier copy failed.

    Yields:
        The folder to load from.

    Raises:
        DataError: the download failed (offline, missing revision, network).
    """
    hub = hub or HubConfig()
    if checkpoint.path is not None:
        yield checkpoint.path
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
            local = snapshot_download(repo_id=checkpoint.repo, revision=checkpoint.revision,
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
    """Load a causal LM, and its tokenizer if there is one, from a local folder.

    Args:
        path: the checkpoint folder.
        device: where the model goes (``cpu``, ``cuda``, ``cuda:N``).
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        tokenizer_dir: a second place to look for the tokenizer (a hierlab run keeps it
            beside the corpus, not in each checkpoint).

    Returns:
        ``(model in eval mode, tokenizer or None)``; a tokenizer that fails to load only
        disables the word-list tasks, so it is logged, not raised.

    Raises:
        Exception: whatever ``from_pretrained`` raises for a missing or corrupt model.
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
