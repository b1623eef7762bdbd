"""Training data: fixed-length token windows gathered from memory-mapped shards.

Why this shape:

* A window is ``context_length`` tokens; labels are the inputs (the HF model shifts them),
  so each window gives ``context_length - 1`` predictions, as in the reference
  (docs/reference-study.md#model-and-training).
* Window ``i`` starts at ``i * context_length`` (no state at all), or, with
  ``align_to_documents``, at a document start (greedy packing: the next window starts at
  the first document start at or after the previous window's end). Aligned starts cost
  8 bytes per window (1/256 of the corpus size) and are built shard by shard.
* The order is a keyed pseudo-random permutation (the corpus's Feistel network with cycle
  walking, :mod:`hierlab.corpus.rng`) of the window indices, one key per (seed, epoch).
  Sample ``p`` of the run is window ``perm_{p // n}(p % n)``: a pure function of (seed,
  p), so the order does not depend on the number of ranks or workers, resuming needs only
  the step, and no permutation array is ever held in memory. Under DDP rank ``r`` of
  ``w`` takes samples ``r, r+w, ...`` of each global batch.
* Gathering copies only the requested windows out of the memory maps (fancy indexing per
  shard), so peak RSS does not grow with the corpus.
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

    def __init__(self, n: int, seed: int) -> None:
        if n < 1:
            raise ValueError("WindowOrder needs n >= 1")
        self.n = int(n)
        self.seed = int(seed)
        self._keys: dict[int, np.ndarray] = {}

    def _round_keys(self, epoch: int) -> np.ndarray:
        keys = self._keys.get(epoch)
        if keys is None:
            ss = np.random.SeedSequence([self.seed, 0x7EA1, epoch])
            keys = ss.generate_state(self.ROUNDS, dtype=np.uint64)
            self._keys = {epoch: keys}  # one epoch at a time is enough
        return keys

    def permute(self, idx: np.ndarray, epoch: int) -> np.ndarray:
        """The epoch's permutation applied to indices in ``[0, n)`` (the corpus's Feistel
        network, :func:`hierlab.corpus.rng.feistel_permute_array`, keyed per epoch)."""
        return feistel_permute_array(idx, self.n, self._round_keys(epoch))

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        epochs = positions // self.n
        out = np.empty(len(positions), dtype=np.int64)
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self.permute(positions[sel] % self.n, int(e))
        return out


def batch_positions(step: int, batch_size: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """Sample positions of optimizer step ``step`` that rank ``rank`` of ``world`` trains on.

    The global batch is positions ``[step*B, (step+1)*B)``; rank r takes every w-th one
    starting at r, so the union over ranks is the same for any world size.
    """
    return np.arange(step * batch_size + rank, (step + 1) * batch_size, world, dtype=np.int64)


def eval_window_indices(n_windows: int, n_eval: int) -> np.ndarray:
    """``n_eval`` window indices spread evenly over the split (a fixed, seed-free set)."""
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

    def starts(self, idx: np.ndarray) -> np.ndarray:
        """Global token offsets of windows ``idx``."""
        idx = np.asarray(idx, dtype=np.int64)
        if self._starts is not None:
            return self._starts[idx]
        return idx * self.context_length

    # ----- gathering ----------------------------------------------------------------------
    def gather(self, idx: np.ndarray) -> np.ndarray:
        """Windows ``idx`` as an ``(len(idx), context_length)`` uint16 array (a copy).

        Ids outside the vocabulary raise :class:`DataError` here, before any model sees them.
        """
        starts = self.starts(idx)
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
        """Scan the whole split for ids >= vocab_size if it is small (cheap up front check);
        larger splits are checked batch by batch in :meth:`gather`."""
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

    def iter_batches(self, idx: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
        """Gather ``idx`` in chunks of ``batch_size`` windows."""
        for lo in range(0, len(idx), batch_size):
            yield self.gather(idx[lo : lo + batch_size])
