"""Training loop: learning, outputs, resume after a kill, skip, errors, HF interop, CLI."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hierlab.corpus.shards import write_split
from hierlab.errors import ConfigError, DataError, HierlabError
from hierlab.train.config import ModelConfig, TrainingConfig
from hierlab.train.loop import train_model
from hierlab.train.model import build_model

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
def _one_thread():  # noqa: ANN202
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


# ----- resume ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kill", [7, 12, 13])
def test_resume_after_a_kill_reproduces_the_run_exactly(tmp_path: Path, kill: int) -> None:
    """Killed after step `kill` (between checkpoints, right at one, just after one), the
    continued run's losses and weights equal the uninterrupted run's bit for bit."""
    corpus = make_corpus(tmp_path)
    cfg = tcfg(precision="bf16")  # bf16 autocast on CPU, the presets' precision
    ref = train_model(TINY, cfg, corpus, tmp_path / "ref")
    with pytest.raises(Killed):
        train_model(TINY, cfg, corpus, tmp_path / "run", on_step=kill_at(kill))
    # a torn checkpoint and a torn csv line are tolerated
    (tmp_path / "run" / "checkpoints" / ".tmp-step-00000020-1").mkdir()
    with open(tmp_path / "run" / "loss.csv", "a") as fh:
        fh.write("14,3584,2.1")
    run = train_model(TINY, cfg, corpus, tmp_path / "run")
    for name, col in (
        ("loss.csv", "train_loss"),
        ("loss.csv", "grad_norm"),
        ("loss.csv", "lr"),
        ("eval.csv", "test_loss"),
    ):
        a = [(r["step"], r[col]) for r in read_csv(ref / name)]
        b = [(r["step"], r[col]) for r in read_csv(run / name)]
        assert a == b, name
    a = snapshot(ref / "checkpoints")
    b = snapshot(run / "checkpoints")
    assert sorted(a) == sorted(b)
    assert a["step-00000020/model.safetensors"] == b["step-00000020/model.safetensors"]
    assert not list((run / "checkpoints").glob(".tmp-*"))


def test_test_loss_is_measured_with_sdpa_whatever_the_training_kernel(tmp_path: Path) -> None:
    """Regression (issue 11): eager attention is the training kernel when compiled on CPU;
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


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile (inductor) on CPU needs a C++ compiler")
def test_compiled_run_resumes_bitwise_against_a_compiled_run(tmp_path: Path) -> None:
    """Issue 11: a speed lever may not break resume. With ``training.compile`` a killed and
    resumed run equals the uninterrupted compiled run bit for bit (losses and weights)."""
    corpus = make_corpus(tmp_path)
    cfg = tcfg(precision="bf16", compile=True, checkpoints={"schedule": "list", "steps": [6]},
               max_tokens=8 * 32 * 10)
    ref = train_model(TINY, cfg, corpus, tmp_path / "ref")
    with pytest.raises(Killed):
        train_model(TINY, cfg, corpus, tmp_path / "run", on_step=kill_at(8))
    run = train_model(TINY, cfg, corpus, tmp_path / "run")
    a = [(r["step"], r["train_loss"], r["grad_norm"]) for r in read_csv(ref / "loss.csv")]
    b = [(r["step"], r["train_loss"], r["grad_norm"]) for r in read_csv(run / "loss.csv")]
    assert a == b and len(a) >= 3
    weights = "checkpoints/step-00000010/model.safetensors"
    assert (ref / weights).read_bytes() == (run / weights).read_bytes()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile (inductor) on CPU needs a C++ compiler")
def test_compiled_runs_are_deterministic_at_the_quickstart_shape(tmp_path: Path) -> None:
    """Regression (issue 11): compiled on 2 CPU threads, two identical runs of the quickstart
    model drifted apart from step ~4 until training ran under deterministic algorithms. In a
    fresh process: once a process has been set to one thread (this file's fixture), the
    drift no longer shows, so the fixture's process cannot test it."""
    script = f"""
import csv, json
from pathlib import Path
import torch
from hierlab.config import load_config
from hierlab.corpus.generate import generate_corpora
from hierlab.train.config import TrainingConfig
from hierlab.train.loop import train_model
tmp = Path({str(tmp_path)!r})
qs = load_config("quickstart")  # its corpus (fewer documents), model and training
pcfg = type(qs.corpora["pcfg"]).model_validate(
    {{**qs.corpora["pcfg"].model_dump(), "train_documents": 20, "test_documents": 5}})
corpus = generate_corpora({{"pcfg": pcfg}}, tmp)["pcfg"]
cfg = TrainingConfig(**{{**qs.training.model_dump(), "compile": True, "log_every": 1,
                        "eval_tokens": 0, "max_tokens": 8 * 256 * 12,
                        "checkpoints": {{"schedule": "list", "steps": [12]}}}})
losses = []
for i in range(2):
    run = train_model(qs.model, cfg, corpus, tmp / f"run{{i}}")
    losses.append([r["train_loss"] for r in csv.DictReader(open(run / "loss.csv"))])
print(json.dumps({{"losses": losses, "threads": torch.get_num_threads(),
                  "deterministic_after": torch.are_deterministic_algorithms_enabled()}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=600)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    a, b = res["losses"]
    assert len(a) == 12 and a == b, (res["threads"], a, b)
    assert res["deterministic_after"] is False  # the caller's setting is back


def test_kill_while_writing_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kill inside the checkpoint write leaves only a temp dir; the rerun resumes from the
    previous checkpoint and ends with the uninterrupted run's weights."""
    import hierlab.train.checkpoint as ckpt

    corpus = make_corpus(tmp_path)
    ref = train_model(TINY, tcfg(), corpus, tmp_path / "ref")
    real_save = ckpt.quiet_save

    def torn_save(model: torch.nn.Module, path: Path) -> None:
        real_save(model, path)
        if path.name.startswith(".tmp-step-00000012"):
            raise Killed(12)

    monkeypatch.setattr(ckpt, "quiet_save", torn_save)
    with pytest.raises(Killed):
        train_model(TINY, tcfg(), corpus, tmp_path / "run")
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir())[-1] == "step-00000005"
    assert list(ckpts.glob(".tmp-step-00000012-*"))
    monkeypatch.setattr(ckpt, "quiet_save", real_save)
    run = train_model(TINY, tcfg(), corpus, tmp_path / "run")
    assert read_csv(ref / "eval.csv") == read_csv(run / "eval.csv")
    assert (
        snapshot(ref / "checkpoints")["step-00000020/model.safetensors"]
        == snapshot(run / "checkpoints")["step-00000020/model.safetensors"]
    )


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


# ----- API and CLI -------------------------------------------------------------------------------
# probe lengths that fit TINY's 32-token context (checked at load time)
FITTING_PROBES = {"induction": {"n": 16}, "hydra": {"standard_length": None}}


def _experiment_yaml(tmp_path: Path) -> Path:
    data = {
        "name": "tiny",
        "corpora": {"toy": {"kind": "pcfg"}},
        "model": TINY.model_dump(mode="json", exclude_none=True),
        "training": tcfg(
            max_tokens=8 * 32 * 4, checkpoints={"schedule": "linear", "count": 2}
        ).model_dump(mode="json", exclude_none=True),
        "probes": FITTING_PROBES,
    }
    path = tmp_path / "tiny.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_train_corpora_and_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hierlab.cli import app
    from hierlab.config import load_config
    from hierlab.train.loop import train_corpora

    run_dir = tmp_path / "run"
    make_corpus(run_dir)
    cfg_path = _experiment_yaml(tmp_path)
    cfg = load_config(cfg_path)
    with pytest.raises(ConfigError, match="--corpus: 'other'"):
        train_corpora(cfg.model, cfg.training, cfg.corpora, run_dir, only="other")
    runner = CliRunner()
    res = runner.invoke(app, ["train", str(cfg_path), "--out", str(run_dir), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    model_dir = run_dir / "models" / "toy"
    assert (model_dir / "checkpoints" / "step-00000004" / "state.json").exists()
    assert [int(r["step"]) for r in read_csv(model_dir / "eval.csv")] == [2, 4]
    # a runtime error is one line and exit status 1
    res = runner.invoke(app, ["train", str(cfg_path), "--out", str(tmp_path / "empty")])
    assert res.exit_code == 1 and "no train split" in res.output
    again = train_corpora(cfg.model, cfg.training, cfg.corpora, run_dir, only="toy")
    assert again == {"toy": model_dir}  # finished: skipped


def test_corpora_trained_at_once_equal_one_after_the_other(tmp_path: Path) -> None:
    """Two corpora in two processes (one thread each) give the very bytes of training them
    one after the other; a worker's error reaches the caller as itself."""
    from hierlab.config import config_from_dict
    from hierlab.train.loop import concurrent_corpora, train_corpora

    for run in ("serial", "parallel"):
        for name in ("a", "b"):
            corpus = make_corpus(tmp_path / run)
            corpus.rename(corpus.parent / name)
    data = {
        "name": "two",
        "corpora": {"a": {"kind": "pcfg"}, "b": {"kind": "pcfg"}},
        "model": TINY.model_dump(mode="json", exclude_none=True),
        "training": tcfg().model_dump(mode="json", exclude_none=True),
        "probes": FITTING_PROBES,
    }
    serial = config_from_dict({**data, "training": {**data["training"], "parallel_corpora": 1}})
    both = config_from_dict(
        {**data, "training": {**data["training"], "parallel_corpora": 2, "threads": 1}}
    )
    assert concurrent_corpora(serial.training, 2, "cpu") == 1
    assert concurrent_corpora(both.training, 2, "cpu") == 2
    assert concurrent_corpora(both.training, 1, "cpu") == 1
    a = train_corpora(serial.model, serial.training, serial.corpora, tmp_path / "serial",
                      device="cpu")
    b = train_corpora(both.model, both.training, both.corpora, tmp_path / "parallel",
                      device="cpu")
    assert list(a) == list(b) == ["a", "b"]
    for name in ("a", "b"):
        for f in ("loss.csv", "eval.csv"):
            rows = [{k: v for k, v in r.items() if k != "tokens_per_s"}
                    for r in read_csv(a[name] / f)]
            assert rows == [{k: v for k, v in r.items() if k != "tokens_per_s"}
                            for r in read_csv(b[name] / f)]
        weights = "checkpoints/step-00000020/model.safetensors"
        assert snapshot(a[name])[weights] == snapshot(b[name])[weights]
    (tmp_path / "broken" / "corpus").mkdir(parents=True)
    with pytest.raises(DataError, match="no train split"):
        train_corpora(both.model, both.training, both.corpora, tmp_path / "broken",
                      device="cpu")
