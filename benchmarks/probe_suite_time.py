"""Probe-suite seconds per checkpoint on a finished run, with and without a probe.

Times every registered (probe, variant) unit on the same checkpoints of ``RUN`` (loaded
once per checkpoint, as the runner does), interleaved, and prints the suite's seconds per
checkpoint without ``--probe`` and with it, and their ratio. Nothing is written to the run.

    python benchmarks/probe_suite_time.py runs/quickstart [--probe mechanism] [--every 3]
        [--config quickstart]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hierlab import config as hconfig
from hierlab.probes.checkpoints import discover_checkpoints, load_model
from hierlab.probes.context import ProbeContext, corpus_data
from hierlab.probes.hooks import HookedModel
from hierlab.probes.runner import probe_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a finished run directory")
    ap.add_argument("--probe", default="mechanism", help="the probe whose cost is measured")
    ap.add_argument("--every", type=int, default=3, help="time every n-th checkpoint")
    ap.add_argument("--config", default=None,
                    help="take the probes section from this config (default: the run's)")
    a = ap.parse_args()
    cfg = hconfig.load_config(a.config or a.run / "config.yml")
    pc = cfg.probes
    ckpts = discover_checkpoints(None, a.run, pc.hub)[:: a.every]
    base = {p: 0.0 for p in pc.probes}
    for ck in ckpts:
        tok_dir = a.run / "corpus" / ck.corpus / "tokenizer"
        model, tok = load_model(ck.path, "cpu", pc.dtype, tok_dir)
        manifest, reader = corpus_data(ck)
        ctx = ProbeContext(pc, ck, HookedModel(model), tok, manifest, reader)
        for probe in pc.probes:
            for variant in pc.variants:
                t0 = time.perf_counter()
                probe_checkpoint(ctx, probe, variant)
                base[probe] += time.perf_counter() - t0
    n = len(ckpts)
    without = sum(v for p, v in base.items() if p != a.probe) / n
    with_ = sum(base.values()) / n
    for p, v in base.items():
        print(f"{p:>10}: {v / n:6.2f} s per checkpoint")
    print(f"{n} checkpoints; suite without {a.probe}: {without:.2f} s per checkpoint, "
          f"with it: {with_:.2f} s ({with_ / without:.2f}x)")


if __name__ == "__main__":
    main()
