"""Training keeps its freed heap: a fresh process re-faulted a step's activation pages every
step (about 10,000 page faults per quickstart step, ~1.5x slower compiled) until the
allocator thresholds were fixed."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

SCRIPT = """
import json, resource
import numpy as np
from hierlab.train.allocator import keep_freed_memory

def faults_per_step(steps=5):
    # a step's activations: 40 blocks of 1 MiB, freed at the end of the step
    xs = [np.ones(2**17) for _ in range(40)]; del xs
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        xs = [np.ones(2**17) for _ in range(40)]; del xs
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / steps

before = faults_per_step()
applied = keep_freed_memory()
print(json.dumps({"before": before, "applied": applied, "after": faults_per_step()}))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_freed_activations_keep_their_pages() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         check=True, timeout=120)  # a fresh process: the default heap policy
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["applied"]
    assert res["before"] > 5000  # 40 MiB handed back and re-faulted every step
    assert res["after"] < 100, res


def test_the_training_loop_sets_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """train_model applies it before anything else (so also for `hierlab train`)."""
    import hierlab.train.loop as loop

    calls: list[bool] = []

    class Stop(Exception):
        pass

    def resolve(device: object) -> None:
        raise Stop

    monkeypatch.setattr(loop, "keep_freed_memory", lambda: calls.append(True) or True)
    monkeypatch.setattr(loop, "resolve_device", resolve)
    with pytest.raises(Stop):
        loop.train_model(None, type("T", (), {"device": "cpu"})(), "c", "o")  # type: ignore[arg-type]
    assert calls == [True]
