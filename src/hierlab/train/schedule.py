"""Step schedules: when to checkpoint, when to log, and the learning rate at each step.

Pure functions of (config, total steps), so a resumed run makes exactly the same plan as the
uninterrupted one and tests can check the plan without training.
"""

from __future__ import annotations

import math

from hierlab.errors import ConfigError
from hierlab.train.config import CheckpointConfig, TrainingConfig

__all__ = ["checkpoint_steps", "log_interval", "lr_at"]


def _interval(cfg: CheckpointConfig, total_steps: int) -> int:
    return cfg.every if cfg.every is not None else max(1, math.ceil(total_steps / cfg.count))


def checkpoint_steps(cfg: CheckpointConfig, total_steps: int) -> list[int]:
    """Sorted optimizer steps after which a checkpoint is written (final step included).

    ``linear`` with count=100 gives the reference's plan: every ceil(1% of steps) plus the
    last step (the reference's PCFG run: 386, 772, ..., 38214, 38589). Step 0 is the
    untrained model.

    Args:
        cfg: the ``training.checkpoints`` section.
        total_steps: optimizer steps of the run.

    Returns:
        The steps, ascending.
    """
    if total_steps < 1:
        raise ConfigError(f"training.checkpoints: the run has {total_steps} steps, needs >= 1")
    if cfg.schedule == "list":
        steps = {s for s in cfg.steps if s <= total_steps}
    elif cfg.schedule in ("linear", "log"):
        every = _interval(cfg, total_steps)
        steps = set(range(every, total_steps, every))
        if cfg.schedule == "log":
            steps.add(0)
            p = 1
            while p < min(every, total_steps):
                steps.add(p)
                p *= 2
    else:  # pragma: no cover - pydantic rejects it first
        raise ConfigError(
            f"training.checkpoints.schedule: unknown schedule {cfg.schedule!r} "
            "(expected linear, log or list)"
        )
    steps.add(total_steps)
    return sorted(steps)


def log_interval(log_every: float, total_steps: int) -> int:
    """The ``loss.csv`` interval in steps.

    Args:
        log_every: steps (>= 1), or a fraction of the run (< 1).
        total_steps: optimizer steps of the run.

    Returns:
        Steps between log rows, at least 1.
    """
    if log_every >= 1:
        return int(log_every)
    return max(1, math.ceil(log_every * total_steps))


def lr_at(step: int, cfg: TrainingConfig, total_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based).

    Warmup rises linearly from lr/warmup_steps to lr (no wasted lr=0 step); ``linear`` then
    falls to ``min_lr`` at ``total_steps`` (HF ``get_linear_schedule_with_warmup`` when
    min_lr = 0 and no warmup: the reference),
    ``cosine`` follows half a cosine to ``min_lr``, ``constant`` stays at lr, ``wsd``
    (warmup-stable-decay, as in MiniCPM and OLMo 2) stays at lr and falls linearly to
    ``min_lr`` over the last ``decay_fraction`` of the steps.

    Args:
        step: the optimizer step, 0-based.
        cfg: the training section (lr, schedule, warmup, min_lr, decay_fraction).
        total_steps: optimizer steps of the run.

    Returns:
        The learning rate.
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "wsd":
        decay = max(1, round(cfg.decay_fraction * total_steps))
        start = max(cfg.warmup_steps, total_steps - decay)
        if step < start:
            return cfg.lr
        frac = min(1.0, (step - start) / max(1, total_steps - start))
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * (1.0 - frac)
    span = max(1, total_steps - cfg.warmup_steps)
    frac = min(1.0, max(0.0, (step - cfg.warmup_steps) / span))
    if cfg.schedule == "linear":
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * (1.0 - frac)
    if cfg.schedule == "cosine":
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))
    raise ConfigError(  # pragma: no cover - pydantic rejects it first
        f"training.schedule: unknown schedule {cfg.schedule!r} (linear, cosine, constant, wsd)"
    )
