"""Training stage: model, schedules, data windows and order (fast, no training loop)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from hierlab.config import config_from_dict
from hierlab.corpus.shards import SplitReader, write_split
from hierlab.errors import ConfigError, DataError
from hierlab.train.config import CheckpointConfig, ModelConfig, TrainingConfig
from hierlab.train.data import TokenWindows, WindowOrder, batch_positions, eval_window_indices
from hierlab.train.model import build_model, resolve_vocab_size
from hierlab.train.schedule import checkpoint_steps, log_interval, lr_at

MANIFEST = dict(
    corpus="toy",
    kind="pcfg",
    vocab_size=12,
    eos_id=10,
    pad_id=11,
    unk_id=None,
    boundary_id=None,
    config_hash="toyhash",
    loss_floors={"no_context": 1.0},
)


def _split(
    path: Path, shards: list[np.ndarray], docs: list[np.ndarray] | None = None, **manifest: object
) -> Path:
    write_split(path, shards, manifest={**MANIFEST, **manifest}, doc_starts=docs)
    return path


# ----- model ---------------------------------------------------------------------------------
def test_reference_parameter_count() -> None:
    """The reference model (docs/reference-study.md#model-and-training): 17,299,200
    parameters for V=1003, 17,298,688 for V=1002."""
    model = build_model(ModelConfig(), 1003, seed=0)
    assert sum(p.numel() for p in model.parameters()) == 17_299_200
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (256, 16, 4)
    assert cfg.intermediate_size == 1024 and cfg.max_position_embeddings == 512
    assert cfg.rms_norm_eps == 1e-6 and cfg.rope_parameters["rope_theta"] == 10_000
    assert not cfg.tie_word_embeddings and not cfg.attention_bias and not cfg.mlp_bias
    small = ModelConfig(hidden_size=32, num_layers=1, num_heads=2)
    n1002 = sum(p.numel() for p in build_model(small, 1002, 0).parameters())
    n1003 = sum(p.numel() for p in build_model(small, 1003, 0).parameters())
    assert n1003 - n1002 == 2 * 32  # untied: embedding row + unembedding row


def test_seeded_init_is_reproducible() -> None:
    cfg = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, context_length=16)
    a, b, c = build_model(cfg, 12, 1), build_model(cfg, 12, 1), build_model(cfg, 12, 2)
    for pa_, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert np.array_equal(pa_.detach().numpy(), pb.detach().numpy())
    assert not np.array_equal(a.lm_head.weight.detach().numpy(), c.lm_head.weight.detach().numpy())


def test_vocab_size_mismatch_is_an_error() -> None:
    assert resolve_vocab_size(ModelConfig(), {"vocab_size": 1003}, "m") == 1003
    assert resolve_vocab_size(ModelConfig(vocab_size=1003), {"vocab_size": 1003}, "m") == 1003
    with pytest.raises(ConfigError, match="model.vocab_size"):
        resolve_vocab_size(ModelConfig(vocab_size=1000), {"vocab_size": 1003}, "m")


def test_config_validation_errors() -> None:
    with pytest.raises(ConfigError, match="training.schedule"):
        config_from_dict({"training": {"schedule": "exponential"}})
    with pytest.raises(ConfigError, match="training.checkpoints.schedule"):
        config_from_dict({"training": {"checkpoints": {"schedule": "weird"}}})
    with pytest.raises(ConfigError, match="training.precision"):
        config_from_dict({"training": {"precision": "fp8"}})
    with pytest.raises(ConfigError, match="divisible"):
        config_from_dict({"model": {"hidden_size": 30, "num_heads": 4}})
    with pytest.raises(ConfigError, match="unknown field"):
        config_from_dict({"training": {"learning_rate": 1e-3}})
    cfg = config_from_dict({"training": {"betas": [0.9, 0.95], "checkpoints": {"count": 10}}})
    assert cfg.training.betas == (0.9, 0.95)


def test_defaults_are_the_reference() -> None:
    t = TrainingConfig()
    assert (t.batch_size, t.lr, t.schedule, t.warmup_steps, t.precision) == (
        3104,
        5e-5,
        "linear",
        0,
        "fp32",
    )
    assert (t.betas, t.eps, t.weight_decay, t.grad_clip, t.epochs) == (
        (0.9, 0.999),
        1e-8,
        0.0,
        1.0,
        1.0,
    )
    assert (t.checkpoints.schedule, t.checkpoints.count) == ("linear", 100)


# ----- schedules -----------------------------------------------------------------------------
def test_linear_checkpoints_match_the_reference() -> None:
    """The reference PCFG run: 38,589 steps -> every 386 steps plus the final one, 100 in all."""
    steps = checkpoint_steps(CheckpointConfig(), 38_589)
    assert len(steps) == 100
    assert steps[:3] == [386, 772, 1158] and steps[-2:] == [38_214, 38_589]


def test_log_checkpoints_are_pythia_like() -> None:
    steps = checkpoint_steps(CheckpointConfig(schedule="log", every=1000), 143_000)
    assert steps[:11] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    assert steps[11:13] == [1000, 2000] and steps[-1] == 143_000
    assert len(steps) == 154  # Pythia's 154 checkpoints
    small = checkpoint_steps(CheckpointConfig(schedule="log", count=4), 29)
    assert small == [0, 1, 2, 4, 8, 16, 24, 29]


def test_list_checkpoints_always_end_with_the_final_step() -> None:
    cfg = CheckpointConfig(schedule="list", steps=[5, 0, 3, 3, 500])
    assert checkpoint_steps(cfg, 10) == [0, 3, 5, 10]
    assert checkpoint_steps(CheckpointConfig(count=1000), 7) == list(range(1, 8))
    with pytest.raises(ConfigError):
        checkpoint_steps(CheckpointConfig(), 0)


def test_log_interval() -> None:
    assert log_interval(0.01, 38_589) == 386  # the reference CSVs
    assert log_interval(10, 38_589) == 10
    assert log_interval(0.5, 1) == 1


def test_lr_schedules() -> None:
    ref = TrainingConfig()  # linear, no warmup, to 0 (HF default)
    assert lr_at(0, ref, 100) == pytest.approx(5e-5)
    assert lr_at(50, ref, 100) == pytest.approx(2.5e-5)
    assert lr_at(99, ref, 100) == pytest.approx(5e-7)
    cos = TrainingConfig(lr=1e-3, schedule="cosine", warmup_steps=10, min_lr=1e-4)
    assert lr_at(0, cos, 110) == pytest.approx(1e-4)
    assert lr_at(9, cos, 110) == pytest.approx(1e-3)
    assert lr_at(10, cos, 110) == pytest.approx(1e-3)
    assert lr_at(60, cos, 110) == pytest.approx(5.5e-4)
    assert lr_at(110, cos, 110) == pytest.approx(1e-4)
    const = TrainingConfig(lr=1e-3, schedule="constant", warmup_steps=4)
    assert [lr_at(s, const, 50) for s in (1, 3, 4, 49)] == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3])


# ----- data ----------------------------------------------------------------------------------
def test_window_order_is_a_seeded_permutation_per_epoch() -> None:
    for n in (1, 2, 7, 1000, 4097):
        order = WindowOrder(n, seed=3)
        first = order(np.arange(n))
        second = order(np.arange(n, 2 * n))
        assert sorted(first.tolist()) == list(range(n))
        assert sorted(second.tolist()) == list(range(n))
        if n > 100:
            assert not np.array_equal(first, second)
            assert not np.array_equal(first, WindowOrder(n, seed=4)(np.arange(n)))
            assert np.array_equal(first, WindowOrder(n, seed=3)(np.arange(n)))
    # random access equals sequential access
    order = WindowOrder(1000, seed=3)
    pos = np.array([1500, 3, 999, 1000])
    assert np.array_equal(order(pos), np.concatenate([order(np.array([p])) for p in pos]))


@pytest.mark.parametrize("world", [1, 2, 4, 8])
def test_data_order_is_independent_of_the_number_of_ranks(world: int) -> None:
    order = WindowOrder(500, seed=0)
    for step in (0, 1, 37):
        ref = order(batch_positions(step, 64))
        got = np.empty(64, dtype=np.int64)
        for r in range(world):
            got[r::world] = order(batch_positions(step, 64, r, world))
        assert np.array_equal(got, ref)


def test_gather_crosses_shards_and_matches_read(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    shards = [rng.integers(0, 12, n).astype(np.uint16) for n in (100, 37, 260)]
    win = TokenWindows(_split(tmp_path / "s", shards), 16)
    assert win.n_windows == 397 // 16
    idx = np.arange(win.n_windows)[::-1].copy()
    got = win.gather(idx)
    flat = np.concatenate(shards)
    for row, i in zip(got, idx, strict=True):
        assert np.array_equal(row, flat[i * 16 : (i + 1) * 16])
    assert np.array_equal(eval_window_indices(24, 4), [0, 6, 12, 18])
    assert len(eval_window_indices(3, 10)) == 3


def test_windows_aligned_to_documents(tmp_path: Path) -> None:
    # documents of lengths 5, 9, 3, 12, 4, 8 ... with boundary token 11 first
    rng = np.random.default_rng(1)
    lens = rng.integers(3, 14, 60)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    toks = rng.integers(0, 10, int(lens.sum())).astype(np.uint16)
    toks[starts] = 11
    cut = int(starts[30])
    shards = [toks[:cut], toks[cut:]]
    docs = [starts[:30], starts[30:] - cut]
    path = _split(tmp_path / "a", shards, docs, boundary_id=11, vocab_size=12)
    keep = TokenWindows(path, 16, align_to_documents=True, keep_boundary_token=True)
    s = keep.starts(np.arange(keep.n_windows))
    assert set(s.tolist()) <= set(starts.tolist())
    assert np.all(np.diff(s) >= 16) and s[-1] + 16 <= len(toks)
    assert np.all(keep.gather(np.arange(keep.n_windows))[:, 0] == 11)
    drop = TokenWindows(path, 16, align_to_documents=True, keep_boundary_token=False)
    assert np.all(drop.gather(np.arange(drop.n_windows))[:, 0] != 11)
    nodocs = _split(tmp_path / "n", shards)
    with pytest.raises(DataError, match="no document offsets"):
        TokenWindows(nodocs, 16, align_to_documents=True)


def test_ids_outside_the_vocabulary_are_caught(tmp_path: Path) -> None:
    toks = np.zeros(200, dtype=np.uint16)
    toks[150] = 12  # vocab_size is 12
    win = TokenWindows(_split(tmp_path / "bad", [toks]), 16)
    with pytest.raises(DataError, match="token id 12 >= vocab_size 12"):
        win.check_ids()
    with pytest.raises(DataError, match="offset 144"):
        win.gather(np.array([0, 9]))
    win.gather(np.array([0, 1]))  # clean windows pass


def test_gather_throughput(tmp_path: Path) -> None:
    """Random windows from memory-mapped shards: >= 10 M tokens/s (brief's floor)."""
    rng = np.random.default_rng(0)
    shards = [rng.integers(0, 12, 1 << 21).astype(np.uint16) for _ in range(4)]
    win = TokenWindows(_split(tmp_path / "big", shards), 512)
    order = WindowOrder(win.n_windows, 0)
    win.gather(order(np.arange(256)))  # warm the page cache
    t0, n = time.perf_counter(), 0
    for step in range(20):
        n += win.gather(order(batch_positions(step, 256))).size
    rate = n / (time.perf_counter() - t0)
    assert rate > 10e6, f"{rate / 1e6:.1f} M tokens/s"


def test_reader_sanity(tmp_path: Path) -> None:
    path = _split(tmp_path / "r", [np.arange(12, dtype=np.uint16)])
    assert SplitReader(path).vocab_size == 12


def test_wsd_schedule_and_its_hash() -> None:
    """Warmup-stable-decay: warmup, flat at lr, then linear to min_lr over the last
    decay_fraction of the steps; decay_fraction enters the run hash only under wsd."""
    from hierlab.train.config import ModelConfig
    from hierlab.train.plan import run_hash

    cfg = TrainingConfig(lr=1.0, schedule="wsd", warmup_steps=10, decay_fraction=0.25,
                         min_lr=0.0)
    assert lr_at(0, cfg, 100) == pytest.approx(0.1)
    assert lr_at(10, cfg, 100) == lr_at(74, cfg, 100) == pytest.approx(1.0)
    assert lr_at(75, cfg, 100) == pytest.approx(1.0)
    assert lr_at(87, cfg, 100) == pytest.approx(0.52)
    assert lr_at(99, cfg, 100) == pytest.approx(0.04)
    m = {"config_hash": "x", "total_tokens": 1, "vocab_size": 5}
    cos = TrainingConfig(schedule="cosine")
    assert run_hash(ModelConfig(), cos, m) == run_hash(
        ModelConfig(), cos.model_copy(update={"decay_fraction": 0.5}), m)
    assert run_hash(ModelConfig(), cfg, m) != run_hash(
        ModelConfig(), cfg.model_copy(update={"decay_fraction": 0.5}), m)
