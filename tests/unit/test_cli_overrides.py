"""``--set KEY=VALUE`` on every command that reads a config, and help texts that list the
registries: the sweep's dotted keys and validation, one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from hierlab.cli import app
from hierlab.errors import ConfigError
from hierlab.overrides import parse_assignments
from tiny import write_tiny_config


def test_values_parse_as_yaml() -> None:
    got = parse_assignments(["training.lr=1e-3", "training.compile=true", "a.b=[0, 60, 97]",
                             "name=x y", "corpora.ngram=null", "training.lr=2e-3"])
    assert got == {"training.lr": 2e-3, "training.compile": True, "a.b": [0, 60, 97],
                   "name": "x y", "corpora.ngram": None}
    for bad in ("training.lr", "=3", "training lr=3"):
        with pytest.raises(ConfigError, match="--set .*expected KEY=VALUE"):
            parse_assignments([bad])
    with pytest.raises(ConfigError, match=r"--set a\.b: '\[1,' is not a YAML value"):
        parse_assignments(["a.b=[1,"])


def test_config_shows_the_overridden_config(tmp_path: Path) -> None:
    cfg = write_tiny_config(tmp_path / "c.yml")
    res = CliRunner().invoke(app, ["config", str(cfg), "--set", "training.lr=1e-3",
                                   "--set", "training.checkpoints={schedule: list, steps: [0]}",
                                   "--set", "corpora.ngram=null", "--set", "model.num_layers=3"])
    assert res.exit_code == 0, res.output
    out = yaml.safe_load(res.stdout)
    assert out["training"]["lr"] == 1e-3 and out["model"]["num_layers"] == 3
    assert out["training"]["checkpoints"]["steps"] == [0]
    assert list(out["corpora"]) == ["pcfg"]


@pytest.mark.parametrize(("item", "expected"), [
    ("training.lrr=1", "training.lrr: unknown field (the fields of 'training': seed, "),
    ("corpora.pcfg.lexicon.subject=3", "unknown field (the fields of 'corpora.pcfg.pcfg."
                                       "lexicon': subjects, verbs, objects, connectors)"),
    ("training.lr=-1", "training.lr: Input should be greater than or equal to 0"),
    ("training.precision=fp8", "training.precision: Input should be 'fp32', 'bf16' or 'fp16'"),
    ("training.lr.x=1", "'training.lr.x': training.lr is not a section"),
    ("training.lr", "--set 'training.lr': expected KEY=VALUE"),
])
@pytest.mark.parametrize("cmd", ["corpus", "train", "probe", "run", "config"])
def test_a_bad_key_or_value_is_one_line_naming_it(tmp_path: Path, cmd: str, item: str,
                                                  expected: str) -> None:
    out = tmp_path / "run"
    args = [cmd, "quickstart", "--set", item] + (["--out", str(out)] if cmd != "config" else [])
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1, res.output
    line = res.output.strip()
    assert line.startswith("error: ") and "\n" not in line and expected in line, line
    assert "Traceback" not in res.output and not out.exists()


@pytest.mark.parametrize(("cmd", "target"), [
    ("corpus", "hierlab.corpus.generate.generate_corpora"),
    ("train", "hierlab.train.loop.train_corpora"),
    ("probe", "hierlab.probes.runner.run_probes"),
    ("run", "hierlab.pipeline.run"),
])
def test_every_command_passes_the_overridden_config_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cmd: str, target: str
) -> None:
    import importlib

    seen: list[Any] = []
    module, name = target.rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(module), name,
                        lambda *a, **kw: seen.append(a) or {})
    cfg = write_tiny_config(tmp_path / "c.yml")
    res = CliRunner().invoke(app, [cmd, str(cfg), "--out", str(tmp_path / "r"),
                                   "--set", "training.lr=0.0123", "--set", "model.num_heads=4",
                                   "--set", "corpora.pcfg.seed=7",
                                   "--set", "probes.induction.samples=5"])
    assert res.exit_code == 0, res.output
    (args,) = seen
    section = {"corpus": lambda c: c["pcfg"].seed == 7,
               "train": lambda c: c.lr == 0.0123,
               "probe": lambda c: c.induction.samples == 5,
               "run": lambda c: c.model.num_heads == 4 and c.training.lr == 0.0123}[cmd]
    assert section(args[1] if cmd == "train" else args[0])


def _sweep(tmp_path: Path, **extra: Any) -> Path:
    base = write_tiny_config(tmp_path / "base.yml")
    path = tmp_path / "sweep.yml"
    path.write_text(yaml.safe_dump({"name": "s", "base": str(base), **extra}))
    return path


def test_sweep_set_overrides_every_run_last(tmp_path: Path) -> None:
    from hierlab.sweep import load_sweep

    path = _sweep(tmp_path, set={"training.lr": 0.01}, grid={"model.num_heads": [1, 2]},
                  runs=[{"name": "r", "set": {"training.lr": 0.02}}])
    _, runs = load_sweep(path, {"training.lr": 0.005, "training.max_tokens": 4096})
    assert [r.name for r in runs] == ["num_heads=1", "num_heads=2", "r"]
    assert all(r.config.training.lr == 0.005 for r in runs)
    assert all(r.config.training.max_tokens == 4096 for r in runs)
    with pytest.raises(ConfigError, match=r"--set model\.num_heads: the sweep's grid varies"):
        load_sweep(path, {"model.num_heads": 4})


def test_sweep_command_takes_set(tmp_path: Path) -> None:
    path = _sweep(tmp_path, runs=[{"name": "r"}])
    res = CliRunner().invoke(app, ["sweep", str(path), "--out", str(tmp_path / "o"),
                                   "--set", "training.lrr=1"])
    assert res.exit_code == 1 and "run 'r'" in res.output and "training.lrr: unknown field" \
        in res.output, res.output
    assert not (tmp_path / "o").exists()


# ----- help lists the registries ---------------------------------------------------------------
def test_probe_help_lists_every_registered_probe_and_variant() -> None:
    from hierlab.config import preset_names
    from hierlab.probes.registry import probe_names, registered

    res = CliRunner().invoke(app, ["probe", "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "mechanism" in probe_names()
    for name in [*probe_names(), *{v for _, v in registered()}, *preset_names()]:
        assert name in res.output, name
    assert "{" not in res.output  # every placeholder filled


@pytest.mark.parametrize("cmd", ["corpus", "train", "run", "config"])
def test_config_help_lists_the_presets(cmd: str) -> None:
    from hierlab.config import preset_names

    res = CliRunner().invoke(app, [cmd, "--help"], terminal_width=200)
    assert res.exit_code == 0 and all(p in res.output for p in preset_names()), res.output
    assert "{presets}" not in res.output
