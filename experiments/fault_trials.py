"""Fault trials: every fault hierlab promises to survive, on the real CLI.

Each trial runs ``python -m hierlab ...`` on a tiny config, delivers a fault (signals at
moments read off the run's own outputs, SIGKILL around checkpoint publishing, a second
writer, a killed lock holder or Dask worker, ENOSPC, failing hub revisions), re-runs the
command and compares every artefact with an uninterrupted reference run. One row per fault:
trials, survived, data lost, the message shown; exit status 1 if any trial failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

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


WORK: list[Path] = []  # the trials' work folder, shown as WORK in messages


def short(msg: str, root: Path) -> str:
    msg = msg.replace(str(root) + "/", "").replace(str(root), ".")
    for w in WORK:
        msg = msg.replace(str(w), "WORK")
    msg = re.sub(r"\d{4}-\d\d-\d\dT[\d:+-]+", "<time>", msg)
    msg = re.sub(r"[\d,]{6,} bytes free", "N bytes free", msg)
    return msg if len(msg) <= 150 else msg[:147] + "..."


# ----------------------------------------------------------------------------- trials
class Trials:
    def __init__(self, root: Path, repeats: int) -> None:
        self.root, self.repeats = root, repeats
        self.cfg = root / "trials.yml"
        self.cfg.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
        self.ref = root / "ref"
        self.rows: list[Row] = []
        self.n = 0

    def fresh(self, stages: str = "") -> Path:
        """A new run folder holding the reference's outputs of ``stages`` (corpus, models)."""
        self.n += 1
        d = self.root / f"t{self.n:02d}"
        for s in stages.split(","):
            if s:
                shutil.copytree(self.ref / s, d / s, symlinks=True)
        for lock in d.rglob(".hierlab.lock*"):
            lock.unlink()
        return d

    def row(self, fault: str) -> Row:
        r = Row(fault)
        self.rows.append(r)
        print(f"-- {fault}", flush=True)
        return r

    def reference(self) -> None:
        t0 = time.time()
        for stage in ("corpus", "train", "probe"):
            r = hierlab(stage, str(self.cfg), "--out", str(self.ref))
            if r.returncode:
                raise SystemExit(f"reference {stage} failed:\n{r.stderr[-3000:]}")
        self.fp = fingerprint(self.ref)
        print(f"reference run: {len(self.fp)} artefacts in {time.time() - t0:.0f} s", flush=True)

    # --- 1. preemption
    def signal_train(self, sig: int, repeats: int) -> None:
        row = self.row(f"{signal.Signals(sig).name} during `train`")
        for _ in range(repeats):
            d = self.fresh("corpus")
            loss = d / "models" / "ngram" / "loss.csv"
            p = start("train", str(self.cfg), "--out", str(d))
            rows = random.randint(2, TRAIN_STEPS // 3 - 4)  # a random step boundary
            wait_for(lambda: len(csv_rows(loss)) > rows, p)  # noqa: B023
            p.send_signal(sig)
            _, err = p.communicate(timeout=300)
            msg = message(err, "stopped:")
            ok = p.returncode == 128 + sig and "to resume" in msg
            again = hierlab("train", str(self.cfg), "--out", str(d))
            ok = ok and again.returncode == 0
            row.add(ok, lost(self.fp, d, "models"), short(msg, d))

    def signal_probe(self) -> None:
        row = self.row("SIGTERM during `probe`")
        d = self.fresh("corpus,models")
        p = start("probe", str(self.cfg), "--out", str(d))
        wait_for(lambda: len(list((d / "metrics" / ".parts").rglob("*.parquet"))) >= 2, p)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=300)
        msg = message(err, "stopped:")
        ok = p.returncode == 143 and "finished units are kept" in msg
        ok = ok and hierlab("probe", str(self.cfg), "--out", str(d)).returncode == 0
        row.add(ok, lost(self.fp, d, "metrics"), short(msg, d))

    def signal_corpus(self) -> None:
        row = self.row("SIGTERM during `corpus --workers 2`")
        d = self.fresh()
        p = start("corpus", str(self.cfg), "--out", str(d), "--workers", "2")
        split = d / "corpus" / "ngram" / "train"
        wait_for(lambda: bool(list(split.glob(".shard-*.done.json"))), p)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=300)
        msg = message(err, "stopped:")
        ok = p.returncode == 143 and "none is half-written" in msg
        ok = ok and not (split / "manifest.json").exists()
        ok = ok and hierlab("corpus", str(self.cfg), "--out", str(d)).returncode == 0
        row.add(ok, lost(self.fp, d, "corpus"), short(msg, d))

    def signal_sweep(self) -> None:
        row = self.row("SIGTERM during `sweep` (parent only)")
        d = self.fresh()
        sweep = self.root / "sweep.yml"
        sweep.write_text(yaml.safe_dump({"name": "trials", "base": str(self.cfg),
                                         "runs": [{"name": "a"}]}))
        run = d / "runs" / "a"
        p = start("sweep", str(sweep), "--out", str(d))
        wait_for(lambda: len(csv_rows(run / "models" / "ngram" / "loss.csv")) > 10, p)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=600)
        msg = message(err, "stopped:")
        ok = p.returncode == 143 and (run / "models" / "ngram" / "resume").is_dir()
        again = hierlab("sweep", str(sweep), "--out", str(d), timeout=900)
        ok = ok and again.returncode == 0 and (run / "report.html").exists()
        row.add(ok, lost(self.fp, run, "models"), short(msg, d))

    def kill_at_checkpoints(self) -> None:
        """SIGKILL (``HIERLAB_FAULTS``) right before and right after each of the first
        checkpoints is published: the rerun must end with the uninterrupted run's weights,
        loss.csv and eval.csv."""
        for step in CKPT_STEPS[:3]:
            for when, kind in (("before", "kill"), ("after", "killafter")):
                ckpt = f"checkpoints/step-{step:08d}"
                row = self.row(f"SIGKILL right {when} `{ckpt}` is published")
                d = self.fresh("corpus")
                r = hierlab("train", str(self.cfg), "--out", str(d),
                            env={"HIERLAB_FAULTS": f"{kind}@*/{ckpt}"}, timeout=1800)
                model = d / "models" / "ngram"
                ok = r.returncode == -signal.SIGKILL
                ok = ok and (model / ckpt).is_dir() == (when == "after")
                again = hierlab("train", str(self.cfg), "--out", str(d), timeout=1800)
                msg = (message(again.stderr, "resuming from")
                       or message(again.stderr, "taking over the lock"))
                ok = ok and again.returncode == 0
                row.add(ok, lost(self.fp, d, "models"), short(msg, d))

    # --- 2. one writer per run folder
    def second_writer(self) -> None:
        row = self.row("second writer (`probe` beside `train`, `run` beside `run`)")
        d = self.fresh("corpus")
        p = start("train", str(self.cfg), "--out", str(d))
        wait_for(lambda: (d / ".hierlab.lock.json").exists(), p)
        msgs = []
        for cmd in (["probe", str(self.cfg)], ["run", str(self.cfg)]):
            r = hierlab(*cmd, "--out", str(d))
            m = message(r.stderr, "error:")
            msgs.append(m)
            ok = r.returncode == 1 and f"pid {p.pid}" in m and "started" in m
            row.add(ok, [], short(m, d))
        p.communicate(timeout=600)
        row.lost += bool(p.returncode != 0 or lost(self.fp, d, "models"))

    def stale_lock(self) -> None:
        row = self.row("lock holder killed with -9")
        d = self.fresh("corpus")
        p = start("train", str(self.cfg), "--out", str(d))
        wait_for(lambda: len(csv_rows(d / "models" / "ngram" / "loss.csv")) > 12, p)
        p.send_signal(signal.SIGKILL)
        p.communicate()
        r = hierlab("train", str(self.cfg), "--out", str(d))
        msg = message(r.stderr, "taking over the lock")
        row.add(r.returncode == 0 and f"pid {p.pid}" in msg, lost(self.fp, d, "models"),
                short(msg, d))

    # --- 3. lost Dask worker
    def dask_worker(self) -> None:
        try:
            import dask.distributed  # noqa: F401
        except ImportError:
            print("   dask not installed (extra 'scale'): skipped", flush=True)
            return
        row = self.row("Dask worker SIGKILL-ed mid-shard (2 workers)")
        for mode in ("once", "always"):
            d = self.fresh()
            fdir = self.root / f"faults{self.n}"
            fdir.mkdir()
            env = {"HIERLAB_FAULTS": "kill@*/train/shard-00003.arrow" + ("#0" * (mode != "once")),
                   "HIERLAB_FAULT_DIR": str(fdir)}
            args = ("corpus", str(self.cfg), "--out", str(d), "--engine", "dask", "--workers", "2")
            r = hierlab(*args, env=env)
            if mode == "once":
                ok = r.returncode == 0 and bool(list(fdir.iterdir()))
                msg = "(none: the shard was retried on the other worker)"
            else:
                msg = message(r.stderr, "error:")
                ok = r.returncode == 1 and "lost its Dask worker" in msg
                ok = ok and hierlab(*args).returncode == 0
            row.add(ok, lost(self.fp, d, "corpus"), short(msg, d))

    # --- 4. a full disk
    def enospc(self) -> None:
        sites = [
            ("shard", "corpus", "", "*/train/shard-00002.arrow", "corpus"),
            ("checkpoint", "train", "corpus", "*/checkpoints/step-00000060", "models"),
            ("metrics table", "probe", "corpus,models", "*/metrics/hydra.parquet", "metrics"),
            ("probe part", "probe", "corpus,models", "*/.parts/hydra/*", "metrics"),
        ]
        for site, stage, has, glob, check in sites:
            row = self.row(f"ENOSPC writing a {site} (injected)")
            d = self.fresh(has)
            r = hierlab(stage, str(self.cfg), "--out", str(d), env={"HIERLAB_FAULTS":
                                                                    f"enospc@{glob}"})
            msg = message(r.stderr, "error:")
            ok = r.returncode == 1 and "no space left on device" in msg and "bytes" in msg
            ok = ok and not [p for p in d.rglob("*") if p.name.endswith(".tmp")
                             or p.name.startswith(".tmp-")]
            ok = ok and hierlab(stage, str(self.cfg), "--out", str(d)).returncode == 0
            row.add(ok, lost(self.fp, d, check), short(msg, d))
        row = self.row("ENOSPC writing a figure (injected)")
        d = self.fresh("corpus,models,metrics")
        r = hierlab("figures", str(d), env={"HIERLAB_FAULTS": "enospc@fig2_loss.png"})
        msg = message(r.stderr, "error:")
        ok = r.returncode == 1 and "fig2_loss.png" in msg and not (d / "figures" /
                                                                  "fig2_loss.png").exists()
        ok = ok and hierlab("figures", str(d)).returncode == 0
        ok = ok and (d / "figures" / "fig2_loss.png").stat().st_size > 0
        row.add(ok, lost(self.fp, d, "metrics"), short(msg, d))

    def real_full_disk(self) -> None:
        mnt = self.root / "small"
        mnt.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
        if r.returncode:
            print(f"   real full disk skipped: cannot mount a tmpfs ({r.stderr.strip()})")
            return
        try:
            row = self.row("a real full disk (192 KiB tmpfs), then space freed")
            d = mnt / "run"
            r = hierlab("corpus", str(self.cfg), "--out", str(d))
            msg = message(r.stderr, "error:")
            ok = r.returncode == 1 and "no space left on device" in msg
            subprocess.run(["mount", "-o", "remount,size=16m", str(mnt)], check=True)
            ok = ok and hierlab("corpus", str(self.cfg), "--out", str(d)).returncode == 0
            row.add(ok, lost(self.fp, d, "corpus"), short(msg, d))
        finally:
            subprocess.run(["umount", "-l", str(mnt)], check=False)

    # --- 5. hub revisions that fail
    def hub(self) -> None:
        row = self.row("hub revisions: missing, removed mid-sweep, truncated, corrupt")
        tests = Path(__file__).parents[1] / "tests"
        sys.path[:0] = [str(tests / "integration"), str(tests)]  # the test, its helpers
        from test_faults_hub import make_hub_cache

        repo = "allenai/OLMo-tiny-hf"
        revs = [f"step{i}000-tokens{4 * i}B" for i in range(1, 6)]
        cache = self.root / "hf"
        store = make_hub_cache(cache, repo, revs[:4])  # revs[4]: never published

        def weights(rev: str) -> Path:
            commit = (store / "refs" / rev).read_text()
            return Path(os.path.realpath(store / "snapshots" / commit / "model.safetensors"))

        w = weights(revs[1])
        w.write_bytes(w.read_bytes()[:1000])  # truncated download
        w = weights(revs[2])
        data = bytearray(w.read_bytes())
        data[-1] ^= 0xFF  # a flipped byte: fails its checksum
        w.write_bytes(bytes(data))
        d = self.fresh()
        env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
        args = ("probe", str(self.cfg), "--out", str(d), "--checkpoints",
                f"hub:{repo}@{','.join(revs)}", "--probes", "hydra")
        p = start(*args, env=env)
        parts = d / "metrics" / ".parts"
        wait_for(lambda: bool(list(parts.rglob("*.parquet"))), p)
        shutil.rmtree(store / "snapshots" / (store / "refs" / revs[3]).read_text())  # removed
        _, err = p.communicate(timeout=600)
        failed = json.loads((d / "metrics" / "failed_checkpoints.json").read_text())
        got = {e["revision"]: e for e in failed["checkpoints"]}
        ok = p.returncode == 0 and set(got) == set(revs[1:])
        ok = ok and "truncated" in got[revs[1]]["reason"]
        ok = ok and "checksum" in got[revs[2]]["reason"]
        # repaired hub: only the failed revisions are probed again
        fresh = make_hub_cache(self.root / "hf-fixed", repo, revs)
        shutil.rmtree(store)
        shutil.copytree(fresh, store, symlinks=True)
        before = {p.name for p in parts.rglob("*.parquet")}
        r = hierlab(*args, env=env)
        after = {p.name for p in parts.rglob("*.parquet")}
        ok = ok and r.returncode == 0 and len(after - before) == 4 and before <= after
        ok = ok and not (d / "metrics" / "failed_checkpoints.json").exists()
        import pandas as pd

        steps = set(pd.read_parquet(d / "metrics" / "hydra.parquet").step)
        msg = "; ".join(f"{e['stage']}: {e['reason'][:60]}" for e in got.values())
        row.add(ok, [] if steps == {1000, 2000, 3000, 4000, 5000} else ["hydra.parquet"],
                short(f"recorded in metrics/failed_checkpoints.json ({msg})", d))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="SIGTERM-during-train trials")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma list of trials to run (default: all; "
                    "an unknown name lists them), e.g. kill_at_checkpoints")
    a = ap.parse_args()
    random.seed(a.seed)
    root = a.keep or Path(tempfile.mkdtemp(prefix="hierlab-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    WORK.append(root)
    t = Trials(root, a.repeats)
    plan: list[tuple[str, Callable[[], None]]] = [
        ("signal_train", lambda: t.signal_train(signal.SIGTERM, a.repeats)),
        ("sigint_train", lambda: t.signal_train(signal.SIGINT, 1)),
        ("kill_at_checkpoints", t.kill_at_checkpoints),
        ("signal_probe", t.signal_probe), ("signal_corpus", t.signal_corpus),
        ("signal_sweep", t.signal_sweep), ("second_writer", t.second_writer),
        ("stale_lock", t.stale_lock), ("dask_worker", t.dask_worker), ("enospc", t.enospc),
        ("real_full_disk", t.real_full_disk), ("hub", t.hub),
    ]
    only = {s for s in a.only.split(",") if s}
    if only - {name for name, _ in plan}:
        ap.error(f"--only: unknown trial(s) {sorted(only - {n for n, _ in plan})} "
                 f"(trials: {', '.join(n for n, _ in plan)})")
    t0 = time.time()
    t.reference()
    for name, fn in plan:
        if not only or name in only:
            fn()
    print(f"\n{len(t.rows)} faults in {time.time() - t0:.0f} s (work folder {root})\n")
    print("| fault | trials | survived | data lost | message shown |")
    print("|---|---|---|---|---|")
    for r in t.rows:
        msg = " / ".join(f"`` {m} ``" for m in r.messages[:1]).replace("|", "\\|")
        print(f"| {r.fault} | {r.trials} | {r.survived} | {r.lost} | {msg} |")
    if a.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    bad = [r for r in t.rows if r.survived < r.trials or r.lost]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
