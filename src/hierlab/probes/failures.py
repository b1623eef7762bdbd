"""Checkpoints that fail: verified before loading, recorded in the metrics folder, retried.

A long hub sweep meets revisions that are missing, removed mid-sweep, truncated or
corrupt; none of them may stop it. :func:`verify_files` catches a bad download before it
is loaded, and :class:`FailureLog` records each failure so that a re-run retries exactly
those. What is checked and recorded: docs/design-probes.md#failed-checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from pathlib import Path
from typing import Any

from hierlab.io import atomic_write_json, read_json
from hierlab.probes.checkpoints import Checkpoint

__all__ = ["FAILED", "FailureLog", "verify_files"]

FAILED = "failed_checkpoints.json"
_HEX = set("0123456789abcdef")


def _key(ck: Checkpoint) -> str:
    return f"{ck.source}|{ck.model}|{ck.revision or ck.path}|{ck.step}"


class FailureLog:
    """The failed checkpoints of one run's metrics folder (per rank under torchrun).

    Args:
        metrics_dir: the run's ``metrics`` folder.
        rank: this process's rank under torchrun.
        world_size: the number of ranks; with more than one, each rank keeps its own file
            so that no two processes write one.
    """

    def __init__(self, metrics_dir: Path, rank: int = 0, world_size: int = 1) -> None:
        name = FAILED if world_size == 1 else FAILED.replace(".json", f"-rank{rank}.json")
        self.path = Path(metrics_dir) / name
        data = read_json(self.path) or {}
        self.entries: dict[str, dict[str, Any]] = {
            e["key"]: e for e in data.get("checkpoints", []) if "key" in e}

    def was_failed(self, checkpoint: Checkpoint) -> bool:
        """Whether an earlier run recorded ``checkpoint`` as failed.

        Args:
            checkpoint: the checkpoint about to be probed.

        Returns:
            True if it is recorded (its cached copy should be downloaded afresh).
        """
        return _key(checkpoint) in self.entries

    def failed(self, checkpoint: Checkpoint, stage: str, reason: str) -> None:
        """Record a failure and write the file at once (a killed sweep keeps it).

        Args:
            checkpoint: the checkpoint that failed.
            stage: where: ``download``, ``verify``, ``load`` or ``probe``.
            reason: the one-line reason shown to the user.
        """
        self.entries[_key(checkpoint)] = {
            "key": _key(checkpoint), "source": checkpoint.source, "model": checkpoint.model,
            "step": checkpoint.step, "revision": checkpoint.revision,
            "path": None if checkpoint.path is None else str(checkpoint.path),
            "stage": stage, "reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self._write()

    def succeeded(self, checkpoint: Checkpoint) -> None:
        """Drop the record of a checkpoint that has now been probed.

        Args:
            checkpoint: the checkpoint that succeeded.
        """
        if self.entries.pop(_key(checkpoint), None) is not None:
            self._write()

    def _write(self) -> None:
        if not self.entries:
            self.path.unlink(missing_ok=True)
            return
        atomic_write_json(self.path, {"checkpoints": sorted(
            self.entries.values(), key=lambda e: (e["source"], e["model"], e["step"]))})


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{path.name}: truncated ({size} bytes, no header)"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                return f"{path.name}: truncated ({size:,} bytes, header of {n:,} bytes)"
            header = json.loads(fh.read(n))
    except (OSError, ValueError) as err:
        return f"{path.name}: unreadable header ({err})"
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
    want = 8 + n + max(ends, default=0)
    if size != want:
        return f"{path.name}: truncated ({size:,} of {want:,} bytes)"
    return None


def _digest(path: Path, kind: str) -> str:
    h = hashlib.sha256() if kind == "sha256" else hashlib.sha1()
    if kind == "git":
        h.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def verify_files(folder: Path) -> str | None:
    """Check a checkpoint folder before loading it, offline.

    Every safetensors file must be as long as its header says (a truncated download), and
    every file of an HF cache snapshot must hash to its blob's name (sha256 for LFS files,
    the git blob sha1 for the others): the checksums the hub itself publishes.

    Args:
        folder: the checkpoint folder (a snapshot of the HF cache or a plain folder).

    Returns:
        The first problem found, as one line, or ``None`` if the folder is sound.
    """
    folder = Path(folder)
    for f in sorted(folder.rglob("*")):
        if not f.exists():
            return f"{f.name}: missing (broken link into the download cache)"
        if f.is_dir():
            continue
        if f.suffix == ".safetensors":  # the more telling reason first
            problem = _safetensors_problem(f)
            if problem:
                return problem
        if f.is_symlink():  # an HF cache snapshot: the blob's name is its checksum
            blob = Path(os.path.realpath(f)).name
            kind = {64: "sha256", 40: "git"}.get(len(blob)) if set(blob) <= _HEX else None
            if kind is not None and _digest(f, kind) != blob:
                return f"{f.name}: checksum mismatch ({kind} is not the hub's {blob[:12]}…)"
    return None
