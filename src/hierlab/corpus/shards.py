"""Token shards on disk: Arrow IPC *stream* format, a manifest, atomic writes, a reader.

A memory-mapped shard gives a reader a zero-copy ``uint16`` numpy view, so peak memory
stays independent of corpus size, and HF ``datasets`` and any Arrow tool read it directly.
Every file is published by an atomic rename, so a killed job never leaves a half-written
shard under a final name. Why this layout: ``docs/design-pipeline.md``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from hierlab import __version__
from hierlab.errors import DataError
from hierlab.io import atomic_path, atomic_write_json
from hierlab.io import atomic_write_bytes as atomic_write_bytes  # re-export: old imports

FORMAT = "hierlab-shards/1"
MANIFEST = "manifest.json"

#: annotation columns and their types (``role`` holds :data:`hierlab.contracts.ROLE_CODES`)
ANNOTATION_TYPES: dict[str, pa.DataType] = {
    "doc": pa.uint32(),
    "section": pa.uint16(),
    "paragraph": pa.uint16(),
    "sentence": pa.uint32(),
    "role": pa.uint8(),
}


def shard_name(index: int) -> str:
    """The file name of a shard, zero-padded so that names sort by index.

    Args:
        index: the shard's index in its split.

    Returns:
        ``shard-NNNNN.arrow``.
    """
    return f"shard-{index:05d}.arrow"


def sha256_file(path: Path, chunk_bytes: int = 1 << 22) -> str:
    """A file's SHA-256, read in chunks so that memory does not grow with the file.

    Args:
        path: the file.
        chunk_bytes: bytes read at a time.

    Returns:
        The hex digest.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def _write_arrow(path: Path, columns: Mapping[str, np.ndarray], metadata: dict | None) -> None:
    arrays = {}
    for name, values in columns.items():
        typ = pa.uint16() if name == "input_ids" else ANNOTATION_TYPES.get(name)
        arrays[name] = pa.array(values, type=typ) if typ is not None else pa.array(values)
    fields = [pa.field(n, a.type, nullable=False) for n, a in arrays.items()]
    schema = pa.schema(fields, metadata={"hierlab": json.dumps(metadata or {})})
    batch = pa.record_batch(list(arrays.values()), schema=schema)
    with (atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as sink,
          pa.ipc.new_stream(sink, schema) as writer):
        writer.write_batch(batch)


def write_shard(
    split_dir: Path,
    index: int,
    tokens: np.ndarray,
    *,
    units: int,
    doc_starts: np.ndarray | None = None,
    annotations: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Write shard ``index`` (and its doc-offset sidecar) atomically.

    A ``.done.json`` marker is written last, so a shard counts as finished only once its
    data and sidecar are both complete.

    Args:
        split_dir: the split's folder.
        index: the shard's index.
        tokens: its token ids (uint16).
        units: the documents or sentences it holds.
        doc_starts: offsets within the shard where a document starts (None: no sidecar).
        annotations: per-token annotation columns, each as long as ``tokens``.

    Returns:
        The shard's record (file, tokens, units, sha256, docs_file, docs_sha256): what the
        manifest lists.
    """
    if tokens.dtype != np.uint16:
        raise ValueError(f"tokens must be uint16, got {tokens.dtype}")
    split_dir = Path(split_dir)
    name = shard_name(index)
    cols: dict[str, np.ndarray] = {"input_ids": tokens}
    for key, values in (annotations or {}).items():
        if len(values) != len(tokens):
            raise ValueError(f"annotation {key!r} has {len(values)} rows, tokens {len(tokens)}")
        cols[key] = values
    _write_arrow(split_dir / name, cols, {"shard": index, "units": units})
    record: dict[str, Any] = {
        "file": name,
        "tokens": int(len(tokens)),
        "units": int(units),
        "sha256": sha256_file(split_dir / name),
        "docs_file": None,
    }
    if doc_starts is not None:
        docs_name = name.replace(".arrow", ".docs.arrow")
        _write_arrow(split_dir / docs_name, {"offset": doc_starts.astype(np.int64)}, None)
        record["docs_file"] = docs_name
        record["docs_sha256"] = sha256_file(split_dir / docs_name)
    atomic_write_json(split_dir / f".{name}.done.json", record)
    return record


def finished_shard(split_dir: Path, index: int) -> dict[str, Any] | None:
    """The record of a finished shard, or None if it must be (re)generated.

    A shard is finished when its marker exists and the file sizes are plausible; the
    checksum is verified by :meth:`SplitReader.verify`.

    Args:
        split_dir: the split's folder.
        index: the shard's index.

    Returns:
        The record its marker holds, or None.
    """
    marker = Path(split_dir) / f".{shard_name(index)}.done.json"
    if not marker.exists():
        return None
    try:
        rec = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return None
    path = Path(split_dir) / rec["file"]
    if not path.exists() or path.stat().st_size < 2 * rec["tokens"]:
        return None
    if rec.get("docs_file") and not (Path(split_dir) / rec["docs_file"]).exists():
        return None
    return rec


def write_manifest(split_dir: Path, records: list[dict[str, Any]], **fields: Any) -> Path:
    """Write ``manifest.json`` atomically, which marks the split complete.

    The shards' ``.done.json`` markers are removed afterwards: the manifest now lists them.

    Args:
        split_dir: the split's folder.
        records: every shard's record, in index order.
        **fields: the caller's fields (corpus, config, hash, ids, loss floors ...).

    Returns:
        The manifest's path.
    """
    split_dir = Path(split_dir)
    manifest = {
        "format": FORMAT,
        "hierlab_version": __version__,
        **fields,
        "shards": records,
        "total_tokens": int(sum(r["tokens"] for r in records)),
        "units": int(sum(r["units"] for r in records)),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic_write_json(split_dir / MANIFEST, manifest)
    for i in range(len(records)):
        (split_dir / f".{shard_name(i)}.done.json").unlink(missing_ok=True)
    return split_dir / MANIFEST


def write_split(
    split_dir: Path,
    shards: list[np.ndarray],
    *,
    manifest: dict[str, Any],
    doc_starts: list[np.ndarray] | None = None,
) -> Path:
    """Write a whole split from in-memory arrays (tests, small tools).

    Args:
        split_dir: the split's folder.
        shards: each shard's tokens.
        manifest: the manifest's fields beside the shard list (``vocab_size`` ...).
        doc_starts: each shard's document offsets (None: no sidecars, 0 units).

    Returns:
        The manifest's path.
    """
    records = [
        write_shard(
            split_dir,
            i,
            np.asarray(t, dtype=np.uint16),
            units=len(doc_starts[i]) if doc_starts else 0,
            doc_starts=doc_starts[i] if doc_starts else None,
        )
        for i, t in enumerate(shards)
    ]
    return write_manifest(split_dir, records, **manifest)


def read_manifest(split_dir: Path) -> dict[str, Any]:
    """A split's manifest, checked to be one this version reads.

    Args:
        split_dir: the split's folder.

    Returns:
        The manifest; a missing, corrupt or foreign one is a
        :class:`~hierlab.errors.DataError`.
    """
    path = Path(split_dir) / MANIFEST
    if not path.exists():
        raise DataError(f"{path}: no manifest (generate the corpus first: hierlab corpus)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: corrupt manifest ({err})") from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path}: unknown format {manifest.get('format')!r}, expected {FORMAT}")
    return manifest


_FILE_MAGIC = b"ARROW1"


def map_batch(path: str | Path) -> pa.RecordBatch:
    """The single record batch of a shard, its buffers backed by a memory map (no copy).

    Reads the IPC stream format (written now) and the IPC file format (earlier
    corpora), told apart by the file format's leading magic bytes.

    Args:
        path: the shard (or sidecar) file.

    Returns:
        The record batch.
    """
    source = pa.memory_map(str(path), "r")
    if source.read(len(_FILE_MAGIC)) == _FILE_MAGIC:
        return pa.ipc.open_file(source).get_batch(0)
    source.seek(0)
    return pa.ipc.open_stream(source).read_next_batch()


def _map_column(path: Path, column: str) -> np.ndarray:
    try:
        batch = map_batch(path)
        return batch.column(column).to_numpy(zero_copy_only=True)
    except (OSError, pa.ArrowInvalid, KeyError, IndexError, StopIteration) as err:
        raise DataError(f"{path}: unreadable shard ({err})") from None


class SplitReader:
    """Memory-mapped access to one split (``corpus/<name>/<split>``).

    Nothing is read until asked for; ``read`` copies only the requested window, so a
    reader over a 100 GB split costs a few KB of RAM.
    """

    def __init__(self, split_dir: str | Path) -> None:
        """Open a split by its manifest; no shard is read yet.

        Args:
            split_dir: the split's folder.
        """
        self.path = Path(split_dir)
        self.manifest = read_manifest(self.path)
        self._shards: list[np.ndarray | None] = [None] * len(self.manifest["shards"])
        counts = [r["tokens"] for r in self.manifest["shards"]]
        self.offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])

    @property
    def total_tokens(self) -> int:
        """Tokens in the whole split."""
        return int(self.offsets[-1])

    @property
    def num_shards(self) -> int:
        """Shards in the split."""
        return len(self._shards)

    @property
    def vocab_size(self) -> int:
        """The vocabulary a model needs for this corpus (the manifest's ``vocab_size``)."""
        return int(self.manifest["vocab_size"])

    def shard_tokens(self, index: int) -> np.ndarray:
        """One shard's tokens, memory-mapped once and kept.

        Args:
            index: the shard's index.

        Returns:
            A zero-copy, read-only uint16 array.
        """
        arr = self._shards[index]
        if arr is None:
            rec = self.manifest["shards"][index]
            arr = _map_column(self.path / rec["file"], "input_ids")
            if len(arr) != rec["tokens"]:
                raise DataError(
                    f"{self.path / rec['file']}: {len(arr)} tokens, manifest says {rec['tokens']}"
                )
            self._shards[index] = arr
        return arr

    def column(self, index: int, name: str) -> np.ndarray:
        """An annotation column of one shard.

        Args:
            index: the shard's index.
            name: the column (``role``, ``sentence``, ...).

        Returns:
            A zero-copy array; a corpus generated without annotations is a
            :class:`~hierlab.errors.DataError` that says how to get them.
        """
        if name not in self.manifest.get("columns", ["input_ids"]):
            raise DataError(
                f"{self.path}: no column {name!r} (columns: {self.manifest.get('columns')}); "
                "generate the corpus with annotations: true"
            )
        return _map_column(self.path / self.manifest["shards"][index]["file"], name)

    def read(self, start: int, length: int) -> np.ndarray:
        """A window of the whole split, across shard boundaries.

        Args:
            start: the first token's offset in the split.
            length: the window's length.

        Returns:
            Tokens ``[start, start+length)``, a new uint16 array (only they are copied).
        """
        if start < 0 or length < 0 or start + length > self.total_tokens:
            raise DataError(
                f"{self.path}: window [{start}, {start + length}) outside the split's "
                f"{self.total_tokens} tokens"
            )
        out = np.empty(length, dtype=np.uint16)
        pos = 0
        i = int(np.searchsorted(self.offsets, start, side="right") - 1)
        while pos < length:
            lo = start + pos - int(self.offsets[i])
            take = min(length - pos, int(self.offsets[i + 1]) - (start + pos))
            out[pos : pos + take] = self.shard_tokens(i)[lo : lo + take]
            pos += take
            i += 1
        return out

    def doc_starts(self) -> np.ndarray:
        """Where documents start, so that training windows can be aligned to them.

        Returns:
            Offsets in the whole split (int64) at which documents (pcfg) or sentences
            (ngram) start.
        """
        parts = []
        for i, rec in enumerate(self.manifest["shards"]):
            if not rec.get("docs_file"):
                raise DataError(f"{self.path}: shard {rec['file']} has no document offsets")
            parts.append(_map_column(self.path / rec["docs_file"], "offset") + self.offsets[i])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def verify(self) -> None:
        """Recompute every checksum; raise DataError naming the first corrupt file."""
        for rec in self.manifest["shards"]:
            for key, sha in (("file", "sha256"), ("docs_file", "docs_sha256")):
                if not rec.get(key):
                    continue
                path = self.path / rec[key]
                if not path.exists():
                    raise DataError(f"{path}: missing shard file")
                if sha256_file(path) != rec[sha]:
                    raise DataError(f"{path}: checksum mismatch (corrupt shard; regenerate it)")
