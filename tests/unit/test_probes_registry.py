from __future__ import annotations

from typing import get_args

import pytest

from hierlab.contracts import PROBES, VARIANTS
from hierlab.errors import ConfigError
from hierlab.probes import registry
from hierlab.probes.config import ALL_PROBES, ProbeName, ProbesConfig, Variant
from hierlab.probes.runner import probe_hash


def test_registry_covers_every_probe_and_variant() -> None:
    units = registry.registered()
    assert set(units) == {(p, v) for p in PROBES for v in VARIANTS}
    assert registry.probe_names() == ALL_PROBES == PROBES == get_args(ProbeName)
    assert get_args(Variant) == VARIANTS


def test_lookup_errors_name_what_is_known() -> None:
    with pytest.raises(ConfigError, match="unknown probe 'nope' .*induction, fv, hydra"):
        registry.lookup("nope", "reference")
    with pytest.raises(ConfigError, match="no variant 'both'"):
        registry.lookup("hydra", "both")
    with pytest.raises(ConfigError, match="registered twice"):
        registry.register("structure", "reference")(lambda ctx: [])


def test_probe_hash_is_stable() -> None:
    # the .parts/<probe>/<variant>/<hash> folders of existing runs must keep resuming
    cfg = ProbesConfig()
    assert {p: probe_hash(cfg, p) for p in PROBES} == {
        "induction": "a9a2d11c279e9d02", "fv": "e5c3365881d36f22",
        "hydra": "7ca5af5fcfd4c3dd", "structure": "a4031c8361abfc20",
        "mechanism": "53405d6beb21bd8b",  # random-repeat test in the label
    }
