"""The GPU check's probe section: the full probe suite on a random-init OLMo-1B-sized model.

Runs in its own child process of ``benchmarks/gpu_check.py``: the model is saved as bf16
safetensors and probed through :func:`hierlab.probes.runner.run_probes` with the
``olmo-1b`` preset's probe section; its tokenizer is a byte-level BPE trained offline on the
word-list tasks, so the natural-language FV tasks run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from gpu_check_common import expected_rows, row


def nl_tokenizer(tasks: list[str]) -> Any:
    """A byte-level BPE (GPT-2 style) trained on the word-list prompts, built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from hierlab.probes.fv_tasks import load_word_list

    texts = [f"Q: {x}\nA: {y}\n\n" for t in tasks for x, y in load_word_list(t)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=4096, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>", "<|padding|>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   pad_token="<|padding|>")


def probes_config(dry: bool) -> Any:
    """The olmo-1b preset's probes section (toy sample counts in a dry run)."""
    from hierlab.config import load_config

    probes = load_config("olmo-1b").probes
    pc = probes.model_dump()
    if dry:
        pc["induction"].update(samples=2, n=8, batch_size=2)
        pc["hydra"].update(random_samples=2, random_length=32, standard_samples=2,
                           standard_length=16, layer_batch=4)
        pc["fv"].update(mean_prompts=4, cie_prompts=2, eval_prompts=4, n_shots=2,
                        batch_size=4, reference_pairs=2)
    return type(probes).model_validate(pc)


def section_probes(a: argparse.Namespace, work: Path, emit: Any) -> None:
    import pyarrow.parquet as pq
    import torch
    from transformers import OlmoConfig, OlmoForCausalLM

    from hierlab.probes.config import ALL_PROBES
    from hierlab.probes.runner import run_probes

    pc = probes_config(a.dry_run)
    ckpt = work / "olmo" / "step0"
    note = ""
    try:
        tok = nl_tokenizer(pc.fv.nl_tasks)
        tok.save_pretrained(ckpt)
    except Exception as err:  # no tokenizer: the word-list FV tasks cannot run
        tok = None
        pc = pc.model_copy(update={"fv": pc.fv.model_copy(update={"nl_tasks": []})})
        note = f"nl tasks skipped (no tokenizer: {type(err).__name__}: {err}); "
    shape = (dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=128, vocab_size=4096, max_position_embeddings=256)
             if a.dry_run else
             dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=16,
                  intermediate_size=8192, vocab_size=50304, max_position_embeddings=2048))
    dev = "cpu" if a.dry_run else "cuda"
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(dev):
        model = OlmoForCausalLM(OlmoConfig(**shape, pad_token_id=1, eos_token_id=0))
    model.to(torch.bfloat16).save_pretrained(ckpt)
    n = sum(p.numel() for p in model.parameters())
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    built = time.perf_counter() - t0
    t0 = time.perf_counter()
    paths = run_probes(pc, work / "probe-run", checkpoints=str(ckpt), probes=list(ALL_PROBES),
                       variant="both", device=dev)
    secs = time.perf_counter() - t0
    rows = ", ".join(f"{p} {pq.read_metadata(f).num_rows}" for p, f in paths.items())
    if tok is not None:
        note += f"nl tasks {', '.join(pc.fv.nl_tasks)} (offline BPE, {len(tok)} ids); "
    note += (f"{n / 1e6:,.1f} M params bf16 (built+saved in {built:.0f} s, not counted); "
             f"rows: {rows}")
    emit(row("probes", expected_rows("probes", a.dry_run)[0], seconds=secs, note=note))
