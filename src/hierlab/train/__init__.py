"""Training stage: small Llama models trained on the corpora, with checkpoints over time.

``train_corpora(model_cfg, train_cfg, corpora, run_dir)`` trains one model per corpus name
into ``run_dir/models/<name>/`` (see notes/CONTRACTS.md for the files). Heavy imports (torch,
transformers) happen on first use of the API, so importing the config does not pull them in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hierlab._lazy import lazy_getattr
from hierlab.train.config import CheckpointConfig, ModelConfig, TrainingConfig

if TYPE_CHECKING:  # pragma: no cover
    from hierlab.train.loop import train_corpora, train_model

__all__ = ["CheckpointConfig", "ModelConfig", "TrainingConfig", "train_corpora", "train_model"]

__getattr__ = lazy_getattr(
    __name__, {"train_corpora": "hierlab.train.loop", "train_model": "hierlab.train.loop"}
)
