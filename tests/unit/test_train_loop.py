"""Training loop: learning, outputs, HF interop, attention kernels, skip and errors.

Resume after a kill: test_train_resume.py; several corpora and the CLI: test_train_corpora.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hierlab.corpus.shards import write_split
from hierlab.errors import ConfigError, DataError, HierlabError
from hierlab.train.config import ModelConfig, TrainingConfig
from hierlab.train.loop import train_model
from hierlab.train.model import build_model
from train_helpers import (  # noqa: F401 - _one_thread is an autouse fixture
    MANIFEST,
    TINY,
    VOCAB,
    Killed,
    _one_thread,
    kill_at,
    make_corpus,
    read_csv,
    snapshot,
    tcfg,
)


# ----- learning and outputs
def test_loss_decreases_and_outputs_follow_the_contract(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path, tokenizer=True)
    out = train_model(
        TINY, tcfg(checkpoints={"schedule": "log", "count": 4}), corpus, tmp_path / "models" / "toy"
    )
    loss = read_csv(out / "loss.csv")
    assert list(loss[0]) == ["step", "tokens_seen", "train_loss", "lr", "grad_norm", "tokens_per_s"]
    assert [int(r["step"]) for r in loss] == [3, 6, 9, 12, 15, 18, 20]
    assert int(loss[-1]["tokens_seen"]) == 20 * 8 * 32
    ev = read_csv(out / "eval.csv")
    assert [int(r["step"]) for r in ev] == [0, 1, 2, 4, 5, 10, 15, 20]
    test_losses = [float(r["test_loss"]) for r in ev]
    assert test_losses[0] > np.log(VOCAB) - 0.3  # untrained: about uniform
    assert test_losses[-1] < test_losses[0] - 0.6  # it learned the structure
    assert float(loss[-1]["train_loss"]) < float(loss[0]["train_loss"]) - 0.6
    run = json.loads((out / "run.json").read_text())
    assert run["corpus"] == "toy" and run["kind"] == "pcfg" and run["vocab_size"] == VOCAB
    assert run["loss_floors"] == MANIFEST["loss_floors"] and run["num_layers"] == 2
    ckpts = sorted((out / "checkpoints").iterdir())
    assert [p.name for p in ckpts] == [f"step-{s:08d}" for s in (0, 1, 2, 4, 5, 10, 15, 20)]
    state = json.loads((ckpts[-1] / "state.json").read_text())
    assert set(state) >= {
        "step",
        "tokens_seen",
        "train_loss",
        "test_loss",
        "lr",
        "seed",
        "hierlab_version",
        "config_hash",
    }
    assert state["step"] == 20 and state["config_hash"] == run["config_hash"]
    assert state["test_loss"] == pytest.approx(test_losses[-1])
    # resume state only in the latest checkpoint; tokenizer copied into every checkpoint
    assert [p.name for p in ckpts if (p / "trainer_state.pt").exists()] == ["step-00000020"]
    assert all(
        (p / "tokenizer.json").exists() and (p / "model.safetensors").exists() for p in ckpts
    )


def test_checkpoint_loads_with_auto_classes_and_generates(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    corpus = make_corpus(tmp_path, tokenizer=True)
    out = train_model(
        TINY,
        tcfg(max_tokens=8 * 32 * 6, checkpoints={"schedule": "list", "steps": [3]}),
        corpus,
        tmp_path / "m",
    )
    path = out / "checkpoints" / "step-00000006"
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    ids = torch.tensor([tok.convert_tokens_to_ids(["t1", "t2", "t3", "t4"])])
    assert ids.tolist() == [[1, 2, 3, 4]]
    gen = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert gen.shape == (1, 9) and int(gen.max()) < VOCAB
    assert model.config.eos_token_id == 10 and model.config.vocab_size == VOCAB
    # the reloaded model scores the test split exactly as the logged test loss
    state = json.loads((path / "state.json").read_text())
    assert state["step"] == 6 and state["test_loss"] is not None



def test_test_loss_is_measured_with_sdpa_whatever_the_training_kernel(tmp_path: Path) -> None:
    """Regression: eager attention is the training kernel when compiled on CPU;
    the test loss must not depend on it. At step 0 (same weights) an eager-attention run and
    an SDPA run report the same test loss to the bit, and the kernel is restored after."""
    corpus = make_corpus(tmp_path)
    runs = {}
    for kernel in ("sdpa", "eager"):
        cfg = tcfg(attention=kernel, checkpoints={"schedule": "list", "steps": [0, 4]},
                   max_tokens=8 * 32 * 4)
        runs[kernel] = train_model(TINY, cfg, corpus, tmp_path / kernel)
    first = {k: read_csv(d / "eval.csv")[0] for k, d in runs.items()}
    assert first["sdpa"]["step"] == first["eager"]["step"] == "0"
    assert first["sdpa"]["test_loss"] == first["eager"]["test_loss"]
    losses = {k: [r["train_loss"] for r in read_csv(d / "loss.csv")] for k, d in runs.items()}
    assert losses["sdpa"] != losses["eager"]  # the training kernel did differ


def test_attention_auto_is_eager_only_when_compiled_on_cpu() -> None:
    from hierlab.train.kernels import attention_impl, attention_kernel

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert attention_impl("auto", cpu, compiled=True) == "eager"
    assert attention_impl("auto", cpu, compiled=False) == "sdpa"
    assert attention_impl("auto", cuda, compiled=True) == "sdpa"
    assert attention_impl("sdpa", cpu, compiled=True) == "sdpa"
    model = build_model(TINY, 40, 0)
    model.set_attn_implementation("eager")
    with attention_kernel(model, "sdpa"):
        assert model.config._attn_implementation == "sdpa"
    assert model.config._attn_implementation == "eager"



def test_finished_run_is_skipped(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path)
    out = train_model(TINY, tcfg(), corpus, tmp_path / "m")
    before = snapshot(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*")}

    def fail(step: int) -> None:
        raise AssertionError("must not train")

    train_model(TINY, tcfg(device="cpu"), corpus, tmp_path / "m", on_step=fail)
    assert snapshot(out) == before
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == mtimes


# ----- errors: clear message, nothing touched
def test_errors_leave_existing_checkpoints_untouched(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path)
    out = tmp_path / "m"
    with pytest.raises(Killed):
        train_model(TINY, tcfg(), corpus, out, on_step=kill_at(8))
    before = snapshot(out)

    cases: list[tuple[ModelConfig, TrainingConfig, Path, type, str]] = [
        (TINY, tcfg(lr=1e-3), corpus, ConfigError, "different config"),
        (
            TINY.model_copy(update={"vocab_size": 50}),
            tcfg(),
            corpus,
            ConfigError,
            "model.vocab_size: 50 does not match the corpus vocab_size 12",
        ),
        (TINY, tcfg(), tmp_path / "corpus" / "nope", DataError, "no train split"),
        (TINY, tcfg(batch_size=4096), corpus, DataError, "training.batch_size: 4096"),
        (TINY, tcfg(max_tokens=100), corpus, ConfigError, "training.max_tokens"),
        (TINY, tcfg(precision="fp16"), corpus, ConfigError, "fp16 needs a CUDA"),
        (TINY, tcfg(device="cuda"), corpus, ConfigError, "training.device"),
    ]
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        cases.append((TINY, tcfg(tensorboard=True), corpus, ConfigError, "tracking"))
    for model_cfg, train_cfg, corp, err, msg in cases:
        with pytest.raises(err, match=msg) as info:
            train_model(model_cfg, train_cfg, corp, out)
        assert "\n" not in str(info.value)
        assert snapshot(out) == before

    # a corrupted shard (ids >= vocab): caught before training starts
    bad = tmp_path / "bad"
    toks = np.full(2000, 3, dtype=np.uint16)
    toks[1234] = 99
    write_split(bad / "train", [toks], manifest={**MANIFEST, "split": "train"})
    write_split(bad / "test", [toks[:500] % 10], manifest={**MANIFEST, "split": "test"})
    with pytest.raises(DataError, match="token id 99 >= vocab_size 12"):
        train_model(TINY, tcfg(), bad, out)
    assert snapshot(out) == before
    # missing test split while a test loss is asked for
    write_split(bad / "train2", [toks % 10], manifest={**MANIFEST, "split": "train"})
    (bad / "test" / "manifest.json").unlink()
    (bad / "train").rename(bad / "train-corrupt")
    (bad / "train2").rename(bad / "train")
    with pytest.raises(DataError, match="no test split"):
        train_model(TINY, tcfg(), bad, out)
    assert snapshot(out) == before
    assert issubclass(ConfigError, HierlabError) and issubclass(DataError, HierlabError)


