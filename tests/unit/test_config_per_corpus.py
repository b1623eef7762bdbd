"""``per_corpus``: one corpus's own model, training and probes settings, merged over the
experiment's: validation at load time, ``for_corpus``, the ``config``/``--set`` commands,
the train and probe stages' use of them, and the probe tables kept per model's config."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from hierlab.cli import app
from hierlab.config import config_from_dict, load_config
from hierlab.errors import ConfigError
from tiny import TINY, tiny_config, tiny_experiment, write_tiny_config

#: the n-gram corpus's own model: a shorter context, so shorter induction prompts
SHORT = {"model": {"context_length": 32},
         "training": {"batch_size": 16, "micro_batch_size": 16, "max_tokens": 4096,
                      "checkpoints": {"count": 5}},
         "probes": {"induction": {"n": 8, "k_max": 3}}}


def _error(**overrides: Any) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(tiny_config(**overrides), "c.yml")
    msg = str(info.value)
    assert msg.startswith("c.yml: ") and "\n" not in msg
    return msg


# ----- validation at load time -----------------------------------------------------------------
def test_a_key_that_is_not_a_corpus_is_refused() -> None:
    msg = _error(per_corpus={"copy": {"model": {"context_length": 32}}})
    assert "per_corpus.copy: not a corpus of the config (corpora: pcfg, ngram)" in msg


@pytest.mark.parametrize(("over", "expected"), [
    ({"training": {"lr": -1}},
     "per_corpus.ngram.training.lr: Input should be greater than or equal to 0 (got -1)"),
    ({"training": {"checkpoints": {"cnt": 2}}},
     "per_corpus.ngram.training.checkpoints.cnt: unknown field (the fields of "
     "'per_corpus.ngram.training.checkpoints': schedule, count, every, steps)"),
    ({"model": {"num_layers": 0}}, "per_corpus.ngram.model.num_layers: Input should be"),
    ({"probes": {"induction": {"icl_early_band": [44, 46]}}},
     "per_corpus.ngram.probes.induction: induction.icl_early_band [44, 46] must end before"),
    ({"modle": {}}, "per_corpus.ngram.modle: unknown field (the fields of 'per_corpus.ngram': "
                    "model, training, probes)"),
    ({"training": 5}, "per_corpus.ngram.training: Input should be a valid dictionary"),
    ({"probes": {"device": "cuda"}},
     "per_corpus.ngram.probes.device: applies to the whole run; set it in the experiment's"),
    ({"probes": {"probes": ["induction"]}}, "per_corpus.ngram.probes.probes: applies to"),
])
def test_a_bad_merged_field_is_located_under_its_override(over: dict, expected: str) -> None:
    assert expected in _error(per_corpus={"ngram": over})


@pytest.mark.parametrize(("over", "expected"), [
    # induction.n (16) fits the experiment's context (64), not the corpus's own (24)
    ({"model": {"context_length": 24}},
     "per_corpus.ngram: probes.induction.n (16) is repeated twice: 32 tokens, longer than "
     "model.context_length (24); set it <= 12"),
    ({"probes": {"induction": {"n": 40}}},
     "per_corpus.ngram: probes.induction.n (40) is repeated twice"),
    ({"training": {"micro_batch_size": 16}},
     "per_corpus.ngram: training.micro_batch_size (16) must be <= training.batch_size (8)"),
])
def test_cross_field_checks_run_with_each_corpus_s_own_settings(over: dict,
                                                                 expected: str) -> None:
    assert expected in _error(per_corpus={"ngram": over})


def test_the_shared_sections_are_checked_while_a_corpus_uses_them() -> None:
    # context 24 is too short for induction.n 16; with every corpus on its own context the
    # shared one is never used, so it is not refused
    both = {"model": {"context_length": 64}}
    assert "probes.induction.n (16)" in _error(model={"context_length": 24},
                                               per_corpus={"ngram": both})
    cfg = config_from_dict(tiny_config(model={"context_length": 24},
                                       per_corpus={"ngram": both, "pcfg": both}))
    assert cfg.for_corpus("pcfg").model.context_length == 64


# ----- for_corpus ------------------------------------------------------------------------------
def test_for_corpus_merges_deeply_and_keeps_only_that_corpus() -> None:
    cfg = tiny_experiment(per_corpus={"ngram": SHORT})
    own = cfg.for_corpus("ngram")
    assert list(own.corpora) == ["ngram"] and own.corpora["ngram"] == cfg.corpora["ngram"]
    assert own.per_corpus == {} and own.name == cfg.name and own.figures == cfg.figures
    assert own.model.context_length == 32 and own.model.hidden_size == 32  # the rest kept
    t = own.training
    assert (t.batch_size, t.micro_batch_size, t.max_tokens, t.lr) == (16, 16, 4096, 0.003)
    assert (t.checkpoints.schedule, t.checkpoints.count) == ("log", 5)  # merged a level down
    ind = own.probes.induction
    assert (ind.n, ind.k_max, ind.samples, ind.id_range) == (8, 3, 2, (0, 28))
    assert own.probes.fv == cfg.probes.fv and own.probes.device == "cpu"
    other = cfg.for_corpus("pcfg")
    assert (other.model, other.training, other.probes) == (cfg.model, cfg.training, cfg.probes)
    assert list(other.corpora) == ["pcfg"]
    with pytest.raises(ConfigError, match=r"'copy' is not a corpus of the config \(corpora: "
                                          r"pcfg, ngram\)"):
        cfg.for_corpus("copy")


def test_a_config_without_per_corpus_dumps_as_before_plus_an_empty_mapping() -> None:
    """Runs recorded before ``per_corpus`` existed load to the same config (a sweep compares
    recorded configs), and the models' hashes do not move."""
    dumped = tiny_experiment().model_dump(mode="json")
    assert dumped["per_corpus"] == {}
    assert config_from_dict({k: v for k, v in dumped.items() if k != "per_corpus"}) \
        .model_dump(mode="json") == dumped


# ----- the config command and --set ------------------------------------------------------------
def test_config_prints_the_per_corpus_settings(tmp_path: Path) -> None:
    cfg = write_tiny_config(tmp_path / "c.yml", per_corpus={"ngram": SHORT})
    res = CliRunner().invoke(app, ["config", str(cfg)])
    assert res.exit_code == 0, res.output
    out = yaml.safe_load(res.stdout)
    assert out["per_corpus"]["ngram"] == SHORT
    assert config_from_dict(out).for_corpus("ngram").model.context_length == 32  # round trip


def test_set_reaches_into_per_corpus(tmp_path: Path) -> None:
    cfg = write_tiny_config(tmp_path / "c.yml", per_corpus={"ngram": SHORT})
    res = CliRunner().invoke(app, ["config", str(cfg), "--set",
                                   "per_corpus.ngram.training.lr=1e-3", "--set",
                                   "per_corpus.pcfg.probes.induction.n=4"])
    assert res.exit_code == 0, res.output
    out = yaml.safe_load(res.stdout)
    assert out["per_corpus"]["ngram"]["training"]["lr"] == 1e-3
    assert out["per_corpus"]["ngram"]["model"] == {"context_length": 32}  # the rest kept
    assert out["per_corpus"]["pcfg"]["probes"] == {"induction": {"n": 4}}
    loaded = load_config(cfg, {"per_corpus.ngram.training.lr": 1e-3})
    assert loaded.for_corpus("ngram").training.lr == 1e-3 and loaded.training.lr == 0.003
    bad = CliRunner().invoke(app, ["config", str(cfg), "--set",
                                   "per_corpus.ngram.training.lr=-1"])
    assert bad.exit_code == 1
    line = bad.output.strip()
    assert "\n" not in line and "with --set: per_corpus.ngram.training.lr: Input should be " \
        "greater than or equal to 0" in line, line


# ----- the stages use each corpus's own settings -----------------------------------------------
def _record(monkeypatch: pytest.MonkeyPatch, target: str) -> list[tuple[tuple, dict]]:
    seen: list[tuple[tuple, dict]] = []
    module, name = target.rsplit(".", 1)

    def fake(*args: Any, **kwargs: Any) -> dict[str, Path]:
        seen.append((args, kwargs))
        return {n: Path("models") / n for n in args[2]} if "train" in target else {}

    monkeypatch.setattr(importlib.import_module(module), name, fake)
    return seen


def test_train_groups_corpora_by_their_own_settings(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _record(monkeypatch, "hierlab.train.loop.train_corpora")
    three = {**TINY["corpora"], "ngram2": TINY["corpora"]["ngram"]}
    cfg = write_tiny_config(tmp_path / "c.yml", corpora=three, per_corpus={"ngram": SHORT})
    res = CliRunner().invoke(app, ["train", str(cfg), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    # the shared settings train pcfg and ngram2 in one call (parallel_corpora applies); the
    # n-gram corpus with its own model trains in a call of its own
    assert [list(a[2]) for a, _ in seen] == [["pcfg", "ngram2"], ["ngram"]]
    (m1, t1, *_), _ = seen[0]
    (m2, t2, *_), _ = seen[1]
    assert (m1.context_length, t1.max_tokens) == (64, 8192)
    assert (m2.context_length, t2.max_tokens, t2.batch_size) == (32, 4096, 16)
    # the command lists the models in the config's order
    assert [ln.split(":")[0] for ln in res.stdout.splitlines()] == ["pcfg", "ngram", "ngram2"]

    seen.clear()
    res = CliRunner().invoke(app, ["train", str(cfg), "--out", str(tmp_path / "r"),
                                   "--corpus", "ngram"])
    assert res.exit_code == 0, res.output
    ((args, _),) = seen
    assert list(args[2]) == ["ngram"] and args[0].context_length == 32


def test_train_refuses_an_unknown_corpus_as_before(tmp_path: Path) -> None:
    cfg = write_tiny_config(tmp_path / "c.yml", per_corpus={"ngram": SHORT})
    res = CliRunner().invoke(app, ["train", str(cfg), "--out", str(tmp_path / "r"),
                                   "--corpus", "copy"])
    assert res.exit_code == 1 and "--corpus: 'copy' is not a corpus of the config" \
        in res.output, res.output


def test_probe_hands_each_model_its_own_probes_section(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _record(monkeypatch, "hierlab.probes.runner.run_probes")
    cfg = write_tiny_config(tmp_path / "c.yml", per_corpus={"ngram": SHORT})
    res = CliRunner().invoke(app, ["probe", str(cfg), "--out", str(tmp_path / "r"),
                                   "--probes", "induction"])
    assert res.exit_code == 0, res.output
    ((args, kwargs),) = seen
    assert args[0].induction.n == 16 and kwargs["probes"] == "induction"
    assert set(kwargs["model_configs"]) == {"ngram"}
    assert kwargs["model_configs"]["ngram"].induction.n == 8

    seen.clear()  # no per-corpus probes settings: the runner is called as before
    plain = write_tiny_config(tmp_path / "p.yml",
                              per_corpus={"ngram": {"training": {"lr": 0.001}}})
    res = CliRunner().invoke(app, ["probe", str(plain), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    ((_, kwargs),) = seen
    assert kwargs["model_configs"] is None


# ----- the probe tables: each model's rows from its own config's parts -------------------------
def test_merge_parts_takes_each_model_s_rows_from_its_own_config(tmp_path: Path) -> None:
    from hierlab.io import atomic_write_parquet
    from hierlab.probes import runner as rmod
    from hierlab.probes.checkpoints import Checkpoint

    cfg = tiny_experiment(per_corpus={"ngram": SHORT})
    base, own = cfg.probes, cfg.for_corpus("ngram").probes
    parts = tmp_path / "metrics" / ".parts"

    def part(model: str, pc: Any, value: float) -> Path:
        ck = Checkpoint("run", model, 4)
        path = rmod._part_path(parts, pc, "induction", "reference", ck)
        row = {"metric": "score", "value": value, "layer": 0, "head": 0, "k": 1}
        atomic_write_parquet(rmod._to_table([row], ck, "induction", "reference"), path)
        return path

    part("pcfg", base, 1.0)
    stale = part("ngram", base, 2.0)  # probed before the n-gram model had its own settings
    fresh = part("ngram", own, 3.0)
    assert stale.parent.name == rmod.probe_hash(base, "induction")
    assert fresh.parent.name == rmod.probe_hash(own, "induction") != stale.parent.name

    def table(**kw: Any) -> dict[str, list[float]]:
        df = pd.read_parquet(rmod.merge_parts(tmp_path / "metrics", base, "induction", **kw))
        return df.groupby("model")["value"].apply(list).to_dict()

    assert table() == {"pcfg": [1.0], "ngram": [2.0]}  # no per-model settings: as before
    assert table(model_configs={"ngram": own}) == {"pcfg": [1.0], "ngram": [3.0]}
    # a model whose own settings equal the shared ones reads the shared parts
    assert table(model_configs={"ngram": own, "pcfg": base}) == {"pcfg": [1.0], "ngram": [3.0]}
