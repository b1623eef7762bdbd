"""The GPU emergence driver's plans, checked without training: the matched-arms file loads,
pairs every arm over the same seeds, and its dry run keeps whole pairs at toy size."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from hierlab.sweep.spec import load_sweep

ROOT = Path(__file__).resolve().parents[2]


def _driver():
    spec = importlib.util.spec_from_file_location(
        "emergence_gpu", ROOT / "experiments" / "emergence_gpu.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["emergence_gpu"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_arms_files_pair_every_arm_over_the_same_seeds():
    for name, n_seeds in (("emergence-arms.yml", 5), ("emergence-arms-gpu.yml", 8)):
        sweep, runs = load_sweep(ROOT / "configs" / name)
        arms: dict[str, set[int]] = {}
        for r in runs:
            arms.setdefault(r.arm, set()).add(r.seed)
            assert r.config.training.seed == r.seed  # the pairing key is the training seed
        assert set(arms) == {"F", "H", "H0.5", "H3", "B"}
        assert all(seeds == set(range(n_seeds)) for seeds in arms.values()), arms
        # the arms differ in the latent only: every other corpus field is shared
        dumps = [r.config.corpora["flat"].model_dump() for r in runs]
        for d in dumps:
            for key in ("latent", "exponent_mean"):
                d.pop(key, None)
        assert all(d == dumps[0] for d in dumps)


def test_the_arms_dry_run_keeps_whole_pairs_at_toy_size(tmp_path):
    mod = _driver()
    src = ROOT / "configs" / "emergence-arms-gpu.yml"
    assert mod.is_arms(src) and not mod.is_arms(ROOT / "configs" / "emergence-gpu.yml")
    _, runs = load_sweep(mod.dry_sweep(src, tmp_path / "dry.yml"))
    assert sorted((r.arm, r.seed) for r in runs) == [("F", 0), ("F", 1), ("H", 0), ("H", 1)]
    for r in runs:
        assert r.config.training.max_tokens == mod.DRY["training.max_tokens"]
        assert r.config.training.device == "cpu"
