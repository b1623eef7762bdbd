"""Which kernels a training run uses: autocast precision, the AdamW implementation, the
attention kernel and whether torch.compile can run. Each is a config field whose ``auto``
is the measured fastest (benchmarks/train_throughput.py); none changes which model is
trained, only how fast and in which last bits (they are outside the run hash, except
``compile``, which a run resumes against). Compiled CPU runs are deterministic only under
:func:`deterministic` (benchmarks/compile_determinism.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from hierlab.train.config import TrainingConfig

__all__ = [
    "adamw", "attention_impl", "attention_kernel", "autocast", "compiles", "deterministic",
]

_AMP = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

_ADAMW_KERNELS: dict[str, dict[str, bool]] = {
    "fused": {"fused": True},
    "foreach": {"foreach": True},
    "for-loop": {"foreach": False},
}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of a precision, so the loop reads the same for every precision.

    Args:
        device: where the model runs.
        precision: ``fp32``, ``bf16`` or ``fp16``.

    Returns:
        A bf16/fp16 ``torch.autocast`` on ``device``; for fp32 a context that does nothing.
    """
    dtype = _AMP[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def adamw_impl(requested: str, device: torch.device) -> str:
    """Which AdamW implementation runs.

    ``auto`` is fused on CUDA and the for-loop on CPU (the same bits as foreach there,
    while fused differs in the last bits for ~1 % of a step).

    Args:
        requested: the config's ``adamw`` (``auto``, ``fused``, ``foreach``, ``for-loop``).
        device: where the model runs.

    Returns:
        The implementation's name.
    """
    if requested == "auto":
        return "fused" if device.type == "cuda" else "for-loop"
    return requested


def adamw(model: torch.nn.Module, cfg: TrainingConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms and biases).

    Args:
        model: the model to optimise.
        cfg: the training section (lr, betas, eps, weight decay, ``adamw``).
        device: where the model runs, for the implementation's choice.

    Returns:
        The optimizer.
    """
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=tuple(cfg.betas),
        eps=cfg.eps,
        **_ADAMW_KERNELS[adamw_impl(cfg.adamw, device)],
    )


def attention_impl(requested: str, device: torch.device, compiled: bool) -> str:
    """Which attention kernel training uses.

    ``auto`` is eager attention when compiled on CPU (inductor fuses matmul + softmax:
    1.5-1.8x the plain loop on the quickstart model, against 0.95-1.2x compiled with
    SDPA), SDPA otherwise (uncompiled, eager was within noise of SDPA; on CUDA SDPA is the
    fast path).

    Args:
        requested: the config's ``attention`` (``auto``, ``sdpa``, ``eager``, ...).
        device: where the model runs.
        compiled: whether the model is compiled.

    Returns:
        The HF attention implementation's name.
    """
    if requested != "auto":
        return requested
    return "eager" if compiled and device.type == "cpu" else "sdpa"


def compiles(device: torch.device) -> bool:
    """Whether torch.compile can work here, so a run without a compiler falls back to eager.

    Args:
        device: where the model runs.

    Returns:
        True on CUDA; on CPU, whether inductor finds a C++ compiler.
    """
    if device.type != "cpu":
        return True
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception:  # noqa: BLE001 -- any failure to find one means: do not compile
        return False
    return True


@contextlib.contextmanager
def attention_kernel(model: torch.nn.Module, kernel: str) -> Iterator[None]:
    """Run ``model`` with another attention kernel inside the block, and restore it after.

    The compiled graph stays valid, since its guard sees the training kernel again after.

    Args:
        model: the HF model.
        kernel: the attention implementation for the block (evaluation uses ``sdpa``).

    Yields:
        Nothing.
    """
    before = model.config._attn_implementation
    if before != kernel:
        model.set_attn_implementation(kernel)
    try:
        yield
    finally:
        if before != kernel:
            model.set_attn_implementation(before)


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """``torch.use_deterministic_algorithms`` inside the block (and the caller's setting after).

    Compiled CPU training needs it: without it, on 2 threads (not on 1) some inductor
    kernel accumulated in a varying order, and two identical runs drifted apart from step
    ~4-6 (benchmarks/compile_determinism.py). Uncompiled CPU ops are deterministic
    already, and CUDA would need ``CUBLAS_WORKSPACE_CONFIG``, so only compiled CPU runs use it.

    Args:
        enabled: turn deterministic algorithms on for the block (False: change nothing).

    Yields:
        Nothing.
    """
    if not enabled:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)
