"""benchmarks/gpu_check: harmless without a GPU, and every section's code path runs on CPU.

The GPU numbers themselves need a GPU; CI never has one, so the check must never be needed
for CI to pass: here it only has to say so (and install nothing), and its ``--dry-run``
must run each section at toy sizes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NO_CUDA = "gpu_check: no CUDA device; nothing to measure"


def _no_gpu_env(tmp_path: Path) -> dict[str, str]:
    """PATH without nvidia-smi (this machine has none; the CI machine neither)."""
    env = dict(os.environ, OUT=str(tmp_path / "out"))
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep)
        if not (Path(p) / "nvidia-smi").exists()
    )
    return env


def test_shell_without_gpu_says_so_and_installs_nothing(tmp_path: Path) -> None:
    before = sorted(p.name for p in ROOT.iterdir())
    site = Path("/tmp/gpu_check-site").exists()
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=tmp_path,
                          env=_no_gpu_env(tmp_path), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == NO_CUDA
    assert sorted(p.name for p in ROOT.iterdir()) == before  # no venv, no wheels, no site
    assert Path("/tmp/gpu_check-site").exists() == site


def test_python_without_cuda_says_so(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")],
                          env=_no_gpu_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == NO_CUDA


@pytest.mark.slow
def test_dry_run_runs_every_section_on_cpu(tmp_path: Path) -> None:
    env = _no_gpu_env(tmp_path)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"),
                           "--dry-run"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    cells = [[c.strip() for c in line.strip().strip("|").split("|")]
             for line in table.splitlines() if line.startswith("| ")]
    rows = {(c[0], c[1]): c[2:] for c in cells}
    for what in ("hf_trainer bf16 eager", "hierlab bf16 eager"):  # measured on CPU
        tps, mfu, secs, note = rows[("train", what)]
        assert float(tps.replace(",", "")) > 0, note
        assert mfu == "n/a"  # no peak for a CPU
    assert "skipped in --dry-run" in rows[("train", "hierlab fp16 compile")][3]
    secs, note = rows[("probes", "2-layer Olmo probe suite")][2:4]
    assert float(secs) > 0, note
    assert "induction" in note and "hydra" in note and "fv" in note
    tps, _, _, note = rows[("ddp", "hierlab train, torchrun 2 processes bf16")]
    assert float(tps.replace(",", "")) > 0, note  # 2 CPU processes over gloo
    failed = [c for c in cells if c[-1].startswith(("error", "timeout", "exit", "no result"))]
    assert not failed, table


def test_a_section_past_its_budget_is_killed_and_becomes_a_row(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    a = gpu_check.argparse.Namespace(dry_run=True, steps=2, warmup=1, verbose=False)
    rows = gpu_check.run_section("probes", a, tmp_path, timeout=0.5)
    assert [r["what"] for r in rows] == ["2-layer Olmo probe suite"]
    assert rows[0]["note"].startswith("timeout: killed after")
    assert rows[0]["section"] == "probes" and rows[0]["tps"] is None
