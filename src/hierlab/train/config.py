"""Typed configuration of the model and training stages.

Defaults are the reference study's (docs/reference-study.md#model-and-training): a 16-layer
width-256 Llama, global batch 3104 x 512 tokens, one epoch, AdamW lr 5e-5 decayed linearly
to 0 without warmup, gradient clipping 1.0, fp32, 100 evenly spaced checkpoints.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_STRICT = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(BaseModel):
    """A Llama-style decoder; defaults are the reference architecture."""

    model_config = _STRICT

    hidden_size: int = Field(256, ge=1, description="residual stream width d_model")
    num_layers: int = Field(16, ge=1, description="decoder blocks")
    num_heads: int = Field(4, ge=1, description="attention heads per block")
    num_kv_heads: int | None = Field(None, ge=1, description="null = num_heads (no GQA)")
    intermediate_size: int | None = Field(None, description="null = 4 x hidden_size")
    context_length: int = Field(512, ge=2, description="training window and max positions")
    vocab_size: int | None = Field(
        None,
        ge=2,
        description="null = the corpus manifest's vocab_size; if set it must equal it",
    )
    rms_norm_eps: float = Field(1e-6, gt=0, description="epsilon of every RMSNorm")
    rope_theta: float = Field(10_000.0, gt=0, description="RoPE base frequency")
    initializer_range: float = Field(0.02, gt=0, description="init std of every weight")
    tie_word_embeddings: bool = Field(
        False, description="share the input embedding and the unembedding"
    )
    attention_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="dropout on attention probabilities"
    )

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads "
                f"({self.num_heads})"
            )
        if self.num_kv_heads is not None and self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be divisible by num_kv_heads "
                f"({self.num_kv_heads})"
            )
        return self

    @property
    def ffn_size(self) -> int:
        """The FFN width: ``intermediate_size``, or 4 x ``hidden_size`` when unset."""
        return self.intermediate_size or 4 * self.hidden_size


class CheckpointConfig(BaseModel):
    """When checkpoints are written; the final step is always included.

    ``linear``: every ceil(total/count) steps (count=100 is the reference).
    ``log``: step 0 and powers of two below that interval, then the linear grid (Pythia).
    ``list``: exactly ``steps`` (steps past the end are dropped).
    """

    model_config = _STRICT

    schedule: Literal["linear", "log", "list"] = Field(
        "linear", description="linear, log or list (see above)"
    )
    count: int = Field(100, ge=1, description="linear/log: number of evenly spaced checkpoints")
    every: int | None = Field(
        None, ge=1, description="linear/log: interval in steps (overrides count)"
    )
    steps: list[int] = Field(default_factory=list, description="list: explicit steps (>= 0)")

    @model_validator(mode="after")
    def _check(self) -> CheckpointConfig:
        if any(s < 0 for s in self.steps):
            raise ValueError(f"checkpoint steps must be >= 0, got {self.steps}")
        if self.schedule == "list" and not self.steps:
            raise ValueError("schedule 'list' needs a non-empty 'steps' list")
        return self


class TrainingConfig(BaseModel):
    """Optimiser, schedule, data and checkpoint settings."""

    model_config = _STRICT

    seed: int = Field(0, ge=0, description="model init and data order; saved with checkpoints")
    batch_size: int = Field(3104, ge=1, description="sequences per optimizer step (global)")
    micro_batch_size: int | None = Field(
        None,
        ge=1,
        description="sequences per forward pass per device (gradient accumulation); "
        "null = min(64, per-device batch)",
    )
    lr: float = Field(5e-5, ge=0.0, description="peak learning rate")
    schedule: Literal["linear", "cosine", "constant", "wsd"] = Field(
        "linear", description="lr after warmup: linear or cosine decay to min_lr, constant, "
        "or wsd (warmup-stable-decay: constant, then linear decay to min_lr over the last "
        "decay_fraction of the steps)"
    )
    warmup_steps: int = Field(0, ge=0, description="linear lr warm-up from 0 over this many steps")
    decay_fraction: float = Field(
        0.2, gt=0.0, le=1.0, description="wsd: share of the steps spent decaying"
    )
    min_lr: float = Field(0.0, ge=0.0, description="lr at the last step (linear/cosine)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW (beta1, beta2)")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW decay of matrices/embeddings")
    grad_clip: float | None = Field(1.0, description="max global grad norm; null/0 = off")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="bf16: autocast (CPU and GPU); fp16: GPU only, with GradScaler"
    )
    compile: bool = Field(
        False,
        description="torch.compile the model; compiled CPU runs use deterministic algorithms. "
        "The first compile of a process takes extra time (speed-ups: docs/performance.md); "
        "the quickstart's documented results are uncompiled",
    )
    attention: Literal["auto", "sdpa", "eager"] = Field(
        "auto",
        description="attention kernel while training: auto = eager when compiled on CPU "
        "(inductor fuses it), else sdpa; the test loss is always measured with sdpa, and "
        "probes load checkpoints with HF's default",
    )
    adamw: Literal["auto", "fused", "foreach", "for-loop"] = Field(
        "auto",
        description="AdamW kernels: auto = fused on CUDA, for-loop on CPU (the same bits as "
        "foreach there; fused differs in the last bits)",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads per training process; null = torch's setting, "
        "divided between the corpora trained at once",
    )
    parallel_corpora: int | Literal["auto"] = Field(
        1,
        description="corpora trained at the same time, one process each, threads split "
        "between them; auto = as many as there are corpora and CPU threads on CPU, 1 on "
        "CUDA and under torchrun; 1 = one corpus after the other (docs/performance.md)",
    )
    max_tokens: int | None = Field(
        None, ge=1, description="token budget; null = train for 'epochs' over the train split"
    )
    epochs: float = Field(1.0, gt=0, description="passes over the train split (if no max_tokens)")
    checkpoints: CheckpointConfig = Field(default_factory=CheckpointConfig)
    log_every: float = Field(
        0.01,
        gt=0,
        description="loss.csv interval: an int >= 1 is steps, a number < 1 a fraction of the "
        "run (0.01 = every 1%, as the reference's CSVs)",
    )
    eval_tokens: int = Field(
        1_048_576, ge=0, description="test tokens scored at every checkpoint (0 = no test loss)"
    )
    eval_batch_size: int | None = Field(None, ge=1, description="null = micro_batch_size")
    align_to_documents: bool = Field(
        False, description="start every window at a document start (skips the straddling tail)"
    )
    keep_boundary_token: bool = Field(
        True,
        description="aligned windows: start at the document-boundary token (if the corpus "
        "has one) instead of the token after it",
    )
    tracking: list[Literal["tensorboard", "wandb"]] = Field(
        default_factory=list,
        description="experiment trackers (extra 'tracking'): loss, lr, grad norm, eval loss "
        "and probe summaries; off by default",
    )
    wandb_project: str | None = Field(None, description="W&B project; null = 'hierlab'")
    tensorboard: bool = Field(False, description="same as adding 'tensorboard' to tracking")
    device: str | None = Field(None, description="cpu | cuda | cuda:N; null = cuda if available")

    @model_validator(mode="after")
    def _check(self) -> TrainingConfig:
        if self.log_every >= 1 and self.log_every != int(self.log_every):
            raise ValueError(
                f"log_every >= 1 must be a whole number of steps, got {self.log_every}"
            )
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {self.betas}")
        if self.grad_clip is not None and self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 or null, got {self.grad_clip}")
        if isinstance(self.parallel_corpora, int) and self.parallel_corpora < 1:
            raise ValueError(
                f"parallel_corpora must be >= 1 or 'auto', got {self.parallel_corpora}"
            )
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must be <= lr ({self.lr})")
        return self
