"""The one tiny experiment config of the tests, with overrides.

``tiny_config(**overrides)`` is a plain dict (what a YAML file holds): two small corpora
(a PCFG and an n-gram), a one-layer model of width 32 over 64 tokens, 8192 training tokens
with three log-spaced checkpoints and probes at toy sample counts, all on CPU. It trains
and probes in seconds; ``test_pipeline`` and ``test_sweep`` run it end to end.

Overrides: ``corpora=`` replaces the corpora (a mapping name -> corpus dict); every other
keyword is a top-level key (``name``) or a section merged key by key into the tiny one, at
any depth (``probes={"induction": {"k_max": 3}}`` changes that one field); :data:`DROP`
as a value removes the key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

DROP: Any = type("Drop", (), {"__repr__": lambda self: "DROP"})()

TINY: dict[str, Any] = {
    "name": "tiny",
    "corpora": {
        "pcfg": {
            "kind": "pcfg",
            "lexicon": {"subjects": 8, "verbs": 8, "objects": 8, "connectors": 4},
            "zipf_exponent": 1.5, "sentences_per_paragraph": 2, "repetitions": 2,
            "train_documents": 150, "test_documents": 10, "dedup": False,
        },
        "ngram": {
            "kind": "ngram", "vocab_size": 40, "num_contexts": 40, "min_length": 5,
            "max_length": 15, "train_sentences": 800, "test_sentences": 50,
        },
    },
    "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "context_length": 64},
    "training": {
        "batch_size": 8, "micro_batch_size": 8, "lr": 0.003, "schedule": "cosine",
        "warmup_steps": 2, "max_tokens": 8192, "checkpoints": {"schedule": "log", "count": 3},
        "log_every": 2, "eval_tokens": 1024, "device": "cpu",
    },
    "probes": {
        "device": "cpu",
        "induction": {"samples": 2, "n": 16, "k_max": 2, "id_range": [0, 28],
                      "position_windows": 2, "indist_samples": 2,
                      "icl_early_band": [4, 8], "icl_late_band": [40, 48]},
        "fv": {"mean_prompts": 4, "cie_prompts": 2, "eval_prompts": 4, "n_shots": 2,
               "reference_pairs": 2, "nl_tasks": []},
        "hydra": {"max_samples": 2, "standard_samples": 2, "standard_length": None},
        "structure": {"samples": 4},
    },
}


def _merge(into: dict[str, Any], over: dict[str, Any]) -> None:
    for key, value in over.items():
        if value is DROP:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def tiny_config(*, corpora: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """The tiny experiment config as a dict, with ``overrides`` (see the module docstring)."""
    cfg = copy.deepcopy(TINY)
    if corpora is not None:
        cfg["corpora"] = copy.deepcopy(corpora)
    _merge(cfg, overrides)
    return cfg


def tiny_experiment(**overrides: Any) -> Any:
    """:func:`tiny_config` validated: a :class:`hierlab.config.ExperimentConfig`."""
    from hierlab.config import config_from_dict

    return config_from_dict(tiny_config(**overrides))


def write_tiny_config(path: Path, **overrides: Any) -> Path:
    """:func:`tiny_config` written as YAML to ``path``; returns ``path``."""
    path = Path(path)
    path.write_text(yaml.safe_dump(tiny_config(**overrides), sort_keys=False))
    return path
