"""install.sh's torch choice, run offline, and the lock's agreement with pyproject.toml.

The choice (tools/torch_choice.py) is exercised with a faked driver (an nvidia-smi stub on
PATH, a stand-in /proc file) and with package indexes served on 127.0.0.1: one that answers,
one that refuses connections and one that accepts but never replies, the case that must not
hang an install. Nothing here downloads.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "torch_choice.py"
_spec = importlib.util.spec_from_file_location("torch_choice", SCRIPT)
tc = importlib.util.module_from_spec(_spec)
sys.modules["torch_choice"] = tc  # dataclasses look their module up
_spec.loader.exec_module(tc)

NO_PROC = Path("/nonexistent/proc/driver/nvidia/version")


class _Index(BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        self.send_response(200 if self.path == "/whl/cpu/torch/" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answering_index() -> Iterator[str]:
    """A simple index on 127.0.0.1 that has torch/."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/whl/cpu"
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_index() -> Iterator[str]:
    """A port that completes the TCP handshake (listen backlog) and never replies."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/whl/cpu"


@pytest.fixture
def refusing_index() -> str:
    """A port with nothing listening: the connection is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/whl/cpu"


def _stub_nvidia_smi(folder: Path, code: int) -> str:
    """A PATH holding only an nvidia-smi that exits with ``code``."""
    folder.mkdir(exist_ok=True)
    exe = folder / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\nexit {code}\n")
    exe.chmod(0o755)
    return str(folder)


def test_linux_without_a_driver_takes_the_cpu_index(answering_index: str) -> None:
    choice = tc.choose_torch("Linux", driver=False, cpu_index=answering_index, timeout=5)
    assert choice.pip_args() == ["--index-url", answering_index, tc.DEFAULT_SPEC]
    assert "CPU build" in choice.reason


@pytest.mark.parametrize("index", ["silent_index", "refusing_index"])
def test_an_unreachable_cpu_index_falls_back_within_the_bound(
    index: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(index)
    start = time.monotonic()
    choice = tc.choose_torch("Linux", driver=False, cpu_index=url, timeout=1.0)
    assert time.monotonic() - start < 3.0
    assert choice.pip_args() == [tc.DEFAULT_SPEC]  # pip's own (default) index
    assert "falling back" in choice.reason and "\n" not in choice.reason


def test_an_index_without_torch_counts_as_unreachable(answering_index: str) -> None:
    other = answering_index.replace("/whl/cpu", "/simple")  # answers 404 for torch/
    assert not tc.index_answers(other, timeout=5)
    assert tc.index_answers(answering_index, timeout=5)


@pytest.mark.parametrize("system,driver", [("Linux", True), ("Darwin", False),
                                           ("Darwin", True), ("Windows", False)])
def test_the_default_index_without_probing(system: str, driver: bool, silent_index: str) -> None:
    start = time.monotonic()  # a probe of the silent index would take the whole timeout
    choice = tc.choose_torch(system, driver, cpu_index=silent_index, timeout=5)
    assert time.monotonic() - start < 1.0
    assert choice.pip_args() == [tc.DEFAULT_SPEC]


def test_a_driver_is_seen_through_nvidia_smi_or_proc(tmp_path: Path) -> None:
    works = _stub_nvidia_smi(tmp_path / "ok", 0)
    fails = _stub_nvidia_smi(tmp_path / "broken", 9)  # installed but no driver loaded
    proc = tmp_path / "version"
    assert tc.has_nvidia_driver(path=works, proc_version=NO_PROC)
    assert not tc.has_nvidia_driver(path=fails, proc_version=NO_PROC)
    assert not tc.has_nvidia_driver(path=str(tmp_path / "empty"), proc_version=NO_PROC)
    proc.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module\n")
    assert tc.has_nvidia_driver(path=str(tmp_path / "empty"), proc_version=proc)


def _run_script(path: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HIERLAB_TORCH")}
    environ.update(PATH=path, **env)
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=environ, timeout=30,
                          capture_output=True, text=True, check=True)


def test_the_script_with_a_faked_driver_prints_the_default(tmp_path: Path,
                                                           silent_index: str) -> None:
    path = _stub_nvidia_smi(tmp_path / "bin", 0)
    done = _run_script(path, "--system", "Linux", "--cpu-index", silent_index, "--timeout", "5",
                       HIERLAB_TORCH="torch==2.5.1")
    assert done.stdout.split() == ["torch==2.5.1"]  # $HIERLAB_TORCH replaces the spec
    assert done.stderr.startswith("torch: Linux with an NVIDIA driver")


@pytest.mark.skipif(tc.NVIDIA_PROC.exists(), reason="this machine has an NVIDIA driver")
def test_the_script_without_a_driver_falls_back_in_one_line(tmp_path: Path,
                                                            silent_index: str) -> None:
    path = _stub_nvidia_smi(tmp_path / "bin", 9)
    start = time.monotonic()
    done = _run_script(path, "--system", "Linux", "--cpu-index", silent_index, "--timeout", "1")
    assert time.monotonic() - start < 10.0
    assert done.stdout.split() == [tc.DEFAULT_SPEC]
    assert len(done.stderr.strip().splitlines()) == 1 and "falling back" in done.stderr


def test_hierlab_torch_index_skips_the_detection(tmp_path: Path) -> None:
    url = "https://example.invalid/whl/cu126"
    done = _run_script(str(tmp_path), "--system", "Linux", HIERLAB_TORCH_INDEX=url)
    assert done.stdout.split() == ["--index-url", url, tc.DEFAULT_SPEC]
    done = _run_script(str(tmp_path), "--system", "Linux", HIERLAB_TORCH_INDEX="default")
    assert done.stdout.split() == [tc.DEFAULT_SPEC]


# --- the lock -------------------------------------------------------------------------------

LOCK = tomllib.loads((ROOT / "uv.lock").read_text())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _locked_versions() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for pkg in LOCK["package"]:
        out.setdefault(pkg["name"], set()).add(pkg["version"])
    return out


def test_the_default_torch_is_the_locked_torch() -> None:
    spec = Requirement(tc.DEFAULT_SPEC)
    assert PYPROJECT["tool"]["uv"]["constraint-dependencies"] == [tc.DEFAULT_SPEC]
    assert _locked_versions()["torch"] == {str(spec.specifier).removeprefix("==")}


def test_constraints_pin_the_locked_versions_and_leave_torch_to_the_machine() -> None:
    locked = _locked_versions()
    pins = [Requirement(line.split(";")[0]) for line in (ROOT / "constraints.txt").read_text()
            .splitlines() if line and not line.startswith((" ", "#"))]
    names = {p.name for p in pins}
    assert {"transformers", "nnsight", "datasets", "huggingface-hub", "uv"} <= names
    assert not {n for n in names if n == "torch" or n.startswith(("nvidia-", "triton"))}
    for pin in pins:
        assert str(pin.specifier).removeprefix("==") in locked[pin.name], str(pin)


def test_the_lock_covers_every_extra() -> None:
    project = next(p for p in LOCK["package"] if p["name"] == "hierlab")
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    assert set(project["metadata"]["provides-extras"]) == extras
    assert {"dev", "interop", "scale", "tracking", "bench", "docs"} <= extras
