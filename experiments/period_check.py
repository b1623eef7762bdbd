"""Is the quickstart's copy head an induction head, or does it key on the sentence period?

With the quickstart grammar every sentence is 16 tokens long, so "the token after the
earlier copy of this token" in a copied sentence is also "the token 16k - 1 back". A head
that attends by *position* (multiples of the period) scores on the random-token induction
metrics whenever the half length n is a multiple of 16 (the reference's n = 64 is). A
content-based induction head scores the same for every n. This script scores every head
of a checkpoint on repeated random content ids for several n, with hierlab's own probe
functions (``attention_scores``), and prints the per-n maxima.

    python experiments/period_check.py runs/quickstart [--model pcfg] [--step -1]
"""

from __future__ import annotations

import argparse

from hierlab import load_run
from hierlab.probes.induction import attention_scores, repeated_random_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a hierlab run directory")
    ap.add_argument("--model", default="pcfg", help="model (corpus) name")
    ap.add_argument("--step", type=int, default=-1, help="checkpoint step (-1 = last)")
    ap.add_argument("--ns", default="56,60,63,64,65,68,72", help="half lengths to score")
    ap.add_argument("--samples", type=int, default=20)
    args = ap.parse_args()
    run = load_run(args.run)
    steps = run.steps(args.model)
    step = steps[-1] if args.step == -1 else args.step
    hm = run.load_checkpoint(step, args.model)
    ind = run.config.probes.induction if run.config is not None else None
    id_range = tuple(ind.id_range) if ind is not None and ind.id_range else None
    vocab = hm.vocab_size
    print(f"{args.run} {args.model} step {step}: max over heads, {args.samples} prompts")
    print(f"{'n':>4} {'prefix matching (i-n+1)':>24} {'duplicate / reference (i-n)':>28}")
    for n in (int(x) for x in args.ns.split(",")):
        toks = repeated_random_tokens(args.samples, n, vocab, seed=0, id_range=id_range)
        sc = attention_scores(hm, toks, n, k_max=1)
        pm = sc["prefix_matching"].mean(0)
        ref = sc["reference"][:, 0].mean(0)
        li, hi = divmod(int(pm.argmax()), pm.shape[1])
        print(f"{n:>4} {float(pm.max()):>17.3f} (L{li}H{hi}) {float(ref.max()):>21.3f}")


if __name__ == "__main__":
    main()
