"""Probe throughput: the full suite (all probes, both variants) on one random-init checkpoint.

Default: the reference 17 M model (LlamaConfig hidden 256, 16 layers, 4 heads,
intermediate 1024, vocab 1003, context 512) with a random-token pcfg-layout test split,
probe config = the reference defaults (target on a 2-core CPU: <= 60 s in total).
``--olmo-size``: a random-init OlmoConfig shaped like OLMo-1B (16 layers, d 2048, 16 heads,
vocab 50304, context 2048) probed as an external model (random-id Hydra samples, no
corpus), meant for ``--device cuda``.

    python benchmarks/probe_throughput.py [--device cpu|cuda] [--olmo-size] [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _build(olmo: bool) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM, OlmoConfig, OlmoForCausalLM

    torch.manual_seed(0)
    if olmo:
        cfg = OlmoConfig(vocab_size=50304, hidden_size=2048, intermediate_size=8192,
                         num_hidden_layers=16, num_attention_heads=16,
                         max_position_embeddings=2048, pad_token_id=1, eos_token_id=50279)
        return OlmoForCausalLM(cfg)
    cfg = LlamaConfig(vocab_size=1003, hidden_size=256, intermediate_size=1024,
                      num_hidden_layers=16, num_attention_heads=4, max_position_embeddings=512)
    return LlamaForCausalLM(cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--olmo-size", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from hierlab.probes.checkpoints import Checkpoint, load_model
    from hierlab.probes.config import ProbesConfig
    from hierlab.probes.context import ProbeContext
    from hierlab.probes.hooks import HookedModel
    from hierlab.probes.runner import probe_checkpoint

    pc = ProbesConfig()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ck_dir = root / "ckpt"
        _build(args.olmo_size).save_pretrained(ck_dir)
        manifest = reader = None
        if not args.olmo_size:
            from hierlab.corpus.shards import SplitReader, write_split

            rng = np.random.default_rng(0)
            toks = rng.integers(0, 1001, size=120_000).astype(np.uint16)
            roles = {"subject": [0, 300], "verb": [300, 600], "object": [600, 900],
                     "connector": [900, 1000]}
            split = root / "test"
            write_split(split, [toks], manifest={
                "corpus": "pcfg", "split": "test", "kind": "pcfg", "vocab_size": 1003,
                "eos_id": 1000, "pad_id": 1002, "unk_id": 1001, "boundary_id": None,
                "roles": roles})
            reader = SplitReader(split)
            manifest = reader.manifest
        t0 = time.perf_counter()
        model, tok = load_model(ck_dir, args.device, args.dtype)
        hm = HookedModel(model)
        ck = Checkpoint("run" if manifest else "local:bench", "bench", 0, path=ck_dir)
        ctx = ProbeContext(pc, ck, hm, tok, manifest, reader)
        load_s = time.perf_counter() - t0
        print(f"model: {'OLMo-1B-size' if args.olmo_size else 'reference 17M'} "
              f"({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params), "
              f"device {args.device}, threads {torch.get_num_threads()}")
        print(f"{'load':<22}{load_s:8.2f} s")
        # calibration: plain HF forward speed on this machine right now (shared CPUs vary)
        ids = torch.randint(0, 1000, (4, 512), device=args.device)
        with torch.no_grad():
            model(input_ids=ids[:1, :64], use_cache=False)
            t = time.perf_counter()
            model(input_ids=ids, use_cache=False, logits_to_keep=1)
            cal = time.perf_counter() - t
        print(f"{'calibration':<22}{cal:8.2f} s  (plain forward {ids.numel() / cal:,.0f} tokens/s)")
        total = load_s
        for probe in ("induction", "fv", "hydra", "structure"):
            for variant in ("reference", "standard"):
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t = time.perf_counter()
                rows = probe_checkpoint(ctx, probe, variant)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t
                total += dt
                print(f"{probe + '/' + variant:<22}{dt:8.2f} s  ({len(rows)} rows)")
        print(f"{'total':<22}{total:8.2f} s")


if __name__ == "__main__":
    main()
