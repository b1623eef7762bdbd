"""The module graph runs one way: stages take their own config section, never the
experiment config; benchmarks use public names only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("corpus", "train", "probes", "figures")


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) of every import in ``path``, TYPE_CHECKING ones
    and those inside functions included."""
    pkg = ".".join(path.relative_to(ROOT / "src").with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = pkg.rsplit(".", node.level - 1)[0] if node.level else ""
            mod = ".".join(p for p in (base, node.module or "") if p)
            out.append((mod, [a.name for a in node.names]))
    return out


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_imports_the_experiment_config(stage: str) -> None:
    bad = []
    for path in sorted((ROOT / "src" / "hierlab" / stage).rglob("*.py")):
        for mod, names in _imports(path):
            if mod == "hierlab.config" or (mod == "hierlab" and "config" in names):
                bad.append(str(path.relative_to(ROOT)))
    assert not bad, f"import hierlab.config (take the section instead): {bad}"


def test_benchmarks_import_only_public_names() -> None:
    # the experiment drivers too: scripts outside the package use its public API only, so
    # renaming a private name inside it never breaks them
    bad = []
    paths = sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "experiments").glob("*.py"))
    assert any(p.parent.name == "experiments" for p in paths)
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hierlab"):
                parts = node.module.split(".") + [a.name for a in node.names]
                bad += [f"{path.parent.name}/{path.name}: {node.module}.{p}" for p in parts
                        if p.startswith("_") and p != "__version__"]
    assert not bad, bad
