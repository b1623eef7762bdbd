"""The declared dependency floors are what the code needs and what is installed."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PYPROJECT = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
CORE = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
EXTRAS = {name: [Requirement(r) for r in reqs]
          for name, reqs in PYPROJECT["project"]["optional-dependencies"].items()}


@pytest.mark.parametrize("req", CORE + EXTRAS["dev"] + EXTRAS["interop"], ids=str)
def test_installed_versions_satisfy_the_declared_floors(req: Requirement) -> None:
    try:
        installed = version(req.name)
    except PackageNotFoundError:
        pytest.fail(f"{req.name} is declared but not installed")
    assert req.specifier.contains(installed, prereleases=True), f"{req.name} {installed}"


def test_the_floors_match_the_apis_used() -> None:
    floors = {r.name: r for r in CORE}
    # LlamaConfig(rope_parameters=...) and from_pretrained(dtype=...) are transformers 5
    assert not floors["transformers"].specifier.contains("4.57.6")
    assert floors["transformers"].specifier.contains("5.0.0")
    assert "accelerate" not in floors  # never imported
    assert all(reqs for reqs in EXTRAS.values())  # no empty extra
