"""GPU check: one table of what hierlab does on one (or two) GPUs.

Rows, each section in its own subprocess with its own timeout (a hang or a crash is a row
of the table, the other sections still run; all of it fits in ``--total`` seconds, 470 by
default, so the whole check takes <= 8 minutes):

* ``train``: tokens/s and MFU of the reference model (``ModelConfig()`` defaults, 16 x 256,
  ~17.3 M parameters on the 1000-word n-gram corpus; batch 256 x 512) for HF Trainer and
  hierlab's ``train_model``, in bf16 and fp16, eager and ``torch.compile`` (``--warmup``
  untimed steps, compile included, then ``--steps`` timed ones). The contenders are
  ``benchmarks/train_throughput.py``'s ``bench_hf`` / ``bench_hierlab``.
  MFU = (6 N + 12 L T d) x tokens/s / peak, N = all parameters, L layers, T context,
  d width (the attention term per token); peak = 989.4 TFLOP/s (H100/H200 dense bf16/fp16),
  312 (A100), else n/a.
* ``probes``: seconds of the full probe suite (every probe, both variants) on a random-init
  OLMo-1B-sized ``OlmoConfig`` (2048 x 16 layers, 16 heads, 8192 FFN, vocab 50304, context
  2048), saved as bf16 safetensors and probed through ``run_probes`` with the ``olmo-1b``
  preset's probe settings. Its tokenizer is a byte-level BPE trained offline on the
  word-list tasks, so the natural-language FV tasks run (if it cannot be built they are
  skipped, and the row says so).
* ``ddp``: ``torchrun --nproc-per-node 2 -m hierlab train`` tokens/s when >= 2 GPUs.

This file is the orchestrator (one child process per section, the table); the sections
live beside it: ``gpu_check_train.py`` (corpus, train, ddp), ``gpu_check_probes.py``
(probes), and what they share in ``gpu_check_common.py``.

Usage (``gpu_check.sh`` picks or prepares a Python with CUDA torch first)::

    bash benchmarks/gpu_check.sh                 # on the GPU machine; table also in $OUT
    python benchmarks/gpu_check.py --dry-run     # every section at toy sizes on CPU

Without CUDA (and without ``--dry-run``) it prints "gpu_check: no CUDA device; nothing to
measure" and exits 0. The table goes to stdout and, with ``--md`` or ``$OUT`` set, to
``$OUT/gpu_check.md``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpu_check_common import expected_rows, label, row

NO_CUDA = "gpu_check: no CUDA device; nothing to measure"
#: seconds per section on a GPU; the last number is what later sections are guaranteed
BUDGETS = {"corpus": (45, 20), "train": (75, 30), "train_compile": (150, 30),
           "probes": (180, 30), "ddp": (90, 30)}
#: section -> (module beside this file, function); a child process runs one
SECTIONS = {"corpus": ("gpu_check_train", "section_corpus"),
            "train": ("gpu_check_train", "section_train"),
            "train_compile": ("gpu_check_train", "section_train_compile"),
            "probes": ("gpu_check_probes", "section_probes"),
            "ddp": ("gpu_check_train", "section_ddp")}


# ------------------------------------------------------------------ orchestration (parent)
def run_section(name: str, a: argparse.Namespace, work: Path, timeout: float) -> list[dict]:
    """Run one section in a subprocess (own process group, killed whole on timeout); its
    rows as emitted, then one error row for each row it still owed."""
    result = work / f"{name}.jsonl"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--section", name, "--work",
           str(work), "--steps", str(a.steps), "--warmup", str(a.warmup)]
    cmd += ["--dry-run"] if a.dry_run else []
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=timeout)
        error = "" if proc.returncode == 0 else f"exit {proc.returncode}: " + " | ".join(
            (log or "").strip().splitlines()[-2:])[-300:]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        error = f"timeout: killed after {timeout:.0f} s"
    if a.verbose and log:
        print(log, end="", file=sys.stderr)
    rows = [json.loads(x) for x in result.read_text().splitlines()] if result.exists() else []
    done = {r["what"] for r in rows}
    missing = [w for w in expected_rows(name, a.dry_run) if w not in done]
    rows += [row(label(name), w, seconds=time.perf_counter() - t0, note=error or "no result")
             for w in missing]
    return rows


def fmt_table(rows: list[dict], header: str) -> str:
    def num(v: float | None, f: str) -> str:
        return "" if v is None else format(v, f)

    lines = [header, "", "| section | what | tokens/s | MFU | seconds | note |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    for r in rows:
        mfu = "n/a" if r["tps"] is not None and r["mfu"] is None else num(r["mfu"], ".1%")
        lines.append(f"| {r['section']} | {r['what']} | {num(r['tps'], ',.0f')} | {mfu} | "
                     f"{num(r['seconds'], '.1f')} | {r['note'].replace('|', '/')} |")
    lines += ["", "MFU = (6 N + 12 L T d) x tokens/s / peak (N all parameters, L layers, "
              "T context, d width); peak 989.4 TFLOP/s on H100/H200 (dense bf16/fp16), 312 on "
              "A100, else n/a. Each section ran in its own process under its own timeout."]
    return "\n".join(lines) + "\n"


def machine(dry: bool) -> tuple[str, int]:
    """(one line naming the machine and versions, number of GPUs)."""
    import torch

    import hierlab

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpu = f"{torch.cuda.get_device_name(0)} x{n}" if n else "CPU"
    mode = " (--dry-run: toy sizes, not a measurement)" if dry else ""
    return (f"gpu_check on {gpu}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
            f"hierlab {hierlab.__version__}, {time.strftime('%Y-%m-%d %H:%M')}{mode}", n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="toy sizes on CPU (the test)")
    ap.add_argument("--steps", type=int, help="timed steps (default 15; dry run 2)")
    ap.add_argument("--warmup", type=int, help="untimed steps first (default 5; dry run 1)")
    ap.add_argument("--total", type=float, default=470.0, help="seconds for all sections")
    ap.add_argument("--md", type=Path, help="also write the table here (default $OUT/...)")
    ap.add_argument("--verbose", action="store_true", help="pass the sections' logs through")
    ap.add_argument("--section", choices=sorted(SECTIONS), help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.steps = a.steps or (2 if a.dry_run else 15)
    a.warmup = a.warmup or (1 if a.dry_run else 5)
    if a.section:  # child: run one section, one JSON line per row as soon as it is measured
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        module, func = SECTIONS[a.section]
        section = getattr(importlib.import_module(module), func)
        with open(a.work / f"{a.section}.jsonl", "a") as fh:
            def emit(r: dict) -> None:
                fh.write(json.dumps(r) + "\n")
                fh.flush()
            section(a, a.work, emit)
        return 0
    import torch

    if not a.dry_run and not torch.cuda.is_available():
        print(NO_CUDA)
        return 0
    header, n_gpu = machine(a.dry_run)
    print(header, flush=True)
    order = ["corpus", "train", "train_compile", "probes", "ddp"]
    deadline = time.monotonic() + a.total
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        work = Path(tmp)
        for i, name in enumerate(order):
            if name == "ddp" and n_gpu < 2 and not a.dry_run:
                rows.append(row("ddp", expected_rows("ddp", False)[0],
                                note=f"skipped: {n_gpu} GPU"))
                continue
            later = sum(BUDGETS[s][1] for s in order[i + 1:])
            timeout = min(BUDGETS[name][0] * (3 if a.dry_run else 1),
                          deadline - time.monotonic() - later)
            no_corpus = name not in ("corpus", "probes") and not rows[0]["note"].endswith(
                "train tokens")  # what section_corpus notes when it made the corpus
            cpu_skip = a.dry_run and name == "train_compile"
            if timeout < 5 or no_corpus or cpu_skip:
                why = ("skipped in --dry-run (CPU: bf16, eager)" if cpu_skip else
                       "skipped: no corpus" if no_corpus else "skipped: out of time")
                got = [row(label(name), w, note=why) for w in expected_rows(name, a.dry_run)]
            else:
                got = run_section(name, a, work, timeout)
            rows += got
            for r in got:
                print(f"  {r['section']}: {r['what']}: "
                      + ", ".join(f"{k} {r[k]:.4g}" for k in ("tps", "mfu", "seconds")
                                  if r[k] is not None) + f" {r['note']}", flush=True)
    table = fmt_table(rows, header)
    print("\n" + table, end="")
    md = a.md or (Path(os.environ["OUT"]) / "gpu_check.md" if os.environ.get("OUT") else None)
    if md is not None:
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(table)
        print(f"table written to {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
