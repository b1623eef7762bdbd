"""Command-line conventions: python -m, --version, choices checked first, exit statuses."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from hierlab import __version__
from hierlab.cli import app


def test_python_m_hierlab_and_version():
    out = subprocess.run([sys.executable, "-m", "hierlab", "--version"], capture_output=True,
                         text=True, check=True, timeout=120)
    assert out.stdout.strip() == f"hierlab {__version__}"
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"hierlab {__version__}"


def test_a_bad_choice_fails_before_any_work(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["corpus", "--engine", "spark", "--out", str(out)])
    assert res.exit_code == 2 and "--engine" in res.output and "spark" in res.output
    assert not out.exists()


@pytest.mark.parametrize("args", [
    ["probe", "--variant", "best"],
    ["probe", "--probes", "induction,nope"],
    ["run", "--stages", "corpus,paint"],
    ["train", "--device", "gpu"],
    ["probe", "--device", "cuda:x"],
    ["run", "--device", "tpu"],
    ["corpus", "--no-such-option"],
])
def test_usage_errors_exit_2_and_name_the_option(tmp_path, args):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert args[1] in res.output
    assert "training.device" not in res.output and "probes.device" not in res.output
    assert not out.exists()


def test_cuda_without_a_gpu_is_an_error_about_the_option(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = CliRunner().invoke(app, ["train", "--device", "cuda", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "--device" in res.output and "CUDA" in res.output
    assert "training.device" not in res.output


def test_runtime_and_config_errors_exit_1(tmp_path):
    res = CliRunner().invoke(app, ["config", str(tmp_path / "missing.yml")])
    assert res.exit_code == 1 and "no such config file" in res.output
    res = CliRunner().invoke(app, ["figures", str(tmp_path / "missing")])
    assert res.exit_code == 1


def test_the_cli_checks_the_contract_names():
    """--stages and --probes accept exactly the contract's names (hierlab.contracts)."""
    from hierlab.contracts import PROBES, STAGES

    for opt, names in (("--stages", STAGES), ("--probes", PROBES)):
        cmd = "run" if opt == "--stages" else "probe"
        res = CliRunner().invoke(app, [cmd, "quickstart", opt, "bogus"])
        assert res.exit_code == 2 and all(n in res.output for n in names), res.output
