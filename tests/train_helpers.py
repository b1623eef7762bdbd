"""What the training tests share: a toy corpus with a latent, a tiny model and training
config, CSV and folder snapshots, a simulated kill and the one-thread fixture."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from hierlab.corpus.shards import write_split
from hierlab.train.config import ModelConfig, TrainingConfig

VOCAB = 12
MANIFEST = dict(
    corpus="toy",
    kind="pcfg",
    vocab_size=VOCAB,
    eos_id=10,
    pad_id=11,
    unk_id=None,
    boundary_id=None,
    config_hash="toyhash",
    loss_floors={"no_context": 1.0, "latent_known": 0.5},
)
TINY = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, context_length=32)


@pytest.fixture(autouse=True)
def _one_thread():  # noqa: ANN202 - autouse where imported
    """Tiny models gain nothing from threads, and OpenMP spin-waits under a busy CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _docs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Documents with a latent: an arithmetic progression mod 10 from a random start, EOS."""
    toks, starts, pos = [], [], 0
    for _ in range(n):
        a, step, length = rng.integers(0, 10), rng.integers(1, 4), rng.integers(5, 30)
        doc = np.append((a + np.arange(length) * step) % 10, 10).astype(np.uint16)
        starts.append(pos)
        pos += len(doc)
        toks.append(doc)
    return np.concatenate(toks), np.array(starts, dtype=np.int64)


def make_corpus(root: Path, n_train: int = 300, n_test: int = 40, tokenizer: bool = False) -> Path:
    rng = np.random.default_rng(0)
    corpus = root / "corpus" / "toy"
    for split, n in (("train", n_train), ("test", n_test)):
        toks, starts = _docs(rng, n)
        k = len(starts) // 2
        cut = int(starts[k])
        write_split(
            corpus / split,
            [toks[:cut], toks[cut:]],
            manifest={**MANIFEST, "split": split},
            doc_starts=[starts[:k], starts[k:] - cut],
        )
    if tokenizer:
        from tokenizers import Tokenizer
        from tokenizers.models import WordLevel
        from tokenizers.pre_tokenizers import WhitespaceSplit
        from transformers import PreTrainedTokenizerFast

        vocab = {f"t{i}": i for i in range(10)} | {"[EOS]": 10, "[UNK]": 11}
        tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
        tok.pre_tokenizer = WhitespaceSplit()
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, eos_token="[EOS]", unk_token="[UNK]", pad_token="[UNK]"
        )
        fast.save_pretrained(corpus / "tokenizer")
    return corpus


def tcfg(**kw: object) -> TrainingConfig:
    base = dict(
        batch_size=8,
        micro_batch_size=4,
        lr=3e-3,
        schedule="cosine",
        warmup_steps=3,
        eval_tokens=1024,
        log_every=3,
        checkpoints={"schedule": "list", "steps": [5, 12]},
        max_tokens=8 * 32 * 20,
    )
    return TrainingConfig(**{**base, **kw})


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


class Killed(Exception):
    pass


def kill_at(n: int):  # noqa: ANN201
    def hook(step: int) -> None:
        if step == n:
            raise Killed(step)

    return hook

