"""Tiny corpus configs shared by the corpus tests."""

from __future__ import annotations

from hierlab.config import ExperimentConfig
from tiny import tiny_experiment


def tiny_pcfg(**over) -> dict:
    base = {
        "kind": "pcfg",
        "lexicon": {"subjects": 40, "verbs": 40, "objects": 40, "connectors": 10},
        "sections": 2,
        "paragraphs_per_section": 2,
        "sentences_per_paragraph": 4,
        "repetitions": 3,
        "train_documents": 600,
        "test_documents": 40,
        "documents_per_shard": 500,
    }
    base.update(over)
    return base


def tiny_ngram(**over) -> dict:
    base = {
        "kind": "ngram",
        "vocab_size": 60,
        "num_contexts": 50,
        "min_length": 5,
        "max_length": 20,
        "train_sentences": 3000,
        "test_sentences": 200,
        "sentences_per_shard": 1000,
    }
    base.update(over)
    return base


def experiment(**corpora) -> ExperimentConfig:
    """The tests' tiny experiment config with these corpora (name -> corpus dict)."""
    return tiny_experiment(corpora=corpora)
