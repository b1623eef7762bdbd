"""The contracts between stages: names and schemas that two or more stages must agree on.

One stage writes these, another reads them; declaring them once here means a reader and
a writer cannot drift apart. Per-stage details (the shard format, the run files) stay with
the stage that owns them; only what crosses a stage boundary lives here. What each of the
three config hashes identifies: ``docs/design-pipeline.md``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

__all__ = [
    "MECHANISM_LABELS",
    "MECHANISM_RANK",
    "METRICS_SCHEMA",
    "OPTIONAL_METRIC_COLUMNS",
    "PROBES",
    "REQUIRED_METRIC_COLUMNS",
    "ROLE_CODES",
    "STAGES",
    "VARIANTS",
    "section_hash",
]

#: the stages of a run, in order (``hierlab run --stages``)
STAGES: tuple[str, ...] = ("corpus", "train", "probe", "figures")
#: the probes a run can measure (``probes.run``, ``hierlab probe --probes``)
PROBES: tuple[str, ...] = ("induction", "fv", "hydra", "structure", "mechanism")

#: ``mechanism`` probe labels, by their code (the ``value`` of its ``label`` rows)
MECHANISM_LABELS: tuple[str, ...] = (
    "none", "previous-token", "positional copy", "role-keyed copy", "content induction",
    "local content copy",
)

#: the labels from least to most induction-like: a checkpoint's label is its layers' highest.
#: Stored codes are indices into :data:`MECHANISM_LABELS` (appended to, never reordered), so
#: the ranking is kept apart from them.
MECHANISM_RANK: tuple[str, ...] = (
    "none", "previous-token", "positional copy", "role-keyed copy", "local content copy",
    "content induction",
)

#: every probe has the reference study's definition and the literature's
VARIANTS: tuple[str, ...] = ("reference", "standard")

#: ``RUN/metrics/<probe>.parquet``: one tidy row per (checkpoint, metric, layer, head, k)
METRICS_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("model", pa.string()),
        ("step", pa.int64()),
        ("tokens_seen", pa.int64()),
        ("probe", pa.string()),
        ("variant", pa.string()),
        ("metric", pa.string()),
        ("layer", pa.int64()),
        ("head", pa.int64()),
        ("k", pa.int64()),
        ("value", pa.float64()),
        ("n_samples", pa.int64()),
        ("seed", pa.int64()),
    ]
)
#: columns a metrics table must have to be drawn; the others may be absent (external tables)
REQUIRED_METRIC_COLUMNS: tuple[str, ...] = (
    "source", "model", "step", "probe", "variant", "metric", "value"
)
OPTIONAL_METRIC_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in METRICS_SCHEMA if f.name not in REQUIRED_METRIC_COLUMNS
)

#: values of the corpus shards' ``role`` annotation column (read by the probes' role sets)
ROLE_CODES: dict[str, int] = {
    "subject": 0, "verb": 1, "object": 2, "connector": 3, "special": 4, "word": 5
}


def section_hash(section: Any) -> str:
    """A short stable hash of one config section: equal hashes mean equal settings.

    ``corpus_hash`` and ``probe_hash`` are this hash of their section.

    Args:
        section: a pydantic model, hashed through its JSON dump with sorted keys.

    Returns:
        The first 16 hex digits of the SHA-256 of that dump.
    """
    blob = json.dumps(section.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
