"""What the probes of one checkpoint share: the model, its tokenizer and its corpus.

One :class:`ProbeContext` is built per checkpoint and handed to every registered probe
(:mod:`hierlab.probes.registry`); its ``memo`` lets the variants of one probe share work
(the induction scores are computed once for both variants).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hierlab.errors import DataError
from hierlab.probes.checkpoints import Checkpoint
from hierlab.probes.config import ProbesConfig
from hierlab.probes.hooks import HookedModel

log = logging.getLogger(__name__)

__all__ = ["ProbeContext", "corpus_data"]


@dataclass
class ProbeContext:
    """What the probes of one checkpoint share: model, tokenizer, corpus data.

    Attributes:
        cfg: the experiment's ``probes`` section.
        ckpt: the checkpoint being probed.
        hm: the hooked model loaded from it.
        tokenizer: its tokenizer, or ``None`` (the word-list tasks then do not apply).
        manifest: the corpus manifest of a hierlab run (``None`` for other models).
        reader: the corpus's test-split reader, or ``None`` without a readable split.
        memo: work shared between the variants of one probe, keyed by the probe.
    """

    cfg: ProbesConfig
    ckpt: Checkpoint
    hm: HookedModel
    tokenizer: Any = None
    manifest: dict[str, Any] | None = None
    reader: Any = None
    memo: dict[str, Any] = field(default_factory=dict)

    @property
    def roles(self) -> dict[str, list[int]] | None:
        """The corpus's ``{role: [lo, hi)}`` id ranges (pcfg corpora), else ``None``."""
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
    def context_length(self) -> int:
        """The model's context length (``max_position_embeddings``, 512 if unset)."""
        return int(getattr(self.hm.config, "max_position_embeddings", 512) or 512)

    def windows(self, count: int, length: int) -> torch.Tensor:
        """The first consecutive chunks of the test split.

        Args:
            count: how many chunks (fewer if the split is shorter).
            length: tokens per chunk.

        Returns:
            ``[min(count, available), length]`` token ids.

        Raises:
            DataError: no test split, or one shorter than one chunk.
        """
        if self.reader is None:
            raise DataError(f"{self.ckpt.name}: no test split to read (run hierlab corpus)")
        avail = int(self.reader.total_tokens) // length
        n = min(count, avail)
        if n == 0:
            raise DataError(f"{self.ckpt.name}: test split shorter than one {length}-token chunk")
        arr = np.stack([self.reader.read(i * length, length) for i in range(n)]).astype(np.int64)
        return torch.from_numpy(arr)


def corpus_data(checkpoint: Checkpoint) -> tuple[dict | None, Any]:
    """The corpus a hierlab run's checkpoint was trained on, as far as it can be read.

    Without a readable test split the model's ``run.json`` still records the manifest
    fields the probes need (kind, vocabulary, roles), so the probes that need no test
    data still apply.

    Args:
        checkpoint: a checkpoint; only ones from a hierlab run have a corpus.

    Returns:
        ``(manifest, test-split reader)``; ``(fields from run.json, None)`` without a
        readable split; ``(None, None)`` for a checkpoint outside a hierlab run.
    """
    if checkpoint.run_dir is None or checkpoint.corpus is None:
        return None, None
    split = checkpoint.run_dir / "corpus" / checkpoint.corpus / "test"
    try:
        from hierlab.corpus.shards import SplitReader

        reader = SplitReader(split)
        return reader.manifest, reader
    except (DataError, ImportError, OSError) as err:
        log.warning("%s: test split unavailable (%s)", checkpoint.name, err)
    run_json = checkpoint.run_dir / "models" / checkpoint.corpus / "run.json"
    if run_json.exists():
        import json

        info = json.loads(run_json.read_text())
        return {"kind": info.get("kind"), "vocab_size": info.get("vocab_size"),
                "roles": info.get("roles")}, None
    return None, None
