"""What the fault trials share: the tiny experiment, the CLI in subprocesses, waiting on a
run's own outputs, the message the user saw, artefact fingerprints and the result rows.

Part of ``benchmarks/fault_trials.py`` (the trials and the table).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TRAIN_STEPS = 150
CKPT_STEPS = [0, 20, 60, 100]  # and the last step; 0 is the untrained model
CONFIG = {
    "name": "trials",
    "corpora": {"ngram": {"kind": "ngram", "vocab_size": 260, "num_contexts": 50,
                          "min_length": 5, "max_length": 20, "train_sentences": 8000,
                          "test_sentences": 200, "sentences_per_shard": 1000}},
    "model": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64,
              "context_length": 32},
    "training": {"batch_size": 8, "micro_batch_size": 4, "lr": 3e-3, "schedule": "cosine",
                 "warmup_steps": 3, "eval_tokens": 1024, "log_every": 3, "threads": 1,
                 "precision": "bf16", "max_tokens": 8 * 32 * TRAIN_STEPS,
                 "checkpoints": {"schedule": "list", "steps": CKPT_STEPS}},
    "probes": {"device": "cpu", "probes": ["induction", "hydra"], "variants": ["reference"],
               "induction": {"samples": 3, "n": 8, "k_max": 3, "position_windows": 2,
                             "indist_samples": 2, "icl_length": 32, "icl_early_band": [2, 5],
                             "icl_late_band": [20, 30]},
               "hydra": {"max_samples": 2, "length": 32, "random_samples": 2,
                         "random_length": 32, "standard_samples": 2, "standard_length": 16}},
}


# ----------------------------------------------------------------------------- plumbing
def hierlab(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hierlab", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout)


def start(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hierlab", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def wait_for(pred: Callable[[], bool], proc: subprocess.Popen | None = None,
             timeout: float = 300) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def message(stderr: str, *keys: str) -> str:
    """The one line the user saw (``error:``/``stopped:``/a warning), without the bar text."""
    for line in re.split(r"[\r\n]", stderr):
        for k in keys:
            if k in line:
                return line[line.index(k):].strip()
    return ""


def csv_rows(path: Path) -> list[str]:
    if not path.exists():
        return []
    rows = path.read_text().splitlines()
    head = rows[0].split(",") if rows else []
    drop = head.index("tokens_per_s") if "tokens_per_s" in head else None
    return [",".join(v for i, v in enumerate(r.split(",")) if i != drop) for r in rows]


def fingerprint(run: Path) -> dict[str, str]:
    """Every artefact a later stage reads, as content hashes (wall-clock columns dropped)."""
    out: dict[str, str] = {}
    for man in sorted(run.glob("corpus/*/*/manifest.json")):
        out[str(man.relative_to(run))] = json.dumps(
            [r["sha256"] for r in json.loads(man.read_text())["shards"]])
    for w in sorted(run.glob("models/*/checkpoints/step-*/model.safetensors")):
        out[str(w.relative_to(run))] = hashlib.sha256(w.read_bytes()).hexdigest()
    for name in ("loss.csv", "eval.csv"):
        for p in sorted(run.glob(f"models/*/{name}")):
            out[str(p.relative_to(run))] = hashlib.sha256(
                "\n".join(csv_rows(p)).encode()).hexdigest()
    for t in sorted(run.glob("metrics/*.parquet")):
        import pandas as pd

        df = pd.read_parquet(t)
        out[str(t.relative_to(run))] = hashlib.sha256(
            df.to_csv(index=False).encode()).hexdigest()
    return out


def lost(ref: dict[str, str], run: Path, only: str = "") -> list[str]:
    got = fingerprint(run)
    keys = [k for k in ref if k.startswith(only)]
    return [k for k in keys if got.get(k) != ref[k]]


@dataclass
class Row:
    fault: str
    trials: int = 0
    survived: int = 0
    lost: int = 0
    messages: list[str] = field(default_factory=list)

    def add(self, survived: bool, lost_keys: list[str], msg: str) -> None:
        self.trials += 1
        self.survived += bool(survived)
        self.lost += bool(lost_keys)
        if msg and msg not in self.messages:
            self.messages.append(msg)
        if lost_keys or not survived:
            print(f"  !! {self.fault}: survived={survived} lost={lost_keys} msg={msg!r}",
                  flush=True)


WORK: list[Path] = []  # the benchmark's work folder, shown as WORK in messages


def short(msg: str, root: Path) -> str:
    msg = msg.replace(str(root) + "/", "").replace(str(root), ".")
    for w in WORK:
        msg = msg.replace(str(w), "WORK")
    msg = re.sub(r"\d{4}-\d\d-\d\dT[\d:+-]+", "<time>", msg)
    msg = re.sub(r"[\d,]{6,} bytes free", "N bytes free", msg)
    return msg if len(msg) <= 150 else msg[:147] + "..."
