"""GPU check: one table of what hierlab does on one (or two) GPUs.

Each section (corpus, train eager and compiled, probes, ddp) runs in its own child process
under its own timeout, so a hang or a crash is a row of the table and the others still run;
all of it fits in ``--total`` seconds (<= 8 minutes). ``bash benchmarks/gpu_check.sh`` picks
or prepares a Python with CUDA torch; ``--dry-run`` runs every section at toy sizes on CPU.
Without CUDA it says so and exits 0. The table also goes to ``--md`` or ``$OUT/gpu_check.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

NO_CUDA = "gpu_check: no CUDA device; nothing to measure"
#: seconds per section on a GPU; the last number is what later sections are guaranteed
BUDGETS = {"corpus": (45, 20), "train": (75, 30), "train_compile": (150, 30),
           "probes": (180, 30), "ddp": (90, 30)}


# ------------------------------------------------------------------ what the sections share
PRECISIONS = ("bf16", "fp16")
IMPLS = ("hf_trainer", "hierlab")
PEAKS = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12}


def experiment(dry: bool) -> Any:
    """The training experiment: the reference model on a 1000-word n-gram corpus."""
    from hierlab.config import ExperimentConfig

    ngram = {"kind": "ngram", "seed": 0, "vocab_size": 1000, "train_sentences": 50_000,
             "test_sentences": 1000, "sentences_per_shard": 50_000}
    model: dict[str, Any] = {}
    probes: dict[str, Any] = {}  # not run; only has to fit the context (load-time check)
    if dry:
        ngram.update(train_sentences=2000, test_sentences=100)
        model = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "context_length": 32}
        probes = {"induction": {"n": 8}, "hydra": {"standard_length": 16}}
    return ExperimentConfig.model_validate({
        "name": "gpu_check", "corpora": {"ngram": ngram}, "model": model, "probes": probes,
        "training": {"batch_size": 4 if dry else 256, "lr": 1e-3, "betas": [0.9, 0.95],
                     "precision": "bf16", "device": "cpu" if dry else "cuda"},
    })


def bench_args(a: argparse.Namespace, precision: str, compile_: bool) -> argparse.Namespace:
    """The namespace train_throughput's bench_* functions read (its CLI's fields)."""
    return argparse.Namespace(
        device="cpu" if a.dry_run else "cuda", precision=precision,
        batch=experiment(a.dry_run).training.batch_size, steps=a.steps, warmup=a.warmup,
        compile_hf=compile_)


def peak_flops(name: str) -> float | None:
    """Dense bf16/fp16 peak FLOP/s of the GPU named ``name`` (None: unknown, MFU n/a)."""
    return next((v for k, v in PEAKS.items() if k in name), None)


def n_params(cfg: Any, corpus: Path) -> int:
    """Parameters of the model the benchmarks build on this corpus (embeddings included)."""
    from hierlab.train.data import TokenWindows
    from hierlab.train.model import build_model

    vocab = TokenWindows(corpus / "train", cfg.model.context_length).vocab_size
    return sum(p.numel() for p in build_model(cfg.model, vocab, 0).parameters())


def flops_per_token(n_params: int, cfg: Any) -> float:
    """6 N + 12 L T d: N all parameters, L layers, T context, d width (the attention
    term per token), so MFU counts the attention matmuls too."""
    m = cfg.model
    return 6.0 * n_params + 12.0 * m.num_layers * m.context_length * m.hidden_size


def row(section: str, what: str, tps: float | None = None, mfu: float | None = None,
        seconds: float | None = None, note: str = "") -> dict[str, Any]:
    return {"section": section, "what": what, "tps": tps, "mfu": mfu, "seconds": seconds,
            "note": note}


def label(section: str) -> str:  # the table's section column: train_compile -> train
    return section.split("_")[0]


def expected_rows(section: str, dry: bool) -> list[str]:
    """The row names a section owes the table (the missing ones get its error)."""
    if section in ("train", "train_compile"):
        mode = "compile" if section == "train_compile" else "eager"
        return [f"{impl} {p} {mode}" for p in PRECISIONS for impl in IMPLS]
    return {"corpus": ["n-gram corpus (pipeline corpus stage)"],
            "probes": ["OLMo-1B-size probe suite" if not dry else "2-layer Olmo probe suite"],
            "ddp": ["hierlab train, torchrun 2 processes bf16"]}[section]


# ------------------------------------------------------------------ sections (children)
def section_corpus(a: argparse.Namespace, work: Path, emit: Any) -> None:
    """The n-gram corpus, made by the pipeline's corpus stage: the train and ddp sections
    read it (without it they are skipped rows)."""
    from hierlab.corpus.shards import SplitReader
    from hierlab.pipeline import run as run_pipeline

    t0 = time.perf_counter()
    run_pipeline(experiment(a.dry_run), work / "run", stages=("corpus",))
    tokens = SplitReader(work / "run" / "corpus" / "ngram" / "train").total_tokens
    emit(row("corpus", expected_rows("corpus", a.dry_run)[0],
             seconds=time.perf_counter() - t0, note=f"{tokens / 1e6:.2f} M train tokens"))


def section_train(a: argparse.Namespace, work: Path, emit: Any, compile_: bool = False) -> None:
    """Tokens/s and MFU of the reference model (``ModelConfig()`` defaults, 16 x 256,
    ~17.3 M parameters on the 1000-word n-gram corpus; batch 256 x 512) for HF Trainer and
    hierlab's ``train_model``, bf16 and fp16, eager or ``torch.compile``: ``--warmup``
    untimed steps (compile included), then ``--steps`` timed ones. The contenders are
    ``train_throughput.py``'s ``bench_hf`` / ``bench_hierlab``, so the check measures what
    that benchmark measures. One contender failing is a row, not the end of the section."""
    import torch

    import train_throughput as tt

    cfg = experiment(a.dry_run)
    corpus = work / "run" / "corpus" / "ngram"
    n = n_params(cfg, corpus)
    peak = None if a.dry_run else peak_flops(torch.cuda.get_device_name())
    mode = "compile" if compile_ else "eager"
    if compile_:  # four models of one class are compiled in this process
        torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
    size = (f"{n / 1e6:.1f} M params, batch {cfg.training.batch_size} x "
            f"{cfg.model.context_length}, {a.warmup}+{a.steps} steps")
    for precision in PRECISIONS:
        for impl in IMPLS:
            what = f"{impl} {precision} {mode}"
            if a.dry_run and (precision == "fp16" or compile_):
                emit(row("train", what, note="skipped in --dry-run (CPU: bf16, eager)"))
                continue
            ba = bench_args(a, precision, compile_)
            out = work / what.replace(" ", "-")
            note = size
            try:
                t0 = time.perf_counter()
                if impl == "hf_trainer":
                    tps = tt.bench_hf(cfg, corpus, ba, out)
                else:
                    tps, warm = tt.bench_hierlab(cfg, corpus, ba, out, compile=compile_)
                    note += f"; warm-up {warm:.1f} s"
            except Exception as err:  # one contender failing is a row, not the end
                emit(row("train", what, note=f"error: {type(err).__name__}: {err}"[:300]))
                continue
            finally:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            mfu = tps * flops_per_token(n, cfg) / peak if peak else None
            emit(row("train", what, tps, mfu, time.perf_counter() - t0, note))


def section_train_compile(a: argparse.Namespace, work: Path, emit: Any) -> None:
    """``section_train`` compiled: a section of its own, since compiling may hang or take
    most of a budget, and the eager rows must not be lost with it."""
    section_train(a, work, emit, compile_=True)


def section_ddp(a: argparse.Namespace, work: Path, emit: Any) -> None:
    """``torchrun --nproc-per-node 2 -m hierlab train`` tokens/s, read off its loss.csv
    (two GPUs; two CPU processes over gloo in a dry run). MFU is against both GPUs' peak."""
    import torch
    import yaml

    import train_throughput as tt

    cfg = experiment(a.dry_run)
    tcfg = tt.bench_train_cfg(cfg, bench_args(a, "bf16", False))
    run = work / "ddp"
    (run / "corpus").mkdir(parents=True, exist_ok=True)
    (run / "corpus" / "ngram").symlink_to(work / "run" / "corpus" / "ngram")
    (run / "config.yml").write_text(yaml.safe_dump(
        cfg.model_copy(update={"training": tcfg}).model_dump(mode="json"), sort_keys=False))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc-per-node", "2", "-m", "hierlab", "train", str(run / "config.yml"),
           "--out", str(run), "--corpus", "ngram"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"torchrun exit {proc.returncode}: {' | '.join(tail)}")
    per_step = tcfg.batch_size * cfg.model.context_length
    tps, _ = tt.loss_csv_rate(run / "models" / "ngram" / "loss.csv", a.warmup, per_step)
    peak = None if a.dry_run else peak_flops(torch.cuda.get_device_name())
    n = n_params(cfg, work / "run" / "corpus" / "ngram")
    mfu = tps * flops_per_token(n, cfg) / (2 * peak) if peak else None  # two GPUs' peak
    emit(row("ddp", expected_rows("ddp", a.dry_run)[0], tps, mfu, time.perf_counter() - t0,
             f"global batch {tcfg.batch_size} x {cfg.model.context_length}, "
             f"{a.warmup}+{a.steps} steps" + ("; CPU gloo (--dry-run)" if a.dry_run else "")))


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
    """Seconds of the full probe suite (every probe, both variants) on a random-init
    OLMo-1B-sized ``OlmoConfig`` (2048 x 16 layers, 16 heads, 8192 FFN, vocab 50304, context
    2048), saved as bf16 safetensors and probed through ``run_probes`` with the ``olmo-1b``
    preset's probe settings. Its tokenizer is a byte-level BPE trained offline on the
    word-list tasks, so the natural-language FV tasks run; if it cannot be built they are
    skipped, and the row says so."""
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


#: section -> the function its child process runs
SECTIONS: dict[str, Callable[[argparse.Namespace, Path, Any], None]] = {
    "corpus": section_corpus, "train": section_train, "train_compile": section_train_compile,
    "probes": section_probes, "ddp": section_ddp}


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
        sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_throughput
        section = SECTIONS[a.section]
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
