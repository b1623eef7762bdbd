"""Hub revisions that fail, offline, through the real ``snapshot_download``
on a local HF-cache layout (refs/, snapshots/, blobs/ named by their checksums): a missing
revision, one removed mid-sweep, a truncated weights file and one that fails its checksum
are recorded in the metrics folder with the reason; the sweep goes on; a re-run retries only
the failed revisions."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from hierlab.probes import runner as rmod
from hierlab.probes.failures import FAILED, verify_files
from probes_helpers import tiny_model, tiny_probes_config

REPO = "allenai/OLMo-tiny-hf"
REVS = ["step1000-tokens4B", "step2000-tokens8B", "step3000-tokens12B", "step4000-tokens16B"]


def make_hub_cache(cache: Path, repo: str, revisions: list[str]) -> Path:
    """What ``snapshot_download`` leaves in an HF cache, one snapshot per revision."""
    store = cache / f"models--{repo.replace('/', '--')}"
    for i, rev in enumerate(revisions):
        src = cache.parent / f"src-{rev}"
        tiny_model("olmo", seed=i).save_pretrained(src)
        commit = hashlib.sha1(rev.encode()).hexdigest()
        (store / "refs").mkdir(parents=True, exist_ok=True)
        (store / "refs" / rev).write_text(commit)
        snap = store / "snapshots" / commit
        snap.mkdir(parents=True)
        for f in src.iterdir():
            data = f.read_bytes()
            blob = (hashlib.sha256(data).hexdigest() if f.suffix == ".safetensors" else
                    hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest())
            (store / "blobs").mkdir(exist_ok=True)
            (store / "blobs" / blob).write_bytes(data)
            os.symlink(f"../../blobs/{blob}", snap / f.name)
        shutil.rmtree(src)
    return store


def _weights(store: Path, rev: str) -> Path:
    commit = (store / "refs" / rev).read_text()
    return Path(os.path.realpath(store / "snapshots" / commit / "model.safetensors"))


def _failed(out: Path) -> dict[str, dict]:
    path = out / "metrics" / FAILED
    if not path.exists():
        return {}
    return {e["revision"]: e for e in json.loads(path.read_text())["checkpoints"]}


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch):  # noqa: ANN201
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the hub is never reached
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return make_hub_cache(tmp_path / "hf", REPO, REVS[:3])


def test_failed_revisions_are_recorded_the_sweep_goes_on_a_rerun_retries_only_them(
        tmp_path: Path, offline_hub: Path, monkeypatch) -> None:
    store = offline_hub
    cfg = tiny_probes_config(hub={"cache_dir": str(tmp_path / "hf")})
    spec = f"hub:{REPO}@{','.join(REVS)}"  # step4000 was never there: missing
    out = tmp_path / "out"
    w2 = _weights(store, REVS[1])
    good = w2.read_bytes()
    w2.write_bytes(good[: len(good) // 2])  # a half-downloaded weights file
    real, seen = rmod.probe_checkpoint, []

    def remove_step3000_mid_sweep(ctx, probe, variant):  # noqa: ANN001, ANN202
        seen.append(ctx.ckpt.revision)
        shutil.rmtree(store / "snapshots" / (store / "refs" / REVS[2]).read_text(),
                      ignore_errors=True)  # the revision disappears while step1000 is probed
        return real(ctx, probe, variant)

    monkeypatch.setattr(rmod, "probe_checkpoint", remove_step3000_mid_sweep)
    paths = rmod.run_probes(cfg, out, checkpoints=spec, probes="structure,hydra",
                            variant="reference")
    assert set(pd.read_parquet(paths["hydra"]).step) == {1000}  # the sweep went on
    failed = _failed(out)
    assert set(failed) == set(REVS[1:])
    assert failed[REVS[1]]["stage"] == "verify" and "truncated" in failed[REVS[1]]["reason"]
    assert failed[REVS[2]]["stage"] == "download" and failed[REVS[3]]["stage"] == "download"
    assert all(e["step"] and e["source"] == f"hub:{REPO}" for e in failed.values())

    # the hub is repaired (the revisions come back, the download completes): only the
    # failed revisions are probed again, and they leave the record
    fresh = make_hub_cache(tmp_path / "hf2", REPO, REVS)
    shutil.rmtree(store)
    shutil.copytree(fresh, store, symlinks=True)
    seen.clear()
    monkeypatch.setattr(rmod, "probe_checkpoint", lambda c, p, v: (seen.append(c.ckpt.revision),
                                                                   real(c, p, v))[1])
    paths = rmod.run_probes(cfg, out, checkpoints=spec, probes="structure,hydra",
                            variant="reference")
    assert REVS[0] not in seen and set(seen) == set(REVS[1:])
    assert set(pd.read_parquet(paths["hydra"]).step) == {1000, 2000, 3000, 4000}
    assert _failed(out) == {}


def test_a_weights_file_that_fails_its_checksum_is_recorded(tmp_path: Path,
                                                            offline_hub: Path) -> None:
    w = _weights(offline_hub, REVS[0])
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF  # same length, one flipped byte: only the checksum can tell
    w.write_bytes(bytes(data))
    cfg = tiny_probes_config(hub={"cache_dir": str(tmp_path / "hf")})
    rmod.run_probes(cfg, tmp_path / "out", checkpoints=f"hub:{REPO}@{REVS[0]},{REVS[1]}",
                    probes="structure", variant="reference")
    failed = _failed(tmp_path / "out")
    assert list(failed) == [REVS[0]] and "checksum mismatch" in failed[REVS[0]]["reason"]


def test_verify_files_accepts_a_sound_snapshot_and_plain_folders(tmp_path: Path) -> None:
    store = make_hub_cache(tmp_path / "hf", REPO, REVS[:1])
    assert verify_files(store / "snapshots" / (store / "refs" / REVS[0]).read_text()) is None
    tiny_model().save_pretrained(tmp_path / "plain")
    assert verify_files(tmp_path / "plain") is None
    (tmp_path / "plain" / "model.safetensors").write_bytes(b"\x01")
    assert "truncated" in verify_files(tmp_path / "plain")
