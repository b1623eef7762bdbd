"""Are the compiled kernels' gradients as exact as the uncompiled ones?

On the flat-copy design the compiled run with eager attention (``attention: auto`` on CPU)
sat on its no-context floor while the uncompiled runs and the compiled SDPA run left it.
This loads one checkpoint, takes training windows of its corpus and compares each
kernel's gradient, under bf16 autocast, with the fp32 uncompiled gradient: the relative
error ``|g - g_fp32| / |g_fp32|`` per parameter group (query/key projections, where a
copy circuit starts, and all parameters).

    python benchmarks/compile_gradients.py runs/emergence-flat/runs/flat --step 840
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaForCausalLM

from hierlab.train.data import TokenWindows
from hierlab.train.kernels import autocast, deterministic


def grads(model: LlamaForCausalLM, x: torch.Tensor, attn: str, compiled: bool,
          precision: str) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    model.set_attn_implementation(attn)
    fwd = torch.compile(model) if compiled else model
    with deterministic(compiled), autocast(torch.device("cpu"), precision):
        loss = fwd(input_ids=x, labels=x).loss
    loss.backward()
    return {n: p.grad.detach().float().clone() for n, p in model.named_parameters()}


def rel(g: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], key: str) -> float:
    names = [n for n in ref if key in n]
    num = sum(float((g[n] - ref[n]).pow(2).sum()) for n in names)
    den = sum(float(ref[n].pow(2).sum()) for n in names)
    return (num / den) ** 0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a run directory (corpus/ and models/)")
    ap.add_argument("--step", type=int, default=840, help="checkpoint step")
    ap.add_argument("--windows", type=int, default=16, help="training windows in the batch")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args()
    run = json.loads(next((a.run / "models").glob("*/run.json")).read_text())
    name, ctx = run["corpus"], run["context_length"]
    model = LlamaForCausalLM.from_pretrained(
        a.run / "models" / name / "checkpoints" / f"step-{a.step:08d}")
    model.train()
    win = TokenWindows(a.run / "corpus" / name / "train", ctx)
    idx = np.random.default_rng(0).choice(win.n_windows, a.windows, replace=False)
    x = torch.from_numpy(next(win.iter_batches(np.sort(idx), a.windows)).astype(np.int64))
    ref = grads(model, x, "eager", False, "fp32")
    rows = {}
    for label, attn, comp in [("eager", "eager", False), ("sdpa", "sdpa", False),
                              ("compiled eager", "eager", True),
                              ("compiled sdpa", "sdpa", True)]:
        g = grads(model, x, attn, comp, "bf16")
        rows[label] = {k: rel(g, ref, k) for k in ("q_proj", "k_proj", "v_proj", "")}
        print(f"{label:>15}: " + "  ".join(f"{k or 'all'} {v:.3g}"
                                           for k, v in rows[label].items()), flush=True)
    if a.json:
        a.json.write_text(json.dumps({"run": str(a.run), "step": a.step, "rel_error": rows}))


if __name__ == "__main__":
    main()
