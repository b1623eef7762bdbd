"""What every corpus sampler returns: one shard's tokens, document offsets, annotations.

Both samplers (:mod:`~hierlab.corpus.pcfg`, :mod:`~hierlab.corpus.ngram`) fill the same
record, so generation (:mod:`~hierlab.corpus.generate`) and the loss floors treat them
alike. The ``role`` annotation's values are the cross-stage codes of
:data:`hierlab.contracts.ROLE_CODES` (the probes read them back); the module-level ints
below are those codes for the compiled kernels, which can only read plain int globals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hierlab.contracts import ROLE_CODES

__all__ = [
    "ROLE_CONNECTOR",
    "ROLE_OBJECT",
    "ROLE_SPECIAL",
    "ROLE_SUBJECT",
    "ROLE_VERB",
    "ROLE_WORD",
    "ShardOutput",
]

ROLE_SUBJECT: int = ROLE_CODES["subject"]
ROLE_VERB: int = ROLE_CODES["verb"]
ROLE_OBJECT: int = ROLE_CODES["object"]
ROLE_CONNECTOR: int = ROLE_CODES["connector"]
ROLE_SPECIAL: int = ROLE_CODES["special"]  # EOS and the document boundary
ROLE_WORD: int = ROLE_CODES["word"]  # an n-gram word (no grammatical role)


@dataclass
class ShardOutput:
    """What one shard's generation returns.

    Attributes:
        tokens: the shard's token ids, in stream order.
        doc_starts: offsets within ``tokens`` where a document starts (a training window
            may be aligned to them).
        annotations: per-token latent annotation columns (``role``, ...) or None.
        units: the documents or sentences the shard holds.
        rejected: sentences redrawn because they occur in the test split.
        sentences: sentences written.
        copies: sentences that copy an earlier one (the grammar's repeats and recalls).
    """

    tokens: np.ndarray
    doc_starts: np.ndarray
    annotations: dict[str, np.ndarray] | None
    units: int
    rejected: int = 0
    sentences: int = 0
    copies: int = 0
