"""What the two design test files share: a small lexicon, a design config, sentences.

Used by ``test_corpus_designs.py`` (config, bytes, rates, annotations) and
``test_corpus_design_floors.py`` (the exact conditionals and the analytic floors).
"""

from __future__ import annotations

import math

import numpy as np

from hierlab.corpus.config import PcfgConfig

LEX = {"subjects": 16, "verbs": 12, "objects": 20, "connectors": 8}


def design_cfg(**kw) -> PcfgConfig:
    """A small 2 x 2 x 4 document (40 train, 10 test latents, 2 realisations each)."""
    base = dict(lexicon=LEX, zipf_exponent=1.3, sections=2, paragraphs_per_section=2,
                sentences_per_paragraph=4, train_documents=40, test_documents=10,
                repetitions=2)
    base.update(kw)
    return PcfgConfig(**base)


def split_sentences(tokens: np.ndarray, eos: int) -> list[np.ndarray]:
    """The sentences of ``tokens``, each ending in ``eos`` (a trailing partial one dropped)."""
    ends = np.flatnonzero(tokens == eos)
    return np.split(tokens, ends + 1)[: len(ends)]


def mixture_nll(sent: np.ndarray, pf: list[float], hyps: list) -> float:
    """-log P(sent) under prior hypotheses [(weight, None = fresh | source sentence)]."""
    nll = 0.0
    for pos, tok in enumerate(sent):
        num = den = 0.0
        new = []
        for w, src in hyps:
            like = pf[pos] if src is None else float(pos < len(src) and src[pos] == tok)
            num += w * like
            den += w
            new.append((w * like, src))
        nll -= math.log(num / den)
        hyps = [(w, s) for w, s in new if w > 0]
    return nll
