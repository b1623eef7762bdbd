"""Config loading: presets, and one-line errors naming the field and what is allowed."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from hierlab.cli import app
from hierlab.config import config_from_dict, load_config, preset_names
from hierlab.corpus.config import NgramConfig, PcfgConfig
from hierlab.errors import ConfigError


def test_presets_load_and_defaults_are_the_reference():
    assert {"quickstart", "paper"} <= set(preset_names())
    qs = load_config(None)
    assert qs.name == "quickstart" and set(qs.corpora) == {"pcfg", "ngram", "copy"}
    paper = load_config("paper")
    assert paper.corpora["pcfg"] == PcfgConfig(**paper.corpora["pcfg"].model_dump())
    ref = PcfgConfig()
    assert (ref.lexicon.subjects, ref.eos_id, ref.vocab_size) == (300, 1000, 1003)
    assert ref.sentences_per_document == 16 and ref.repetitions == 10
    assert NgramConfig().tokenizer_size == 1002 and NgramConfig().eos_id == 999


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"corpora": {"p": {"kind": "pcfg", "zipf_exponent": -1}}},
         "corpora.p.pcfg.zipf_exponent: Input should be greater than or equal to 0"),
        ({"corpora": {"p": {"kind": "pcfg", "train_order": "random"}}},
         "corpora.p.pcfg.train_order: Input should be 'shuffled' or 'contiguous'"),
        ({"corpora": {"p": {"kind": "pcfg", "sectons": 3}}},
         "corpora.p.pcfg.sectons: unknown field"),
        ({"corpora": {"p": {"kind": "grammar"}}},
         "corpora.p: 'kind' must be 'pcfg', 'ngram' or 'copy'"),
        ({"corpora": {"p": {"zipf_exponent": 1}}}, "corpora.p: missing 'kind'"),
        ({"corpora": {"p": {"kind": "pcfg", "extra_clause_probs": [0.5, 0.6]}}},
         "extra_clause_probs must be a non-empty list"),
        ({"corpora": {"n": {"kind": "ngram", "min_length": 5, "max_length": 2}}},
         "max_length (2) must be >= min_length (5)"),
        ({"corpora": {"n": {"kind": "ngram", "vocab_size": "big"}}},
         "corpora.n.ngram.vocab_size: Input should be a valid integer"),
        ({"nmae": "x"}, "nmae: unknown field"),
    ],
)
def test_config_errors_name_the_field(data, expected):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, "c.yml")
    msg = str(info.value)
    assert expected in msg and msg.startswith("c.yml: ") and "\n" not in msg


def test_cli_prints_one_line_error_without_traceback(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump({"corpora": {"p": {"kind": "pcfg", "svo_probability": 2}}}))
    res = CliRunner().invoke(app, ["corpus", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1  # a config error, not a usage error
    assert "svo_probability" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()
    res = CliRunner().invoke(app, ["config", str(tmp_path / "missing.yml")])
    assert res.exit_code == 1 and "no such config file or preset" in res.output
    (tmp_path / "broken.yml").write_text("corpora: [unclosed")
    res = CliRunner().invoke(app, ["config", str(tmp_path / "broken.yml")])
    assert res.exit_code == 1 and "not valid YAML" in res.output


def test_every_command_has_help():
    runner = CliRunner()
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("corpus", "corpus-stats", "config"):
        out = runner.invoke(app, [cmd, "--help"])
        assert out.exit_code == 0 and "Usage" in out.output


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"training": {"batch_size": 8, "micro_batch_size": 16}},
         "training.micro_batch_size (16) must be <= training.batch_size (8)"),
        ({"model": {"context_length": 100}, "probes": {"hydra": {"standard_length": None}}},
         "probes.induction.n (64) is repeated twice: 128 tokens, longer than "
         "model.context_length (100); set it <= 50"),
        ({"model": {"context_length": 128}, "probes": {"induction": {"indist_n": 65}}},
         "probes.induction.indist_n (65) is repeated twice"),
        ({"model": {"context_length": 128}, "probes": {"induction": {"icl_length": 129}}},
         "probes.induction.icl_length (129) is longer than model.context_length (128); set "
         "it <= 128 or null"),
        ({"model": {"context_length": 128}},
         "probes.hydra.standard_length (256) is longer than model.context_length (128)"),
        ({"model": {"context_length": 128}, "probes": {"hydra": {"length": 512}}},
         "probes.hydra.length (512) is longer"),
    ],
)
def test_cross_field_errors_at_load_time(data, expected):
    """Regression: these were accepted by `hierlab config` and failed only at first use (or,
    for probe lengths, ran prompts longer than the model was trained on)."""
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        config_from_dict(data)


def test_probe_lengths_are_checked_only_for_probes_that_run():
    """Regression: `probes.probes: [induction]` was refused because the
    hydra section's standard_length (256) exceeds a 128-token context."""
    cfg = config_from_dict({"model": {"context_length": 128},
                            "probes": {"probes": ["induction"]}})
    assert cfg.probes.hydra.standard_length == 256
    with pytest.raises(ConfigError, match=r"probes.induction.n \(64\)"):  # runs: checked
        config_from_dict({"model": {"context_length": 100}, "probes": {"probes": ["induction"]}})
    assert config_from_dict({"model": {"context_length": 100},
                             "probes": {"probes": ["hydra", "fv"],
                                        "hydra": {"standard_length": 100}}})


def test_probe_lengths_are_not_checked_against_a_foreign_checkpoint_suite():
    """With probes.checkpoints set (a hub suite, a local folder) the model's context is not
    this config's model.context_length, so the lengths are checked at first use instead."""
    cfg = config_from_dict({"model": {"context_length": 64},
                            "probes": {"checkpoints": "allenai/OLMo-1B-hf"}})
    assert cfg.probes.hydra.standard_length == 256
    ok = config_from_dict({"model": {"context_length": 128},
                           "probes": {"hydra": {"standard_length": 128}}})
    assert ok.probes.induction.n * 2 == 128  # exactly the context is allowed


def test_top_level_configs_are_sweeps_or_bases_not_preset_copies():
    """Presets have one home (the package); configs/ must not grow a hand-kept twin, and
    every file in it must load (as a sweep, or as the experiment base a sweep names)."""
    from pathlib import Path

    from hierlab.sweep import load_sweep

    root = Path(__file__).resolve().parents[2] / "configs"
    files = sorted(root.glob("*.yml"))
    assert files
    assert not {p.stem for p in files} & set(preset_names())
    for path in files:
        data = yaml.safe_load(path.read_text())
        if "base" in data:
            _, runs = load_sweep(path)
            assert runs, path
        else:
            load_config(path)
