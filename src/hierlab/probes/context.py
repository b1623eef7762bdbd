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


def corpus_data(ckpt: Checkpoint) -> tuple[dict | None, Any]:
    """(manifest, test-split reader) of a hierlab run checkpoint's corpus; without a
    readable test split the manifest fields that ``run.json`` records, reader None."""
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
