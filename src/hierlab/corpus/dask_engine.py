"""The ``engine="dask"`` map of :mod:`~hierlab.corpus.generate`: shards on a Dask cluster.

Dask re-runs the task of a lost worker elsewhere (shards are pure and written atomically,
so the bytes are the same); a shard whose workers kept dying (``KilledWorker``) is one
line, and a re-run redoes only the unfinished shards. A stop request (:mod:`hierlab.preempt`)
cancels the shards not yet finished.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hierlab import preempt
from hierlab.errors import ConfigError, DataError

__all__ = ["dask_map"]


def dask_map(function: Callable[..., dict[str, Any]], jobs: list[tuple], workers: int,
             scheduler: str | None, bar: Any) -> list[dict[str, Any]]:
    """Run ``function(*job)`` of every job on a Dask cluster, stopping early on a stop request.

    Args:
        function: the shard builder (a pure function, so a retried task gives the same
            bytes).
        jobs: its argument tuples, ``(config JSON, split, shard index, split folder)``.
        workers: processes of the local cluster started when no ``scheduler`` is given.
        scheduler: a running scheduler's address (``tcp://host:8786``), or None.
        bar: a progress bar, advanced once per finished job.

    Returns:
        The jobs' results in the order they finished (after a stop request, only those
        finished so far). A missing ``dask`` is a :class:`~hierlab.errors.ConfigError`;
        a shard whose every worker died is a :class:`~hierlab.errors.DataError`.
    """
    try:
        from dask.distributed import Client, LocalCluster
        from dask.distributed import as_completed as dask_completed
    except ImportError:
        raise ConfigError(
            "--engine dask needs the 'scale' extra: pip install 'hierlab[scale]'"
        ) from None
    results: list[dict[str, Any]] = []
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        futures = [client.submit(function, *job, pure=False) for job in jobs]
        for fut in dask_completed(futures):
            results.append(_dask_result(fut, jobs[futures.index(fut)]))
            bar.update(1)
            if preempt.requested():
                client.cancel(futures)
                break
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return results


def _dask_result(fut: Any, job: tuple) -> dict[str, Any]:
    """A Dask shard's record, or one line for a shard that lost its worker every time."""
    try:
        return fut.result()
    except Exception as err:
        if type(err).__name__ != "KilledWorker":
            raise
        raise DataError(
            f"{job[3]}: shard {job[2]} lost its Dask worker on every try "
            f"({str(err).splitlines()[0][:160]}); finished "
            "shards are kept, none is half-written: re-run to complete the corpus"
        ) from None
