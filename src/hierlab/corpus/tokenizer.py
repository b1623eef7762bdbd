"""A word-level HF tokenizer for each corpus, so HF tools decode our ids.

PCFG words are named by role (``S0``, ``V12``, ``O7``, ``C3``) so a decoded sentence is
readable; n-gram words are ``w<id>``. Specials: ``[EOS]``, ``[DOC]`` (the optional document
boundary), ``[UNK]``, ``[PAD]``; the tokenizer's length is the vocabulary a model needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hierlab.corpus.config import NgramConfig, PcfgConfig

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerFast


def vocabulary(cfg: PcfgConfig | NgramConfig) -> list[str]:
    """The name of every id, so a decoded sentence reads as roles (``S0 V12 O7 [EOS]``).

    Args:
        cfg: the corpus config.

    Returns:
        Token names in id order, ending with ``[UNK]`` and ``[PAD]``.
    """
    if isinstance(cfg, PcfgConfig):
        lx = cfg.lexicon
        names = [f"S{i}" for i in range(lx.subjects)]
        names += [f"V{i}" for i in range(lx.verbs)]
        names += [f"O{i}" for i in range(lx.objects)]
        names += [f"C{i}" for i in range(lx.connectors)]
        names.append("[EOS]")
        if cfg.boundary_token:
            names.append("[DOC]")
    else:
        names = [f"w{i}" for i in range(cfg.vocab_size - 1)] + ["[EOS]"]
    return names + ["[UNK]", "[PAD]"]


def build_tokenizer(cfg: PcfgConfig | NgramConfig) -> PreTrainedTokenizerFast:
    """The corpus's tokenizer, so HF tools encode and decode our ids.

    Args:
        cfg: the corpus config.

    Returns:
        A ``PreTrainedTokenizerFast`` (WordLevel, whitespace split) with EOS, UNK and PAD
        set, and ``[DOC]`` as BOS when the corpus has a boundary token.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {name: i for i, name in enumerate(vocabulary(cfg))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    extra = {"bos_token": "[DOC]"} if getattr(cfg, "boundary_token", False) else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="[EOS]",
        unk_token="[UNK]",
        pad_token="[PAD]",
        clean_up_tokenization_spaces=False,
        **extra,
    )


def save_tokenizer(cfg: PcfgConfig | NgramConfig, out_dir: Path) -> Path:
    """Save the corpus's tokenizer, so ``AutoTokenizer.from_pretrained`` finds it.

    Args:
        cfg: the corpus config.
        out_dir: the folder (created if missing).

    Returns:
        ``out_dir``.
    """
    tok = build_tokenizer(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out_dir))
    return out_dir
