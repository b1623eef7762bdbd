"""A full disk: ENOSPC at each write site -- shard, checkpoint, metrics
table, figure -- is one DiskFullError naming the path; nothing partial is left where a later
stage reads; a re-run after space is freed resumes. Once for real on a small tmpfs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from corpus_helpers import experiment, tiny_ngram
from hierlab.corpus.generate import generate_corpora
from hierlab.corpus.shards import SplitReader
from hierlab.errors import DiskFullError
from hierlab.faults import ENV
from hierlab.io import atomic_write_bytes
from train_helpers import (  # noqa: F401 - _one_thread is an autouse fixture
    TINY,
    _one_thread,
    make_corpus,
    read_csv,
    snapshot,
    tcfg,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _temps(root: Path) -> list[Path]:
    """Temporary files/folders an atomic writer leaves when it fails to clean up."""
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp-")]


def _shas(run: Path, name: str) -> dict[str, list[str]]:
    return {s: [r["sha256"] for r in json.loads(
        (run / "corpus" / name / s / "manifest.json").read_text())["shards"]]
        for s in ("train", "test")}


def test_enospc_while_a_shard_is_written(tmp_path: Path, monkeypatch) -> None:
    cfg = experiment(ngram=tiny_ngram())
    generate_corpora(cfg.corpora, tmp_path / "ref")
    monkeypatch.setenv(ENV, "enospc@*/train/shard-00001.arrow")
    with pytest.raises(DiskFullError) as err:
        generate_corpora(cfg.corpora, tmp_path / "run")
    split = tmp_path / "run" / "corpus" / "ngram" / "train"
    msg = str(err.value)
    assert str(split / "shard-00001.arrow") in msg and "bytes" in msg and "\n" not in msg
    assert not (split / "shard-00001.arrow").exists() and not (split / "manifest.json").exists()
    assert not _temps(tmp_path / "run")
    monkeypatch.delenv(ENV)
    generate_corpora(cfg.corpora, tmp_path / "run")  # space freed: resumes
    assert _shas(tmp_path / "run", "ngram") == _shas(tmp_path / "ref", "ngram")
    SplitReader(split).verify()


def test_enospc_while_a_checkpoint_is_written(tmp_path: Path, monkeypatch) -> None:
    from hierlab.train.loop import train_model

    corpus = make_corpus(tmp_path)
    ref = train_model(TINY, tcfg(), corpus, tmp_path / "ref")
    monkeypatch.setenv(ENV, "enospc@*/checkpoints/step-00000012")
    out = tmp_path / "run"
    with pytest.raises(DiskFullError) as err:
        train_model(TINY, tcfg(), corpus, out)
    assert str(out / "checkpoints" / "step-00000012") in str(err.value)
    assert "bytes" in str(err.value)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000005"]
    monkeypatch.delenv(ENV)
    train_model(TINY, tcfg(), corpus, out)  # resumes from step 5
    assert read_csv(ref / "eval.csv") == read_csv(out / "eval.csv")
    a, b = snapshot(ref / "checkpoints"), snapshot(out / "checkpoints")
    assert a["step-00000020/model.safetensors"] == b["step-00000020/model.safetensors"]


def test_enospc_while_a_loss_row_is_appended_names_the_csv(tmp_path: Path, monkeypatch) -> None:
    from hierlab.train import logs

    def full(self, values):  # noqa: ANN001, ANN202
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(logs.csv, "writer", lambda fh, **kw: type("W", (), {"writerow": full})())
    with pytest.raises(DiskFullError, match="loss.csv"):
        from hierlab.train.loop import train_model

        train_model(TINY, tcfg(), make_corpus(tmp_path), tmp_path / "run")


@pytest.mark.parametrize("target", ["*/.parts/hydra/*", "*/metrics/structure.parquet"])
def test_enospc_while_a_metrics_table_is_written(tmp_path: Path, monkeypatch, target) -> None:
    import pandas as pd

    from hierlab.probes.runner import run_probes
    from probes_helpers import make_run, tiny_probes_config

    run = make_run(tmp_path, corrupt=None)
    cfg = tiny_probes_config()
    kw = dict(probes="hydra,structure", variant="reference")
    monkeypatch.setenv(ENV, f"enospc@{target}")
    with pytest.raises(DiskFullError) as err:
        run_probes(cfg, run, **kw)
    assert "no space left" in str(err.value)
    assert not _temps(run / "metrics")
    assert not (run / "metrics" / "structure.parquet").exists()
    monkeypatch.delenv(ENV)
    paths = run_probes(cfg, run, **kw)
    assert set(pd.read_parquet(paths["hydra"]).step) == {10, 20}


def test_enospc_while_a_figure_is_written(synthetic_run_dir: Path, monkeypatch) -> None:
    from hierlab.figures import make_figures

    monkeypatch.setenv(ENV, "enospc@fig2_loss.png")
    with pytest.raises(DiskFullError, match="fig2_loss.png"):
        make_figures(synthetic_run_dir)
    figs = synthetic_run_dir / "figures"
    assert not (figs / "fig2_loss.png").exists() and not _temps(figs)
    monkeypatch.delenv(ENV)
    assert figs / "fig2_loss.png" in make_figures(synthetic_run_dir)


def test_cli_prints_one_line_naming_the_path(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text(json.dumps({"name": "t", "corpora": {"ngram": tiny_ngram()}}))
    env = {**os.environ, ENV: "enospc@*/test/shard-00000.arrow"}
    r = subprocess.run([sys.executable, "-m", "hierlab", "corpus", str(cfg), "--out",
                        str(tmp_path / "run")], capture_output=True, text=True, env=env)
    assert r.returncode == 1
    lines = [ln[ln.index("error:"):] for ln in re.split(r"[\r\n]", r.stderr) if "error:" in ln]
    assert len(lines) == 1 and "shard-00000.arrow: no space left on device" in lines[0]
    assert "Traceback" not in r.stderr


# ----- for real: a 192 KiB tmpfs ------------------------------------------------------------
@pytest.fixture
def small_fs(tmp_path: Path):  # noqa: ANN201
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("a real full disk needs root to mount a small tmpfs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_real_full_disk_then_freed_space_resumes(tmp_path: Path, small_fs: Path) -> None:
    cfg = experiment(ngram=tiny_ngram(train_sentences=12_000))  # ~450 KB: over 192 KiB
    generate_corpora(cfg.corpora, tmp_path / "ref")
    out = small_fs / "run"
    with pytest.raises(DiskFullError) as err:
        generate_corpora(cfg.corpora, out)
    assert "no space left on device" in str(err.value) and str(out) in str(err.value)
    for split in ("train", "test"):  # a manifest lists only complete shards
        man = out / "corpus" / "ngram" / split / "manifest.json"
        if man.exists():
            SplitReader(man.parent).verify()
    assert not _temps(out)
    # free space: the same filesystem grows (what deleting other files would do)
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_fs)], check=True)
    generate_corpora(cfg.corpora, out)
    assert _shas(out, "ngram") == _shas(tmp_path / "ref", "ngram")
    SplitReader(out / "corpus" / "ngram" / "train").verify()


def test_real_full_disk_atomic_bytes(small_fs: Path) -> None:
    target = small_fs / f"{uuid.uuid4().hex}.bin"
    with pytest.raises(DiskFullError, match=r"needs 1,048,576 bytes"):
        atomic_write_bytes(target, b"x" * (1 << 20))
    assert list(small_fs.iterdir()) == []
