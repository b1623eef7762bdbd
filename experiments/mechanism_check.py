"""The mechanism labels on models whose mechanism is known from their data.

Trains a 2-layer Llama (HF ``LlamaForCausalLM``, 128 wide, 4 heads) on repeated random ids
and labels its heads at log-spaced checkpoints with hierlab's mechanism probe
(:func:`hierlab.probes.mechanism.mechanism_rows`) on fresh windows of the same design:

* ``fixed``: ``C/2`` random ids, then the same ``C/2`` again. Copying ``C/2 - 1`` back is
  enough, so a *positional* head forms within ~0.1 M tokens (prefix matching 1 at n = C/2,
  ~0 at the other lengths, content share 0): it must be labelled ``positional copy``.
* ``random``: a segment of random length (8..C/2) repeated at a random offset, the rest
  random ids: only a head that matches token identity can copy, so the first copy head
  that forms is a content induction head; this script finds the budget at which it forms.

Usage::

    python experiments/mechanism_check.py fixed --tokens 1e5
    python experiments/mechanism_check.py random --tokens 3e7 --device cuda --batch 32

Prints one JSON line per checkpoint (tokens, loss, label, scores of the labelled head) and
a final ``SUMMARY`` line; ``--out FILE`` writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hierlab.contracts import MECHANISM_LABELS
from hierlab.probes import mechanism_scores as ms
from hierlab.probes.config import MechanismConfig
from hierlab.probes.hooks import HookedModel
from hierlab.probes.mechanism import mechanism_rows


def windows(design: str, n: int, context: int, vocab: int, g: np.random.Generator
            ) -> torch.Tensor:
    """``[n, C]`` ids of one design (module docstring)."""
    x = g.integers(0, vocab, (n, context))
    for i in range(n):
        if design == "fixed":
            half = context // 2
            x[i, half : 2 * half] = x[i, :half]
        else:
            length = int(g.integers(8, context // 2 + 1))
            at = int(g.integers(0, context - 2 * length + 1))
            x[i, at + length : at + 2 * length] = x[i, at : at + length]
    return torch.from_numpy(x)


def summary_of(rows: list[dict]) -> dict:
    """The labelled head's label and scores from a checkpoint's mechanism rows."""
    get = {r["metric"]: r for r in rows if r["layer"] is not None or r["head"] is None}
    lab = get["label_model"]
    out = {"label": MECHANISM_LABELS[int(lab["value"])], "layer": lab["layer"],
           "head": lab["head"]}
    for key, metric in (("successor", "successor_best"), ("content_share", "content_share_best"),
                        ("causal_share", "causal_share_best")):
        out[key] = round(float(get[metric]["value"]), 4)
    pm = {r["k"]: round(float(r["value"]), 4) for r in rows
          if r["metric"] == "prefix_matching_random" and r["layer"] == lab["layer"]
          and r["head"] == lab["head"]}
    out["prefix_matching"] = pm
    out["successor_upper_max"] = round(float(get["successor_upper_max"]["value"]), 4)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("design", choices=["fixed", "random"], help="the data design")
    ap.add_argument("--tokens", type=float, default=1e5, help="training tokens")
    ap.add_argument("--context", type=int, default=128, help="window length C")
    ap.add_argument("--batch", type=int, default=8, help="windows per step B")
    ap.add_argument("--vocab", type=int, default=96, help="random ids 0..V-1")
    ap.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate")
    ap.add_argument("--checkpoints", type=int, default=10, help="log-spaced checkpoints")
    ap.add_argument("--windows", type=int, default=24, help="probe windows per checkpoint")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--seed", type=int, default=0, help="init and data seed")
    ap.add_argument("--out", default=None, help="write the rows and summary as JSON here")
    a = ap.parse_args(argv)
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)
    cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=128, intermediate_size=512,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=a.context, tie_word_embeddings=False,
                      attn_implementation="sdpa")
    net = LlamaForCausalLM(cfg).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1)
    steps = max(1, int(a.tokens // (a.batch * a.context)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 30))
    evals = sorted({0, steps, *(int(round(x)) for x in np.geomspace(10, steps, a.checkpoints))})
    g_train = np.random.default_rng(a.seed)
    probe_w = windows(a.design, a.windows, a.context, a.vocab, np.random.default_rng(12345))
    role_of = ms.token_roles(a.vocab, None, [])
    mcfg = MechanismConfig(windows=a.windows, random_samples=8)
    hist, t0 = [], time.time()
    for step in range(steps + 1):
        if step in evals:
            net.eval()
            hm = HookedModel(net)
            with torch.no_grad():
                loss = net(input_ids=probe_w.to(dev), labels=probe_w.to(dev)).loss.item()
            rec = {"step": step, "tokens": step * a.batch * a.context, "loss": round(loss, 4),
                   **summary_of(mechanism_rows(hm, probe_w, role_of, mcfg)),
                   "elapsed_s": round(time.time() - t0, 1)}
            hist.append(rec)
            print(json.dumps(rec), flush=True)
            net.train()
        if step == steps:
            break
        x = windows(a.design, a.batch, a.context, a.vocab, g_train).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = net(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    first = next((h["tokens"] for h in hist if h["label"] == "content induction"), None)
    summary = {"design": a.design, "args": vars(a), "steps": steps,
               "final": hist[-1], "first_content_induction_tokens": first,
               "ln_vocab": round(math.log(a.vocab), 4),
               "law_tokens": round(10**5.7 * math.sqrt(a.batch * a.context))}
    print("SUMMARY " + json.dumps(summary), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"summary": summary, "checkpoints": hist}, f)
    return summary


if __name__ == "__main__":
    main()
