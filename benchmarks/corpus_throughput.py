"""Corpus generation throughput and peak memory, at 1 and 2 workers.

Measures whole shard jobs (sampling, de-duplication against the reference-size test split,
Arrow write, fsync, checksum) for PCFG train generation with the reference grammar and
for n-gram generation with the reference process, each configuration in a fresh
subprocess so peak RSS is clean. Peak memory is reported for two corpus sizes to show it
is flat in corpus size (bounded by the shard size).

Reference generator (compiled Rust, a 2-core AMD EPYC VM, whole process): PCFG
7.65 M train tokens/s on 1 core (12.65 M on 2), n-gram 11.0 M tokens/s (19.5 M on 2),
memory growing ~0.5-0.7 GiB per million PCFG training documents.

    python benchmarks/corpus_throughput.py            # full comparison (~2-3 minutes)
    python benchmarks/corpus_throughput.py --quick    # smaller sizes
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REFERENCE = {("pcfg", 1): 7.65e6, ("pcfg", 2): 12.65e6, ("ngram", 1): 11.0e6, ("ngram", 2): 19.5e6}


def _single(kind: str, workers: int, units: int, test_units: int) -> dict:
    from hierlab.corpus.config import NgramConfig, PcfgConfig
    from hierlab.corpus.generate import build_shard, generate_shards, save_test_set
    from hierlab.corpus.shards import write_manifest

    if kind == "pcfg":
        cfg = PcfgConfig(train_documents=units // 10, test_documents=test_units,
                         documents_per_shard=50_000)
    else:
        cfg = NgramConfig(train_sentences=units, test_sentences=test_units,
                          sentences_per_shard=100_000)
    out = Path(tempfile.mkdtemp(prefix="hierlab-bench-"))
    test_dir, train_dir = out / "test", out / "train"
    recs = generate_shards(cfg, "test", test_dir)
    write_manifest(test_dir, recs, vocab_size=1003, eos_id=cfg.eos_id)
    if kind == "pcfg":  # as generate_shards does first: the driver builds the table, untimed
        save_test_set(cfg, test_dir)
    if workers == 1:  # warm the compiled kernels and the test table outside the timing
        build_shard(cfg.model_dump_json(), "train", 0, str(out / "warm"))
    t0 = time.perf_counter()
    recs = generate_shards(cfg, "train", train_dir, workers=workers)
    dt = time.perf_counter() - t0
    tokens = sum(r["tokens"] for r in recs)
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return {"kind": kind, "workers": workers, "units": units, "tokens": tokens, "seconds": dt,
            "tokens_per_s": tokens / dt, "peak_rss_gib": max(self_rss, child_rss)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller corpora (~30 s)")
    ap.add_argument("--single", nargs=4, metavar=("KIND", "WORKERS", "UNITS", "TEST"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.single:
        k, w, u, t = args.single
        print(json.dumps(_single(k, int(w), int(u), int(t))))
        return
    scale = 0.25 if args.quick else 1.0
    pcfg_docs = int(2_000_000 * scale)  # realisations: ~200 M tokens
    ngram_sents = int(3_000_000 * scale)
    runs = [("pcfg", w, pcfg_docs, 100_000) for w in (1, 2)]
    runs += [("ngram", w, ngram_sents, 1000) for w in (1, 2)]
    runs += [("pcfg", 2, pcfg_docs // 4, 100_000)]  # memory vs corpus size
    print(f"{'kind':6} {'workers':>7} {'units':>10} {'tokens':>12} {'M tok/s':>8} "
          f"{'x ref':>6} {'peak RSS GiB':>12}")
    for kind, w, u, t in runs:
        res = subprocess.run([sys.executable, __file__, "--single", kind, str(w), str(u), str(t)],
                             capture_output=True, text=True, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        ratio = r["tokens_per_s"] / REFERENCE[(kind, w)]
        print(f"{kind:6} {w:>7} {u:>10,} {r['tokens']:>12,} {r['tokens_per_s'] / 1e6:>8.2f} "
              f"{ratio:>6.2f} {r['peak_rss_gib']:>12.2f}", flush=True)
    print("pcfg: reference test split (100k base docs x 10) used for exact de-duplication; "
          "'x ref' = tokens/s over the reference Rust generator's on that 2-core VM.")


if __name__ == "__main__":
    main()
