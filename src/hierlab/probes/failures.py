"""Checkpoints that fail: verified before loading, recorded in the metrics folder, retried.

A long hub sweep (OLMo-1B: 351 revisions, a day) meets revisions that are missing, removed
while the sweep runs, or downloaded truncated or corrupt. None of them stops the sweep:
each is recorded in ``RUN/metrics/failed_checkpoints.json`` (source, model, step,
revision or path, the stage that failed -- ``download``, ``verify`` or ``load`` -- and the
reason) and the sweep goes on. A re-run retries exactly those: finished units are kept as
part files and skipped, and a checkpoint recorded as failed is downloaded afresh
(``force_download``), so a corrupt copy in the cache is replaced. A checkpoint that then
succeeds leaves the record.

:func:`verify_files` checks a checkpoint folder before it is loaded: every safetensors file
must be as long as its header says (a truncated download), and every file of an HF cache
snapshot must hash to its blob's name (sha256 for LFS files, the git blob sha1 for the
others) -- the checksums the hub itself publishes, checked offline.
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
    """The failed checkpoints of one run's metrics folder (per rank under torchrun)."""

    def __init__(self, metrics_dir: Path, rank: int = 0, world: int = 1) -> None:
        name = FAILED if world == 1 else FAILED.replace(".json", f"-rank{rank}.json")
        self.path = Path(metrics_dir) / name
        data = read_json(self.path) or {}
        self.entries: dict[str, dict[str, Any]] = {
            e["key"]: e for e in data.get("checkpoints", []) if "key" in e}

    def was_failed(self, ck: Checkpoint) -> bool:
        return _key(ck) in self.entries

    def failed(self, ck: Checkpoint, stage: str, reason: str) -> None:
        self.entries[_key(ck)] = {
            "key": _key(ck), "source": ck.source, "model": ck.model, "step": ck.step,
            "revision": ck.revision, "path": None if ck.path is None else str(ck.path),
            "stage": stage, "reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self._write()

    def succeeded(self, ck: Checkpoint) -> None:
        if self.entries.pop(_key(ck), None) is not None:
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
    """The first problem of checkpoint ``folder`` (None: sound); see the module doc."""
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
