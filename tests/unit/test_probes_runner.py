from __future__ import annotations

import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow.parquet as pq
import pytest

from hierlab.errors import DataError
from hierlab.probes import checkpoints as ckmod
from hierlab.probes import runner as rmod
from hierlab.probes.runner import run_probes
from probes_helpers import make_run, tiny_model, tiny_probes_config


class SimulatedKill(BaseException):
    """Stands for SIGKILL/KeyboardInterrupt: not an Exception, so nothing catches it."""


COLUMNS = ["source", "model", "step", "tokens_seen", "probe", "variant", "metric", "layer",
           "head", "k", "value", "n_samples", "seed"]


def test_run_all_probes_resume_and_corrupt(tmp_path: Path, monkeypatch, caplog) -> None:
    run = make_run(tmp_path)
    cfg = tiny_probes_config()
    calls: list[tuple] = []
    real = rmod.probe_checkpoint
    kill = True

    def killer(ctx, probe, variant):
        nonlocal kill
        calls.append((ctx.ckpt.step, probe, variant))
        if kill and len(calls) == 5:
            raise SimulatedKill  # simulated kill mid-run
        return real(ctx, probe, variant)

    monkeypatch.setattr(rmod, "probe_checkpoint", killer)
    with pytest.raises(SimulatedKill):
        run_probes(cfg, run)
    assert not (run / "metrics" / "induction.parquet").exists()
    done_before = len(list((run / "metrics" / ".parts").rglob("*.parquet")))
    assert done_before == 4

    calls.clear()
    kill = False
    with caplog.at_level(logging.WARNING):
        paths = run_probes(cfg, run)
    assert "pcfg@step-00000030" in caplog.text  # corrupt checkpoint logged by name, skipped
    assert len(calls) == 2 * 10 - 4  # finished units (5 probes x 2 variants) not recomputed
    assert set(paths) == {"induction", "fv", "hydra", "structure", "mechanism"}
    for probe, path in paths.items():
        table = pq.read_table(path)
        assert table.column_names == COLUMNS
        df = table.to_pandas()
        assert set(df["step"]) == {10, 20} and set(df["probe"]) == {probe}
        # the mechanism probe has no reference variant (the study has no such instrument)
        want = {"standard"} if probe == "mechanism" else {"reference", "standard"}
        assert set(df["variant"]) == want
        assert (df["source"] == "run").all() and (df["model"] == "pcfg").all()
        assert set(df["tokens_seen"]) == {10_000, 20_000}
    ind = pd.read_parquet(paths["induction"])
    assert {"score", "score_max_then_mean", "head_score", "prefix_matching",
            "prefix_matching_max", "duplicate_token", "copying", "icl_score"} <= set(ind.metric)
    hyd = pd.read_parquet(paths["hydra"])
    assert {"drop", "direct_effect", "total_effect", "compensation", "compensation_ratio",
            "compensation_attn", "compensation_mlp", "compensation_norm",
            "ablation:resample", "positions:final"} == set(hyd.metric)
    fvt = pd.read_parquet(paths["fv"])
    assert "fv_improvement" in set(fvt.metric) and "cie:copy_object" in set(fvt.metric)
    st = pd.read_parquet(paths["structure"])
    assert set(st.metric) == {"subject_to_verb", "verb_to_object", "connector_to_subject"}

    # third run: everything is done, nothing recomputed; the table is identical
    calls.clear()
    before = pd.read_parquet(paths["hydra"])
    run_probes(cfg, run)
    assert calls == []
    pd.testing.assert_frame_equal(before, pd.read_parquet(paths["hydra"]))

    # seeded: a fresh copy gives the same numbers
    other = tmp_path / "other"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("metrics"))
    monkeypatch.setattr(rmod, "probe_checkpoint", real)
    again = run_probes(cfg, other, probes="induction,structure", variant="both")
    pd.testing.assert_frame_equal(pd.read_parquet(again["induction"]),
                                  pd.read_parquet(paths["induction"]))


def test_world_size_split(tmp_path: Path, monkeypatch) -> None:
    run = make_run(tmp_path, steps=(1, 2, 3), corrupt=None)
    cfg = tiny_probes_config()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert run_probes(cfg, run, probes="structure", variant="reference") == {}
    parts = list((run / "metrics" / ".parts" / "structure").rglob("*.parquet"))
    assert [p.name[:12] for p in parts] == ["000000000002"]
    monkeypatch.setenv("RANK", "0")
    out = run_probes(cfg, run, probes="structure", variant="reference")
    assert set(pd.read_parquet(out["structure"]).step) == {1, 2, 3}


def _fake_hub(tmp_path: Path, monkeypatch) -> dict:
    model_dir = tmp_path / "olmo_snapshot"
    tiny_model("olmo").save_pretrained(model_dir)
    seen: dict = {"downloads": [], "cache_dirs": []}
    branches = ["main", "step3000-tokens12B", "step1000-tokens4B", "step2000-tokens8B",
                "step4000-tokens16B"]
    monkeypatch.setattr(ckmod, "list_repo_refs", lambda repo: SimpleNamespace(
        branches=[SimpleNamespace(name=b) for b in branches]))

    def fake_download(repo_id, revision, cache_dir=None, allow_patterns=None):
        seen["downloads"].append((repo_id, revision))
        if cache_dir is None:
            return str(model_dir)
        dest = Path(cache_dir) / revision
        shutil.copytree(model_dir, dest)
        seen["cache_dirs"].append(Path(cache_dir))
        return str(dest)

    monkeypatch.setattr(ckmod, "snapshot_download", fake_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return seen


def test_hub_source_offline(tmp_path: Path, monkeypatch) -> None:
    seen = _fake_hub(tmp_path, monkeypatch)
    cks = ckmod.discover_checkpoints("hub:allenai/OLMo-1B-hf@max=3", tmp_path)
    assert [c.step for c in cks] == [1000, 2000, 4000]  # floor(i(n-1)/(m-1)) of 4 revisions
    assert cks[0].tokens_seen == 4 * 10**9 and cks[0].revision == "step1000-tokens4B"
    assert len(ckmod.discover_checkpoints("hub:x/y", tmp_path)) == 4
    explicit = ckmod.discover_checkpoints("hub:x/y@step2000-tokens8B", tmp_path)
    assert [c.step for c in explicit] == [2000]

    cfg = tiny_probes_config(hub={"delete_after": True, "cache_dir": str(tmp_path / "dl")})
    out = tmp_path / "out"
    paths = run_probes(cfg, out, checkpoints="hub:allenai/OLMo-1B-hf@max=2",
                       probes="hydra,structure,induction", variant="reference")
    assert [d[1] for d in seen["downloads"]] == ["step1000-tokens4B", "step4000-tokens16B"]
    assert all(not d.exists() for d in seen["cache_dirs"])  # downloaded -> probed -> deleted
    df = pd.read_parquet(paths["hydra"])
    assert set(df.source) == {"hub:allenai/OLMo-1B-hf"} and set(df.step) == {1000, 4000}
    assert set(df.model) == {"allenai/OLMo-1B-hf"}
    assert len(pd.read_parquet(paths["structure"])) == 0  # no corpus: skipped

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError):
        ckmod.discover_checkpoints("hub:x/y", tmp_path)


def test_local_folder_names(tmp_path: Path) -> None:
    assert ckmod.parse_step("checkpoint-386") == (386, None)
    assert ckmod.parse_step("step1000-tokens4B") == (1000, 4 * 10**9)
    assert ckmod.parse_step("step-00000123") == (123, None)
    assert ckmod.parse_step("final") == (None, None)
    assert ckmod.evenly_spaced(10, 4) == [0, 3, 6, 9]
    folder = tmp_path / "hf_run"
    for name in ("checkpoint-20", "checkpoint-5"):
        tiny_model().save_pretrained(folder / name)
    (folder / "logs").mkdir()
    cks = ckmod.discover_checkpoints(folder, tmp_path)
    assert [c.step for c in cks] == [5, 20]
    assert cks[0].source == f"local:{folder}" and cks[0].model == "hf_run"
    paths = run_probes(tiny_probes_config(), tmp_path / "o", checkpoints=str(folder),
                       probes="fv", variant="reference")
    assert set(pd.read_parquet(paths["fv"]).step) == {5, 20}


def test_cli_probe(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hierlab.cli import app
    from tiny import write_tiny_config

    run = make_run(tmp_path, steps=(7,), corrupt=None)
    path = write_tiny_config(tmp_path / "c.yml", name="t",
                             probes=tiny_probes_config().model_dump(mode="json"))
    res = CliRunner().invoke(app, ["probe", str(path), "--out", str(run), "--probes",
                                   "structure", "--variant", "standard", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert (run / "metrics" / "structure.parquet").exists()
    bad = CliRunner().invoke(app, ["probe", str(path), "--out", str(run), "--probes", "nope"])
    assert bad.exit_code == 2 and "unknown probe" in bad.output
