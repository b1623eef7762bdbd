"""Typed configuration of the figures stage: output formats, style and claim thresholds.

Kept free of matplotlib and pandas imports: :mod:`hierlab.config` imports it on every
command. The claim thresholds live here as named constants so that the docstrings of
:mod:`hierlab.figures.claims`, the defaults of :class:`ClaimThresholds` and the report all
quote the same numbers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

_STRICT = ConfigDict(extra="forbid", validate_assignment=True)

Variant = Literal["reference", "standard"]
ImageFormat = Literal["png", "svg", "pdf"]

# --- claim thresholds (see hierlab.figures.claims for the exact checks) -------------------
C1_EARLY_FRACTION = 0.10
"""C1: the point of training (fraction of the final step) at which convergence is judged."""
C1_MIN_EARLY_SHARE = 0.80
"""C1: share of the total loss decrease already achieved at C1_EARLY_FRACTION of training."""
C2_MIN_LATE_SHARE = 0.05
"""C2: share of the total loss decrease that must happen in the second half of training."""
C3_MIN_SCORE = 0.90
"""C3: verb->object and connector->subject class mass at the final checkpoint."""
C4_MAX_SCORE = 0.10
"""C4: the n-gram induction score must stay below this at every checkpoint."""
C5_MIN_SCORE = 0.30
"""C5: the PCFG induction score must reach at least this."""
C5_MAX_RISE_WIDTH = 0.25
"""C5: the 10%->90% part of the rise must span at most this fraction of training steps."""
C6_MIN_SCORE = 0.50
"""C6: the external model's induction score must reach this ..."""
C6_EARLY_FRACTION = 0.10
"""C6: ... within this fraction of its checkpoint step range ..."""
C6_MIN_PERSIST = 0.70
"""C6: ... and its final score must be at least this fraction of its maximum."""
C7_MIN_FRACTION = 1.0
"""C7: fraction of PCFG (layer, checkpoint) cells that must show compensation."""
C8_MIN_FRACTION = 1.0
"""C8: fraction of n-gram (layer, checkpoint) cells that must show no compensation."""
C9_LATE_LAYER_FRACTION = 0.75
"""C9: layers at or above this fraction of the deepest measured layer count as late."""
C9_MIN_LATE_SHARE = 0.50
"""C9: share of the external model's compensation mass that must sit in late layers."""


class ClaimThresholds(BaseModel):
    """Thresholds of the claim checks; defaults are the module constants above."""

    model_config = _STRICT

    c1_early_fraction: float = Field(
        C1_EARLY_FRACTION, gt=0, lt=1,
        description="C1: fraction of the final step at which convergence is judged",
    )
    c1_min_early_share: float = Field(
        C1_MIN_EARLY_SHARE, ge=0, le=1,
        description="C1: share of the loss decrease reached by c1_early_fraction",
    )
    c2_min_late_share: float = Field(
        C2_MIN_LATE_SHARE, ge=0, le=1,
        description="C2: share of the loss decrease that must come in the second half",
    )
    c3_min_score: float = Field(
        C3_MIN_SCORE, ge=0, le=1,
        description="C3: V->O and C->S class mass at the final checkpoint",
    )
    c4_max_score: float = Field(
        C4_MAX_SCORE, ge=0, le=1,
        description="C4: the n-gram induction score stays below this at every checkpoint",
    )
    c5_min_score: float = Field(
        C5_MIN_SCORE, ge=0, le=1,
        description="C5: the PCFG induction score reaches at least this",
    )
    c5_max_rise_width: float = Field(
        C5_MAX_RISE_WIDTH, gt=0, le=1,
        description="C5: widest 10 -> 90 % rise, as a fraction of the steps",
    )
    c6_min_score: float = Field(
        C6_MIN_SCORE, ge=0, le=1,
        description="C6: the external model's induction score reaches this ...",
    )
    c6_early_fraction: float = Field(
        C6_EARLY_FRACTION, gt=0, le=1,
        description="C6: ... within this fraction of its step range ...",
    )
    c6_min_persist: float = Field(
        C6_MIN_PERSIST, ge=0, le=1,
        description="C6: ... and ends at >= this fraction of its maximum",
    )
    c7_min_fraction: float = Field(
        C7_MIN_FRACTION, ge=0, le=1,
        description="C7: fraction of PCFG (layer, checkpoint) cells with compensation",
    )
    c8_min_fraction: float = Field(
        C8_MIN_FRACTION, ge=0, le=1,
        description="C8: fraction of n-gram cells without compensation",
    )
    c9_late_layer_fraction: float = Field(
        C9_LATE_LAYER_FRACTION, ge=0, le=1,
        description="C9: layers at or above this fraction of the depth are late",
    )
    c9_min_late_share: float = Field(
        C9_MIN_LATE_SHARE, ge=0, le=1,
        description="C9: share of the compensation mass in late layers",
    )


class FiguresConfig(BaseModel):
    """Figure formats, style and which metric variants to draw."""

    model_config = _STRICT

    formats: list[ImageFormat] = Field(
        default_factory=lambda: ["png", "svg"],
        description="image formats written per figure (the data always go to a .csv beside it)",
    )
    dpi: int = Field(200, ge=50, le=1200, description="raster resolution (the reference used 1200)")
    variants: list[Variant] = Field(
        default_factory=lambda: ["reference", "standard"],
        description="metric variants to draw; each gets its own file",
    )
    width_in: float = Field(7.098, gt=0, description="figure width in inches (the study's 7.098)")
    aspect: float = Field(1.618, gt=0, description="width / height (the study's golden ratio)")
    cmap: str = Field(
        "crest",
        description="sequential colormap: 'crest' (a built-in crest-like map) or a matplotlib name",
    )
    claims: ClaimThresholds = Field(default_factory=ClaimThresholds)
