"""Which torch build install.sh installs on this machine, and from which package index.

PyPI's Linux torch is the CUDA build (with its nvidia and triton wheels, about 2.7 GB), so a
Linux machine without an NVIDIA driver gets the CPU build from PyTorch's CPU wheel index instead;
Linux with a driver, macOS and everything else get the default index's build. A CPU index that
does not answer within a few seconds (a machine that reaches only a package mirror) falls back
to the default index and says so in one line: the probe is bounded, so the install never hangs.
Standard library only: install.sh runs it with the new venv's python before anything is installed.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SPEC = "torch==2.13.0"  # the torch uv.lock resolves (pyproject.toml [tool.uv])
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PROBE_SECONDS = 5.0
NVIDIA_PROC = Path("/proc/driver/nvidia/version")


@dataclass(frozen=True)
class TorchChoice:
    """A torch requirement and the index pip takes it from (None: pip's configured index)."""

    spec: str
    index_url: str | None
    reason: str

    def pip_args(self) -> list[str]:
        """The arguments after ``pip install`` that install this choice."""
        return (["--index-url", self.index_url] if self.index_url else []) + [self.spec]


def has_nvidia_driver(path: str | None = None, proc_version: Path = NVIDIA_PROC) -> bool:
    """Whether an NVIDIA driver is loaded: its /proc entry exists or ``nvidia-smi -L`` succeeds.

    Args:
        path: the PATH searched for nvidia-smi (None: this process's PATH).
        proc_version: the file the loaded kernel driver publishes.

    Returns:
        True where the CUDA build of torch can use a GPU.
    """
    if proc_version.exists():
        return True
    exe = shutil.which("nvidia-smi", path=path)
    if exe is None:
        return False
    try:
        done = subprocess.run([exe, "-L"], capture_output=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def index_answers(index_url: str, timeout: float = PROBE_SECONDS) -> bool:
    """Whether ``INDEX/torch/`` answers a HEAD request with success within ``timeout`` seconds.

    The request runs in a daemon thread joined with the deadline, so a name lookup or a server
    that never replies cannot hold the install past ``timeout``.

    Args:
        index_url: a PEP 503 simple index, e.g. PyTorch's CPU wheel index.
        timeout: seconds for the whole probe (lookup, connect, reply).

    Returns:
        True when the index answered 2xx or 3xx in time.
    """
    answers: list[bool] = []

    def probe() -> None:
        request = urllib.request.Request(index_url.rstrip("/") + "/torch/", method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                answers.append(200 <= reply.status < 400)
        except (OSError, ValueError):  # URLError, HTTPError, timeouts, a malformed URL
            answers.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answers) and answers[0]


def choose_torch(
    system: str,
    driver: bool,
    spec: str = DEFAULT_SPEC,
    cpu_index: str = CPU_INDEX,
    timeout: float = PROBE_SECONDS,
) -> TorchChoice:
    """The torch build for a machine.

    Args:
        system: ``platform.system()`` of the machine ("Linux", "Darwin", "Windows", ...).
        driver: whether an NVIDIA driver is loaded (only read on Linux).
        spec: the torch requirement to install.
        cpu_index: PyTorch's CPU wheel index, or a mirror of it.
        timeout: seconds the CPU index gets to answer before the default index is used.

    Returns:
        The requirement, its index and a one-line reason for the install log.
    """
    if system != "Linux":
        return TorchChoice(spec, None, f"{system}: {spec} from the default index")
    if driver:
        return TorchChoice(spec, None, f"Linux with an NVIDIA driver: {spec} from the default "
                                       "index (the CUDA build)")
    if index_answers(cpu_index, timeout):
        return TorchChoice(spec, cpu_index, f"Linux without an NVIDIA driver: {spec} CPU build "
                                            f"from {cpu_index}")
    return TorchChoice(spec, None, f"{cpu_index} did not answer within {timeout:g} s: falling "
                                   f"back to {spec} from the default index (on Linux PyPI's "
                                   "torch is the CUDA build)")


def main(argv: list[str] | None = None) -> int:
    """Print the pip arguments, one a line, on stdout and the reason on stderr.

    $HIERLAB_TORCH replaces the requirement; $HIERLAB_TORCH_INDEX names the index outright
    (a URL, or ``default`` for pip's configured index) and skips the detection.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default=platform.system(), help="platform.system() to plan for")
    parser.add_argument("--cpu-index", default=CPU_INDEX, help="PyTorch's CPU index or a mirror")
    parser.add_argument("--timeout", type=float, default=PROBE_SECONDS, help="probe seconds")
    args = parser.parse_args(argv)
    spec = os.environ.get("HIERLAB_TORCH") or DEFAULT_SPEC
    forced = os.environ.get("HIERLAB_TORCH_INDEX", "")
    if forced:
        index = None if forced == "default" else forced
        where = index or "the default index"
        choice = TorchChoice(spec, index, f"$HIERLAB_TORCH_INDEX: {spec} from {where}")
    else:
        driver = args.system == "Linux" and has_nvidia_driver()
        choice = choose_torch(args.system, driver, spec, args.cpu_index, args.timeout)
    print(f"torch: {choice.reason}", file=sys.stderr)
    print("\n".join(choice.pip_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
