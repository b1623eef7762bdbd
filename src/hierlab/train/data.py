"""Training data: fixed-length token windows gathered from memory-mapped shards.

A window is ``context_length`` tokens, at a fixed offset or aligned to a document start.
The window order is a keyed permutation computed on demand, a pure function of (seed,
sample position), so it does not depend on ranks or workers, resuming needs only the step,
and no permutation array is held in memory; gathering copies only the requested windows,
so memory does not grow with the corpus. Why this shape: ``docs/design-pipeline.md``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa

from hierlab.corpus.rng import feistel_permute_array
from hierlab.corpus.shards import SplitReader, map_batch
from hierlab.errors import DataError

__all__ = ["TokenWindows", "WindowOrder", "batch_positions", "eval_window_indices"]


class WindowOrder:
    """A seeded shuffle of ``n`` window indices per epoch, computed on demand.

    ``order(positions)`` maps run-wide sample positions (0, 1, 2, ...) to window indices;
    each block of ``n`` consecutive positions is one epoch, a permutation of ``range(n)``.
    """

    ROUNDS = 6

    def __init__(self, n_windows: int, seed: int) -> None:
        """Set up the order; nothing is drawn until positions are asked for.

        Args:
            n_windows: the windows of the split (``n``).
            seed: the run's seed; each epoch's key derives from it.
        """
        if n_windows < 1:
            raise ValueError("WindowOrder needs n >= 1")
        self.n = int(n_windows)
        self.seed = int(seed)
        self._keys: dict[int, np.ndarray] = {}

    def _round_keys(self, epoch: int) -> np.ndarray:
        keys = self._keys.get(epoch)
        if keys is None:
            ss = np.random.SeedSequence([self.seed, 0x7EA1, epoch])
            keys = ss.generate_state(self.ROUNDS, dtype=np.uint64)
            self._keys = {epoch: keys}  # one epoch at a time is enough
        return keys

    def permute(self, positions: np.ndarray, epoch: int) -> np.ndarray:
        """One epoch's permutation of the windows, at some positions.

        Args:
            positions: positions within the epoch, in ``[0, n)``.
            epoch: the epoch, which keys the permutation.

        Returns:
            The window indices at those positions (the corpus's Feistel network,
            :func:`hierlab.corpus.rng.feistel_permute_array`).
        """
        return feistel_permute_array(positions, self.n, self._round_keys(epoch))

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        """Map run-wide sample positions to window indices.

        Args:
            positions: sample positions of the run (0, 1, 2, ...), across epochs.

        Returns:
            Their window indices (int64).
        """
        positions = np.asarray(positions, dtype=np.int64)
        epochs = positions // self.n
        out = np.empty(len(positions), dtype=np.int64)
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self.permute(positions[sel] % self.n, int(e))
        return out


def batch_positions(step: int, batch_size: int, rank: int = 0,
                    world_size: int = 1) -> np.ndarray:
    """Sample positions of optimizer step ``step`` that one rank trains on.

    The global batch is positions ``[step*B, (step+1)*B)``; rank r takes every w-th one
    starting at r, so the union over ranks is the same for any world size.

    Args:
        step: the optimizer step.
        batch_size: B, the global batch in windows.
        rank: this process's rank.
        world_size: w, the number of ranks.

    Returns:
        The rank's sample positions (int64), for :class:`WindowOrder`.
    """
    return np.arange(step * batch_size + rank, (step + 1) * batch_size, world_size,
                     dtype=np.int64)


def eval_window_indices(n_windows: int, n_eval: int) -> np.ndarray:
    """The test windows of every evaluation: a fixed, seed-free set spread over the split.

    Args:
        n_windows: the windows of the test split.
        n_eval: how many to score (at most ``n_windows``).

    Returns:
        ``min(n_eval, n_windows)`` window indices spread evenly over the split.
    """
    n_eval = min(n_eval, n_windows)
    return (np.arange(n_eval, dtype=np.int64) * n_windows) // max(n_eval, 1)


@numba.njit(cache=True)
def _pack(doc_starts: np.ndarray, total: int, ctx: int, min_start: int, out: np.ndarray) -> int:
    n = 0
    for j in range(len(doc_starts)):
        s = doc_starts[j]
        if s < min_start:
            continue
        if s + ctx > total:
            break
        out[n] = s
        n += 1
        min_start = s + ctx
    return n


def _read_offsets(path: Path) -> np.ndarray:
    try:
        batch = map_batch(path)
        return np.array(batch.column("offset").to_numpy(zero_copy_only=False), np.int64)
    except (OSError, pa.ArrowInvalid, KeyError, IndexError, StopIteration) as err:
        raise DataError(f"{path}: unreadable document offsets ({err})") from None


class TokenWindows:
    """Fixed-length windows of one split, gathered by index from the memory maps."""

    def __init__(
        self,
        split_dir: str | Path,
        context_length: int,
        *,
        align_to_documents: bool = False,
        keep_boundary_token: bool = True,
    ) -> None:
        """Lay out the windows of a split; no tokens are read unless windows are aligned.

        Args:
            split_dir: the split's folder.
            context_length: tokens per window.
            align_to_documents: start every window at a document start (greedy packing)
                instead of at multiples of ``context_length``.
            keep_boundary_token: with aligned windows, start on the document's boundary
                token rather than after it.
        """
        self.reader = SplitReader(split_dir)
        self.path = self.reader.path
        self.context_length = int(context_length)
        self.vocab_size = self.reader.vocab_size
        self._offsets = self.reader.offsets
        self._starts: np.ndarray | None = None
        total = self.reader.total_tokens
        if align_to_documents:
            self._starts = self._aligned_starts(keep_boundary_token)
            self.n_windows = len(self._starts)
        else:
            self.n_windows = total // self.context_length
        self._arange = np.arange(self.context_length, dtype=np.int64)

    # ----- window layout ------------------------------------------------------------------
    def _aligned_starts(self, keep_boundary: bool) -> np.ndarray:
        ctx, total = self.context_length, self.reader.total_tokens
        boundary = self.reader.manifest.get("boundary_id")
        parts: list[np.ndarray] = []
        min_start = 0
        for i, rec in enumerate(self.reader.manifest["shards"]):
            if not rec.get("docs_file"):
                raise DataError(
                    f"{self.path}: shard {rec['file']} has no document offsets "
                    "(set training.align_to_documents: false)"
                )
            starts = _read_offsets(self.path / rec["docs_file"]) + int(self._offsets[i])
            if boundary is not None and len(starts):
                starts = self._adjust_boundary(starts, int(boundary), keep_boundary)
            out = np.empty(len(starts), dtype=np.int64)
            n = _pack(starts, total, ctx, min_start, out)
            if n:
                parts.append(out[:n].copy())
                min_start = int(out[n - 1]) + ctx
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _adjust_boundary(self, starts: np.ndarray, boundary: int, keep: bool) -> np.ndarray:
        """Move a start onto (keep) or past (drop) the boundary token at the document start,
        whichever side of it the corpus recorded the offset."""
        total = self.reader.total_tokens
        if keep:
            prev = np.clip(starts - 1, 0, total - 1)
            hit = (starts > 0) & (self._tokens_at(prev) == boundary)
            return np.where(hit, starts - 1, starts)
        cur = np.clip(starts, 0, total - 1)
        hit = (starts < total) & (self._tokens_at(cur) == boundary)
        return np.where(hit, starts + 1, starts)

    def _tokens_at(self, pos: np.ndarray) -> np.ndarray:
        shard = np.searchsorted(self._offsets, pos, side="right") - 1
        out = np.empty(len(pos), dtype=np.uint16)
        for i in np.unique(shard):
            sel = shard == i
            out[sel] = self.reader.shard_tokens(int(i))[pos[sel] - self._offsets[i]]
        return out

    def starts(self, indices: np.ndarray) -> np.ndarray:
        """Where windows start in the split.

        Args:
            indices: window indices.

        Returns:
            Their global token offsets (int64).
        """
        idx = np.asarray(indices, dtype=np.int64)
        if self._starts is not None:
            return self._starts[idx]
        return idx * self.context_length

    # ----- gathering ----------------------------------------------------------------------
    def gather(self, indices: np.ndarray) -> np.ndarray:
        """Copy some windows out of the memory maps.

        Ids outside the vocabulary raise :class:`~hierlab.errors.DataError` here, before any
        model sees them.

        Args:
            indices: window indices.

        Returns:
            A ``(len(indices), context_length)`` uint16 array.
        """
        starts = self.starts(indices)
        ctx = self.context_length
        out = np.empty((len(starts), ctx), dtype=np.uint16)
        shard = np.searchsorted(self._offsets, starts, side="right") - 1
        for i in np.unique(shard):
            sel = np.flatnonzero(shard == i)
            lo = starts[sel] - self._offsets[i]
            inside = lo + ctx <= self._offsets[i + 1] - self._offsets[i]
            if inside.any():
                tok = self.reader.shard_tokens(int(i))
                out[sel[inside]] = tok[lo[inside, None] + self._arange]
            for j in sel[~inside]:  # windows crossing into the next shard (rare)
                out[j] = self.reader.read(int(starts[j]), ctx)
        top = int(out.max()) if out.size else 0
        if top >= self.vocab_size:
            row = int(np.argmax(out.max(axis=1)))
            raise DataError(
                f"{self.path}: token id {top} >= vocab_size {self.vocab_size} in the window "
                f"at offset {int(starts[row])} (corrupt shard or wrong manifest; regenerate "
                "the corpus)"
            )
        return out

    def check_ids(self, max_tokens: int = 1 << 28) -> None:
        """Scan the whole split for ids >= vocab_size if it is small (cheap up front check).

        Larger splits are checked batch by batch in :meth:`gather`. A bad id is a
        :class:`~hierlab.errors.DataError` naming the shard.

        Args:
            max_tokens: the largest split scanned up front.
        """
        if self.reader.total_tokens > max_tokens:
            return
        for i in range(self.reader.num_shards):
            tok = self.reader.shard_tokens(i)
            if len(tok) and int(tok.max()) >= self.vocab_size:
                raise DataError(
                    f"{self.path / self.reader.manifest['shards'][i]['file']}: token id "
                    f"{int(tok.max())} >= vocab_size {self.vocab_size} (corrupt shard or "
                    "wrong manifest; regenerate the corpus)"
                )

    def iter_batches(self, indices: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
        """Gather windows in batches, so only one batch is in memory at a time.

        Args:
            indices: window indices, in order.
            batch_size: windows per batch (the last may be short).

        Yields:
            Each batch, as :meth:`gather` returns it.
        """
        for lo in range(0, len(indices), batch_size):
            yield self.gather(indices[lo : lo + batch_size])
