"""Atomic writes: every artefact appears under its final name complete or not at all.

A file is written to a temporary name in the same folder, flushed to disk and renamed
(``os.replace`` is atomic within one filesystem), so a killed job never leaves a
half-written shard, table or checkpoint under a final name, and a full disk is one
:class:`~hierlab.errors.DiskFullError` with nothing partial left behind. Why the
temporary files are not made by ``tempfile``: ``docs/design-pipeline.md``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hierlab import faults
from hierlab.errors import DiskFullError

if TYPE_CHECKING:
    import pyarrow as pa


def _temp_name(path: Path, prefix: str | None = None) -> Path:
    stem = prefix if prefix is not None else f".{path.name}."
    return path.with_name(f"{stem}{uuid.uuid4().hex[:12]}.tmp")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_NEAR_FULL = 1 << 16  # bytes free below which a failed write is taken for a full disk


def _free_bytes(path: Path) -> int | None:
    for p in (path, *path.parents):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return None


def _size_of(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (0 when gone)."""
    try:
        if path.is_dir():
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def is_disk_full(err: BaseException, where: str | Path | None = None) -> bool:
    """Whether ``err`` is a write that ran out of space.

    That is ENOSPC/EDQUOT, the same reported as text by a native writer (safetensors,
    Arrow), or, given ``where``, any write error on a filesystem with (almost) no space
    left (``torch.save`` says only "file write failed").

    Args:
        err: the exception a write raised.
        where: the folder written to, to look at its free space (None: do not look).

    Returns:
        True if the error is best reported as a full disk.
    """
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not isinstance(err, Exception) or isinstance(err, DiskFullError):
        return False
    text = str(err)
    if "No space left on device" in text or "os error 28" in text or "Disk quota" in text:
        return True
    if where is not None and isinstance(err, (OSError, RuntimeError)):
        free = _free_bytes(Path(where))
        return free is not None and free < _NEAR_FULL
    return False


def disk_full_error(path: str | Path, *, needed: int | None = None,
                    written: int | None = None) -> DiskFullError:
    """The one-line error for a write of ``path`` that found the disk full.

    Args:
        path: the final path that was being written.
        needed: the bytes the write needed, when the caller knows them.
        written: else the bytes written before the disk filled (a lower bound).

    Returns:
        The error (not raised), naming the path, the size and the free space there.
    """
    path = Path(path)
    if needed:
        size = f"needs {needed:,} bytes"
    elif written:
        size = f"needs more than the {written:,} bytes written before the disk filled"
    else:
        size = "size unknown"
    free = _free_bytes(path.parent)
    room = f", {free:,} bytes free there" if free is not None else ""
    return DiskFullError(
        f"{path}: no space left on device ({size}{room}); nothing was published under that "
        "name: free space and re-run to resume"
    )


@contextmanager
def atomic_path(path: str | Path, *, size: int | None = None) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; publish it there when the block ends.

    The temporary file already exists (empty, mode ``0666 & ~umask``), so writers that
    open it by name (pyarrow, ``pq.write_table``) keep the umask's mode. On success the
    file is fsynced and renamed onto ``path``; on any error it is removed; a full disk
    becomes :class:`~hierlab.errors.DiskFullError`.

    Args:
        path: the final path.
        size: the bytes being written, when known, for the full-disk message.

    Yields:
        The temporary path to write to.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_name(path)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(path, needed=size) from None
        raise
    try:
        yield tmp
        faults.hit("write", path)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        full = is_disk_full(err, path.parent)
        written = _size_of(tmp)
        tmp.unlink(missing_ok=True)
        if full:
            raise disk_full_error(path, needed=size, written=written) from None
        raise
    faults.hit("published", path)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically.

    Args:
        path: the final path.
        data: the file's bytes.
    """
    with atomic_path(path, size=len(data)) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Args:
        path: the final path.
        text: the file's text.
    """
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (with a final newline) to ``path`` atomically.

    Args:
        path: the final path.
        obj: anything ``json.dumps`` takes; keys keep their order.
    """
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_parquet(table: pa.Table, path: str | Path) -> None:
    """Write an Arrow table as Parquet to ``path`` atomically.

    Args:
        table: the table.
        path: the final path.
    """
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux).

    ``os.umask`` can only be read by setting it, which races with other threads creating
    files; ``/proc/self/status`` reports it directly.

    Returns:
        The umask, e.g. ``0o022``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def apply_umask(root: str | Path) -> None:
    """Give every file under ``root`` mode ``0666 & ~umask`` and every folder ``0777 & ~umask``.

    For folders filled by writers that make private files regardless of the umask
    (safetensors writes ``0600``), which other users and Dask workers could not read.

    Args:
        root: the folder to walk; symbolic links are left alone.
    """
    mask = current_umask()
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o777 & ~mask)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask)


def make_temp_dir(final: str | Path, prefix: str | None = None) -> Path:
    """A new empty folder beside ``final`` (mode ``0777 & ~umask``) to build it in.

    Args:
        final: the folder that will be published.
        prefix: the temporary name's start (default ``.<final name>.``).

    Returns:
        The temporary folder, on the same filesystem as ``final`` so a rename publishes it.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(final, prefix)
    os.mkdir(tmp, 0o777)
    return tmp


def publish_dir(temp_dir: str | Path, final: str | Path, *, overwrite: bool = False) -> bool:
    """Rename the finished folder ``temp_dir`` onto ``final``.

    Modes inside ``temp_dir`` are first set from the umask (:func:`apply_umask`), whatever
    wrote them.

    Args:
        temp_dir: the finished folder (from :func:`make_temp_dir`).
        final: where it is published.
        overwrite: remove an existing ``final`` first. Without it an existing non-empty
            ``final`` (another process finished the same work first) is kept and
            ``temp_dir`` removed.

    Returns:
        True if ``temp_dir`` was published, False if an existing ``final`` was kept.
    """
    tmp, final = Path(temp_dir), Path(final)
    apply_umask(tmp)
    if overwrite and final.exists():
        shutil.rmtree(final)
    try:
        os.replace(tmp, final)
        return True
    except OSError:
        if overwrite or not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return False


@contextmanager
def atomic_dir(
    final: str | Path, *, overwrite: bool = False, prefix: str | None = None
) -> Iterator[Path]:
    """Yield a temporary folder to fill; publish it as ``final`` when the block ends.

    On error the temporary folder is removed and ``final`` is untouched; a full disk
    becomes :class:`~hierlab.errors.DiskFullError`.

    Args:
        final: the folder to publish.
        overwrite: as for :func:`publish_dir`.
        prefix: the temporary folder's name start (callers that sweep up folders torn by a
            kill glob for it).

    Yields:
        The temporary folder to fill.
    """
    final = Path(final)
    try:
        tmp = make_temp_dir(final, prefix)
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(final) from None
        raise
    try:
        yield tmp
        faults.hit("write", final)
    except BaseException as err:
        full = is_disk_full(err, final.parent)
        written = _size_of(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise disk_full_error(final, written=written) from None
        raise
    if publish_dir(tmp, final, overwrite=overwrite):
        faults.hit("published", final)


# ----- checkpoint folders: ``checkpoints/step-XXXXXXXX/`` written by train, read by probes
def step_dir(root: str | Path, step: int) -> Path:
    """The folder of checkpoint ``step`` under ``root``.

    Args:
        root: the checkpoints folder.
        step: the optimizer step.

    Returns:
        ``root/step-XXXXXXXX``, zero-padded so that names sort by step.
    """
    return Path(root) / f"step-{step:08d}"


def list_step_dirs(root: str | Path) -> list[tuple[int, Path]]:
    """Every published checkpoint folder under ``root``.

    Args:
        root: the checkpoints folder (missing: nothing is listed).

    Returns:
        ``(step, folder)`` of every ``step-N`` folder, by step; temporary ``.tmp-*``
        folders of a checkpoint being written are not listed.
    """
    root = Path(root)
    out = []
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit():
                out.append((int(p.name[5:]), p))
    return sorted(out)


def read_json(path: str | Path) -> dict[str, Any] | None:
    """A JSON file's contents, tolerating a file that is not (yet, or any more) there.

    Args:
        path: the JSON file.

    Returns:
        Its contents, or None when it is missing or torn (a killed writer).
    """
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
