"""Typed configuration of the probe stage.

Defaults are the reference values (docs/reference-study.md#what-the-study-computes) where
the reference had one, and the literature's (Olsson et al. 2022; Todd et al. 2023; McGrath
et al. 2023) otherwise; the quickstart preset sets small ones. Every random draw of a probe
derives from its section's ``seed`` so the same checkpoint and config always give the same
numbers.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hierlab.contracts import PROBES

_STRICT = ConfigDict(extra="forbid", validate_assignment=True)

#: the literals pydantic validates against; a test keeps them equal to hierlab.contracts
#: and to the probe registry
ProbeName = Literal["induction", "fv", "hydra", "structure", "mechanism"]
Variant = Literal["reference", "standard"]
ALL_PROBES: tuple[str, ...] = PROBES


class InductionConfig(BaseModel):
    """Repeated random tokens (docs/reference-study.md#induction-score), in-distribution repeats,
    previous-token score, loss by position and the in-context-learning score derived from it."""

    model_config = _STRICT

    seed: int = Field(0, ge=0, description="seed of the random-token prompts (reference: none)")
    samples: int = Field(20, ge=1, description="repeated-token prompts (reference: 20)")
    n: int = Field(64, ge=2, description="length of each half (reference: 64)")
    k_max: int = Field(10, ge=1, description="reference scores for k = 1..k_max")
    id_margin: int = Field(
        100, ge=0, description="ids drawn uniformly from [margin, V - margin) (reference: 100)"
    )
    id_range: tuple[int, int] | None = Field(
        None,
        description="[lo, hi): draw ids from this range instead (small vocabularies, where "
        "[100, V-100) is empty; e.g. the content words [0, eos_id))",
    )
    batch_size: int = Field(20, ge=1, description="prompts per forward pass")
    indist_samples: int = Field(
        20, ge=1, description="in-distribution prompts: test-split spans (each from a "
        "document start) repeated twice"
    )
    indist_n: int | None = Field(None, ge=2, description="their half length; null = n")
    position_windows: int = Field(
        64, ge=1, description="document-aligned test windows for the loss by position, the "
        "ICL score and the previous-token score"
    )
    icl_length: int | None = Field(
        None, ge=3, description="window length; null = the model's context, at most 512 "
        "(longer than the model's context is an error)"
    )
    icl_early_band: tuple[int, int] = Field(
        (40, 60), description="[lo, hi] 1-based predicted-token positions of the early band "
        "(Olsson et al.: token 50); clipped to the window, positions used recorded"
    )
    icl_late_band: tuple[int, int] = Field(
        (450, 512), description="[lo, hi] of the late band (Olsson et al.: token 500); the "
        "ICL score is late minus early, < 0 = in-context learning"
    )

    @model_validator(mode="after")
    def _bands(self) -> InductionConfig:
        for name in ("icl_early_band", "icl_late_band"):
            lo, hi = getattr(self, name)
            if not 2 <= lo <= hi:
                raise ValueError(f"induction.{name} must be [lo, hi] with 2 <= lo <= hi, "
                                 f"got [{lo}, {hi}]")
        if self.icl_early_band[1] >= self.icl_late_band[0]:
            raise ValueError(f"induction.icl_early_band {list(self.icl_early_band)} must end "
                             f"before induction.icl_late_band {list(self.icl_late_band)}")
        return self


class FunctionVectorConfig(BaseModel):
    """Function vectors: the reconstructed reference (docs/reference-study.md#function-vectors) and
    Todd et al. 2023."""

    model_config = _STRICT

    seed: int = Field(0, ge=0, description="seed of the standard-variant prompts")
    reference_pairs: int = Field(16, ge=1, description="source/target pairs (reference: 16)")
    reference_seed: int = Field(42, description="torch.Generator seed (reference: 42)")
    reference_connector: int | None = Field(
        None, description="connector id; null = connector range start + 50 (reference: 950)"
    )
    tasks: list[str] = Field(
        default_factory=lambda: ["copy_object", "restate_object", "bound_verb", "bound_object"],
        description="grammar tasks for models trained on a pcfg corpus (also: copy_verb); "
        "the binding tasks bound_verb, bound_object (probes/fv_tasks.py) run only on corpora "
        "with binding_probability > 0 and are skipped otherwise",
    )
    nl_tasks: list[str] = Field(
        default_factory=lambda: ["antonym", "country_capital", "english_french"],
        description="word-list tasks (probes/data/*.json), used for natural-language models",
    )
    n_shots: int = Field(10, ge=1, description="demonstrations per ICL prompt (Todd et al.: 10)")
    mean_prompts: int = Field(100, ge=1, description="clean ICL prompts for mean activations")
    cie_prompts: int = Field(
        25, ge=1, description="shuffled-label prompts per task for the CIE; heads are ranked "
        "by the CIE averaged over the tasks (Todd et al.), so on tasks x cie_prompts prompts"
    )
    eval_prompts: int = Field(50, ge=1, description="zero-shot / ICL evaluation prompts")
    top_k: int = Field(
        10, ge=1, description="heads summed into the function vector (one set for all tasks)"
    )
    batch_size: int = Field(32, ge=1, description="prompts per forward pass")


class HydraConfig(BaseModel):
    """Hydra effect: the reference (docs/reference-study.md#hydra-effect) and McGrath et al.
    2023."""

    model_config = _STRICT

    seed: int = Field(0, ge=0, description="seed of random-id samples (models without a corpus)")
    ks: list[int] = Field(default_factory=lambda: [1, 2], description="reference offsets k")
    max_samples: int = Field(100, ge=1, description="test-split chunks (reference: 100)")
    length: int | None = Field(
        None, ge=2, description="chunk length; null = the model's context length (reference 512)"
    )
    random_samples: int = Field(10, ge=1, description="random-id sequences without a corpus")
    random_length: int = Field(2048, ge=2, description="their length (reference OLMo: 2048)")
    id_margin: int = Field(100, ge=0, description="random ids in [margin, V - margin)")
    batch_size: int = Field(4, ge=1, description="chunks per forward pass")
    standard_samples: int = Field(4, ge=1, description="sequences for the standard variant")
    standard_length: int | None = Field(
        256, ge=2, description="their length; null = the reference length"
    )
    ablation: Literal["zero", "mean", "resample"] = Field(
        "resample",
        description="standard-variant ablation of an attention layer: resample (McGrath et "
        "al.'s main method: another sample's output), mean (over the other samples, same "
        "position) or zero; recorded in the table as an ablation:<name> row",
    )
    positions: Literal["final", "all"] = Field(
        "final", description="where the standard variant measures: the final token (McGrath "
        "et al.) or the mean over every position"
    )
    target: Literal["argmax", "next_token"] = Field(
        "argmax", description="target token: clean argmax (McGrath et al.) or the true next token"
    )
    layer_batch: int = Field(
        16, ge=1, description="ablated copies per forward in the standard variant"
    )


class StructureConfig(BaseModel):
    """Next-token class mass after grammar prefixes (docs/reference-study.md#structure-scores)."""

    model_config = _STRICT

    seed: int = Field(0, ge=0, description="seed of the prompts (reference: unseeded)")
    samples: int = Field(100, ge=1, description="prompts per prefix (reference: 100)")


class MechanismConfig(BaseModel):
    """Which mechanism the best head of each layer is (``probes/mechanism.py``): successor
    attention, match-breaking, causal share, random repeats at three lengths, permuted
    sentence repeats, and the label that follows from the thresholds below."""

    model_config = _STRICT

    seed: int = Field(0, ge=0, description="seed of the window choice, breaks and random ids")
    windows: int = Field(
        32, ge=1, description="document-aligned test windows of the full context length"
    )
    min_distance: int = Field(
        4, ge=2, description="an event's earlier occurrence lies at least this far back"
    )
    random_samples: int = Field(
        8, ge=1, description="random-id repeats per length (C/4, C/2 - 3, C/2)"
    )
    permuted_samples: int = Field(
        16, ge=1, description="prompts of K test sentences followed by the same K permuted"
    )
    causal_windows: int | None = Field(
        None, ge=1, description="the first n windows carry the causal share's ablations "
        "(null = all; each ablated head is one more forward over them)"
    )
    causal_heads_per_layer: int | None = Field(
        None, ge=1, description="heads ablated per layer for the causal share, the highest "
        "successor attention first; null = every head (large models: set a few)"
    )
    batch_size: int = Field(16, ge=1, description="windows per forward pass")
    successor_threshold: float = Field(
        0.3, ge=0.0, le=1.0, description="successor attention of a content induction head"
    )
    copy_threshold: float = Field(
        0.2, ge=0.0, le=1.0, description="successor attention of a positional or role-keyed "
        "copy head (20x the ~1/t of uniform attention)"
    )
    content_threshold: float = Field(
        0.5, description="content share of a content head (less: position or role keyed)"
    )
    causal_threshold: float = Field(
        0.3, description="causal share a content induction head must carry"
    )
    random_repeat_threshold: float = Field(
        0.3, ge=0.0, le=1.0, description="random-id prefix matching a content induction "
        "head must reach at every tested length (C/4, C/2 - 3, C/2); a content copy head "
        "below it is a local content copy"
    )
    positional_ratio: float = Field(
        2.0, gt=1.0, description="random-id prefix matching varying more than this across "
        "the three lengths flags a head as positional"
    )
    positional_floor: float = Field(
        0.1, ge=0.0, description="... when its largest value is at least this"
    )
    offset_ratio: float = Field(
        0.5, ge=0.0, description="a non-content copy head whose attention at one fixed "
        "offset (>= 2) is at least this fraction of its successor attention is positional"
    )
    previous_token_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="attention to the previous token of a "
        "previous-token head"
    )


class HubConfig(BaseModel):
    """Checkpoint suites: hub repositories with one revision per training step (OLMo-1B-hf,
    OLMo-2, Pythia, the Stanford CRFM GPT-2 runs) and local folders of such checkpoints."""

    model_config = _STRICT

    revisions: list[str] | None = Field(None, description="explicit revisions; null = all")
    revision_pattern: str | None = Field(
        None, description="when every revision is listed, keep those whose name matches this "
        "regular expression (e.g. '^stage1-' for OLMo-2's pretraining stage); explicit "
        "revisions are kept as named"
    )
    tokens_per_step: int | None = Field(
        None, ge=1, description="tokens per training step, for revision or folder names without "
        "a token count (Pythia step<N>, CRFM checkpoint-<N>); null = the published value of a "
        "known hub suite (Pythia 2,097,152; Stanford CRFM GPT-2 524,288), else unknown"
    )
    max_checkpoints: int | None = Field(
        None, ge=1, description="m evenly spaced by step: indices floor(i(n-1)/(m-1))"
    )
    delete_after: bool = Field(
        False, description="download -> probe -> delete each revision (caps disk use)"
    )
    cache_dir: str | None = Field(None, description="download folder; null = the HF cache")

    @field_validator("revision_pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"hub.revision_pattern is not a regular expression ({err})"
                                 ) from None
        return value


class ProbesConfig(BaseModel):
    """Which probes run, in which variant, with how many samples."""

    model_config = _STRICT

    seed: int = Field(0, ge=0, description="recorded in the metrics tables")
    probes: list[ProbeName] = Field(
        default_factory=lambda: list(ALL_PROBES), description="probes run by default"
    )
    variants: list[Variant] = Field(
        default_factory=lambda: ["reference", "standard"], description="variants run by default"
    )
    checkpoints: str | None = Field(
        None, description="checkpoint source; null = every models/<corpus>/checkpoints of the run"
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="dtype checkpoints are loaded in for probing"
    )
    induction: InductionConfig = Field(default_factory=InductionConfig)
    fv: FunctionVectorConfig = Field(default_factory=FunctionVectorConfig)
    hydra: HydraConfig = Field(default_factory=HydraConfig)
    structure: StructureConfig = Field(default_factory=StructureConfig)
    mechanism: MechanismConfig = Field(default_factory=MechanismConfig)
    hub: HubConfig = Field(default_factory=HubConfig)
    merge_timeout_s: float = Field(
        86400.0, gt=0, description="rank 0 waits this long for the other ranks' parts"
    )

    @model_validator(mode="after")
    def _check(self) -> ProbesConfig:
        if any(k < 1 for k in self.hydra.ks):
            raise ValueError(f"hydra.ks must be >= 1, got {self.hydra.ks}")
        h = self.hydra
        if h.ablation != "zero" and min(h.standard_samples, h.random_samples) < 2:
            raise ValueError(f"hydra.ablation {h.ablation} needs hydra.standard_samples and "
                             "hydra.random_samples >= 2 (it uses the other samples)")
        return self
