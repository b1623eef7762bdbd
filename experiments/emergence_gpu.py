"""The content-induction search on one GPU, in one call of at most ~9 minutes.

1. **Search**: ``hierlab sweep configs/emergence-gpu.yml`` with ``--parallel P`` (runs
   share the GPU, one CPU thread each), stopped at ``--search-until`` seconds; rows not
   finished by then are reported as incomplete, never guessed.
2. **Seeds**: the three best finished search rows -- ranked by (final label is ``content
   induction``, earliest token count at which the label first reads so, highest successor
   attention of a layer >= 1 head), law-*, *-2x and control rows excluded -- rerun with
   training seeds 1 and 2 (a second sweep file written next to the results).
3. **Results**: both sweeps' summaries and, per run, the metrics tables, loss/eval CSVs,
   run.json, claims and the Fig. 3 mechanism panel, packed into ``RESULTS/emergence.tgz``.

A sweep file whose runs name an ``arm`` (``configs/emergence-arms-gpu.yml``, the matched
arms) skips step 2: its seeds are its own rows, and the sweep's emergence statistics
(``emergence.csv``, ``emergence_stats.csv``, ``kaplan_meier.png``) are packed too.

Usage (the wrapper ``experiments/emergence_gpu.sh`` adds the offline wheels)::

    python experiments/emergence_gpu.py configs/emergence-gpu.yml --out /tmp/em --results $OUT
    python experiments/emergence_gpu.py configs/emergence-gpu.yml --dry-run --out /tmp/em-dry
    python experiments/emergence_gpu.py configs/emergence-arms-gpu.yml --dry-run --out /tmp/ea

``--dry-run`` runs three rows and the control at toy size on the CPU (checks the plumbing).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pandas as pd
import yaml

DRY = {"training.max_tokens": 40000, "training.batch_size": 8, "training.micro_batch_size": 8,
       "training.device": "cpu", "probes.device": "cpu", "training.checkpoints":
       {"schedule": "log", "count": 3}, "probes.mechanism.windows": 4,
       "probes.mechanism.random_samples": 2, "probes.mechanism.permuted_samples": 2}
DRY_PCFG = {"corpora.pcfg.train_documents": 60, "corpora.pcfg.test_documents": 20}
EXCLUDED = ("law-", "ngram", "-2x", "layers1", "prevcopy")
KEEP = ("summary.csv", "summary.parquet", "summary_figure.png", "timings.json", "config.yml",
        "claims.csv", "eval.csv", "loss.csv", "run.json", "mechanism.parquet",
        "induction.parquet", "fig3_mechanism.png", "log.txt", "emergence.csv",
        "emergence_stats.csv", "kaplan_meier.png", "kaplan_meier.csv")
#: the arms dry run: two arms, two seeds each, at toy size
DRY_ARMS = ("F", "H")
DRY_SEEDS = (0, 1)


def sweep_cmd(path: Path, out: Path, parallel: int) -> list[str]:
    return [sys.executable, "-m", "hierlab", "sweep", str(path), "--out", str(out),
            "--parallel", str(parallel)]


def run_until(cmd: list[str], until: float, log: Path) -> int | None:
    """Run ``cmd`` in its own process group; SIGTERM it (then SIGKILL) at time ``until``."""
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        while proc.poll() is None:
            if time.time() > until:
                print(f"deadline: stopping {' '.join(cmd[3:5])}", flush=True)
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                return None
            time.sleep(2)
    return proc.returncode


def summarize(path: Path, out: Path) -> pd.DataFrame:
    subprocess.run([sys.executable, "-m", "hierlab", "sweep", str(path), "--out", str(out),
                    "--summary-only"], check=False, stdout=subprocess.DEVNULL)
    f = out / "summary.csv"
    return pd.read_csv(f) if f.exists() else pd.DataFrame()


def best_rows(df: pd.DataFrame, n: int = 3) -> list[str]:
    """The module docstring's ranking over finished PCFG search rows."""
    if not len(df) or "mechanism_label" not in df:
        return []
    d = df[(df["kind"] == "pcfg") & (df["status"] == "finished")]
    d = d[~d["run"].astype(str).str.contains("|".join(EXCLUDED), regex=True)]
    if not len(d):
        return []
    d = d.assign(_ind=(d["mechanism_label"] == "content induction").astype(int),
                 _tok=d["content_induction_tokens"].fillna(math.inf),
                 _succ=d["successor_l1:max"].fillna(-1.0))
    d = d.sort_values(["_ind", "_tok", "_succ"], ascending=[False, True, False])
    return list(d["run"].astype(str).head(n))


def seeds_sweep(src: Path, names: list[str], dest: Path) -> Path:
    """A sweep file with rows ``<name>-seed1/2``: the same overrides, training seeds 1, 2."""
    spec = yaml.safe_load(src.read_text())
    rows = {r["name"]: r.get("set", {}) for r in spec["runs"]}
    spec["name"] = spec["name"] + "-seeds"
    spec["base"] = str((src.parent / spec["base"]).resolve())
    spec["runs"] = [{"name": f"{n}-seed{s}", "set": {**rows[n], "training.seed": s}}
                    for n in names for s in (1, 2)]
    dest.write_text(yaml.safe_dump(spec, sort_keys=False))
    return dest


def is_arms(src: Path) -> bool:
    """Whether the sweep file's runs name arms (the matched-arms comparison)."""
    return any("arm" in r for r in yaml.safe_load(src.read_text()).get("runs", []))


def dry_sweep(src: Path, dest: Path) -> Path:
    spec = yaml.safe_load(src.read_text())
    spec["base"] = str((src.parent / spec["base"]).resolve())
    if is_arms(src):
        keep = [r for r in spec["runs"]
                if r.get("arm") in DRY_ARMS and r.get("seed") in DRY_SEEDS]
        shared = {k: v for k, v in spec.get("set", {}).items() if not k.startswith("probes.")}
        spec["set"] = {**shared, "corpora.flat.train_sentences": 4000,
                       "corpora.flat.test_sentences": 200}
    else:
        keep = [r for r in spec["runs"] if r["name"] in ("recall-k4", "distant-0.5", "mqar-a4",
                                                         "ngram-control")]
    for r in keep:
        extra = DRY_PCFG if r["name"] not in ("ngram-control",) and not is_arms(src) else {}
        r["set"] = {**r.get("set", {}), **DRY, **extra}
    spec["runs"] = keep
    dest.write_text(yaml.safe_dump(spec, sort_keys=False))
    return dest


def pack(dirs: list[Path], dest: Path) -> None:
    with tarfile.open(dest, "w:gz") as tar:
        for d in dirs:
            if not d.exists():
                continue
            for f in sorted(d.rglob("*")):
                if f.is_file() and f.name in KEEP and "checkpoints" not in f.parts:
                    tar.add(f, arcname=str(Path(d.name) / f.relative_to(d)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", type=Path, help="the search's sweep file")
    ap.add_argument("--out", type=Path, default=Path("/tmp/emergence"), help="work folder")
    ap.add_argument("--results", type=Path, default=None, help="where emergence.tgz goes")
    ap.add_argument("--parallel", type=int, default=16, help="runs at once")
    ap.add_argument("--search-until", type=float, default=400.0,
                    help="seconds from start at which the search is stopped")
    ap.add_argument("--seeds-until", type=float, default=520.0,
                    help="seconds from start at which the seed reruns are stopped")
    ap.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU")
    a = ap.parse_args(argv)
    t0 = time.time()
    a.out.mkdir(parents=True, exist_ok=True)
    results = a.results or a.out
    results.mkdir(parents=True, exist_ok=True)
    log = results / "emergence_log.txt"
    sweep = dry_sweep(a.sweep, a.out / "dry.yml") if a.dry_run else a.sweep
    search = a.out / "search"
    rc = run_until(sweep_cmd(sweep, search, a.parallel), t0 + a.search_until, log)
    df = summarize(sweep, search)
    print(f"search: exit {rc}, {int((df.get('status') == 'finished').sum()) if len(df) else 0}"
          f" rows finished at {time.time() - t0:.0f} s", flush=True)
    best = [] if is_arms(sweep) else best_rows(df)
    print(f"best rows: {best}", flush=True)
    dirs = [search]
    if best and not is_arms(sweep) and time.time() - t0 < a.seeds_until - 60:
        seeds = seeds_sweep(sweep, best, a.out / "seeds.yml")
        out2 = a.out / "seeds"
        rc2 = run_until(sweep_cmd(seeds, out2, min(a.parallel, 2 * len(best))),
                        t0 + a.seeds_until, log)
        df2 = summarize(seeds, out2)
        print(f"seeds: exit {rc2}, {len(df2)} rows at {time.time() - t0:.0f} s", flush=True)
        dirs.append(out2)
    pack(dirs, results / "emergence.tgz")
    cols = [c for c in ("run", "model", "status", "final_test_loss", "mechanism_label",
                        "successor_l1:max", "content_share", "causal_share",
                        "content_induction_tokens", "law_tokens", "train_seconds")
            if c in df]
    if len(df):
        print(df[cols].to_string(), flush=True)
    print(f"done in {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
