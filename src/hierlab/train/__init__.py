"""Training stage: small Llama models trained on the corpora, with checkpoints over time.

``train_corpora(cfg, run_dir)`` trains one model per corpus into ``run_dir/models/<name>/``
(see notes/CONTRACTS.md for the files). Heavy imports (torch, transformers) happen on first
use of the API, so importing the config does not pull them in.
"""

from __future__ import annotations

from typing import Any

from hierlab.train.config import CheckpointConfig, ModelConfig, TrainingConfig

__all__ = ["CheckpointConfig", "ModelConfig", "TrainingConfig", "train_corpora", "train_model"]


def __getattr__(name: str) -> Any:
    if name in ("train_corpora", "train_model"):
        from hierlab.train import loop

        return getattr(loop, name)
    raise AttributeError(name)
