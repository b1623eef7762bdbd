"""One writer per run folder: a second writer refuses at once naming the
folder, the holder's pid, host and start time; a dead holder's lock is taken over with a
warning; readers need no lock."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hierlab.errors import LockedError
from hierlab.lock import HOLDER, run_lock

HOLD = textwrap.dedent("""
    import os, signal, sys, time
    from hierlab.lock import run_lock
    with run_lock(sys.argv[1]):
        print("held", flush=True)
        if sys.argv[2] == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
""")


def _holder(folder: Path, mode: str = "hold") -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), mode], stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout is not None
    if mode == "hold":
        assert p.stdout.readline().strip() == "held"
    else:
        p.wait(30)
    return p


@pytest.fixture
def held(tmp_path: Path):  # noqa: ANN201
    folder = tmp_path / "run"
    p = _holder(folder)
    yield folder, p.pid
    p.kill()
    p.wait()


def test_a_second_writer_refuses_naming_folder_pid_host_and_start(held) -> None:
    folder, pid = held
    with pytest.raises(LockedError) as err, run_lock(folder):
        pass
    msg = str(err.value)
    assert str(folder.resolve()) in msg and f"pid {pid}" in msg
    assert socket.gethostname() in msg and "started 20" in msg and "\n" not in msg


def test_every_writing_stage_and_a_sweep_refuse_a_held_folder(held, tmp_path: Path) -> None:
    from hierlab.config import config_from_dict
    from hierlab.corpus.generate import generate_corpora
    from hierlab.pipeline import run
    from hierlab.probes.runner import run_probes
    from hierlab.sweep.execute import execute
    from hierlab.train.loop import train_corpora

    folder, pid = held
    cfg = config_from_dict({"name": "x"})
    for call in (lambda: generate_corpora(cfg.corpora, folder),
                 lambda: train_corpora(cfg.model, cfg.training, cfg.corpora, folder),
                 lambda: run_probes(cfg.probes, folder),
                 lambda: run(cfg, folder),
                 lambda: execute([], folder)):
        with pytest.raises(LockedError, match=f"pid {pid}"):
            call()
    assert not (folder / "config.yml").exists()  # refused before any write


def test_cli_train_beside_a_running_writer_exits_1_with_one_line(held) -> None:
    folder, pid = held
    r = subprocess.run([sys.executable, "-m", "hierlab", "probe", "--out", str(folder)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"pid {pid}" in errors[0] and "Traceback" not in r.stderr


def test_lock_of_a_killed_holder_is_taken_over_with_a_warning(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "run"
    p = _holder(folder, "die")
    assert p.returncode == -signal.SIGKILL and (folder / HOLDER).exists()
    with caplog.at_level(logging.WARNING, logger="hierlab.lock"), run_lock(folder):
        assert f"pid {p.pid}" in caplog.text and "no longer running" in caplog.text
    assert not (folder / HOLDER).exists()  # released cleanly


def test_a_stale_soft_lock_file_of_a_dead_pid_is_removed(tmp_path: Path, caplog,
                                                         monkeypatch) -> None:
    """Where flock is unavailable filelock falls back to a lock file a kill leaves behind."""
    import filelock

    from hierlab import lock as lockmod

    folder = tmp_path / "run"
    p = _holder(folder, "die")
    monkeypatch.setattr(lockmod, "FileLock", filelock.SoftFileLock)
    (folder / ".hierlab.lock").write_text(str(p.pid))  # what a killed soft holder leaves
    with caplog.at_level(logging.WARNING, logger="hierlab.lock"), run_lock(folder):
        assert "removing the lock left by" in caplog.text
    # and a live soft holder still refuses
    q = _holder(tmp_path / "other")
    try:
        (tmp_path / "other" / ".hierlab.lock").write_text(str(q.pid))
        with pytest.raises(LockedError), run_lock(tmp_path / "other"):
            pass
    finally:
        q.kill()
        q.wait()


def test_reentrant_in_one_process_and_readers_need_no_lock(synthetic_run_dir, tmp_path) -> None:
    from hierlab.figures import make_figures
    from hierlab.notebook import load_run

    assert load_run(synthetic_run_dir) is not None
    other = _holder(synthetic_run_dir)
    try:  # a writer holds the run; figures and load_run still read it
        assert make_figures(synthetic_run_dir)
        assert load_run(synthetic_run_dir) is not None
    finally:
        other.kill()
        other.wait()
    mine = tmp_path / "mine"
    with run_lock(mine), run_lock(mine):
        assert (mine / HOLDER).exists()
    assert not os.path.exists(mine / HOLDER)
