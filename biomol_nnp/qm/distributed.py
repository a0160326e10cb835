"""Labeling on Dask distributed: a LocalCluster of worker processes, or a scheduler at an address.

One task per chunk of ``LabelSettings.chunk_size`` configurations runs
:func:`~biomol_nnp.qm.labeling.label_chunk` on a worker; results come back to the calling process
in completion order (``distributed.as_completed``), where the caller writes them to the store. A
task that cannot run (a worker killed twice, an unpicklable input) yields failed records with the
reason. Workers run with one thread each, and xtb/PySCF with ``LabelSettings.threads`` threads.

>>> for items, records in dask_label(todo, LabelSettings(), workers=2):  # doctest: +SKIP
...     ...
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from typing import Any

from biomol_nnp.config import LabelSettings
from biomol_nnp.exceptions import InputError
from biomol_nnp.qm.sampling import Configuration

logger = logging.getLogger(__name__)

_INSTALL_HINT = "pip install dask distributed"

Item = tuple[Configuration, int]


def make_client(workers: int, scheduler_address: str | None, stack: ExitStack) -> Any:
    """A Dask client: connected to ``scheduler_address``, or to a new LocalCluster of ``workers`` processes.

    Both are closed when ``stack`` closes.

    Raises
    ------
    InputError
        Dask is not installed, the scheduler cannot be reached, or ``workers`` < 1 without an address.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise InputError(f"distributed labeling needs Dask: {_INSTALL_HINT}") from err
    if scheduler_address:
        try:
            client = stack.enter_context(Client(scheduler_address, timeout="20s"))
        except OSError as err:
            raise InputError(
                f"cannot connect to the Dask scheduler at {scheduler_address!r}: {err}; check the address "
                "(tcp://host:8786) and that `dask scheduler` runs there"
            ) from err
        logger.info("connected to Dask scheduler %s", scheduler_address)
        return client
    if workers < 1:
        raise InputError(f"workers must be >= 1 for a LocalCluster, got {workers}")
    cluster = stack.enter_context(
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        )
    )
    client = stack.enter_context(Client(cluster))
    logger.info("started a Dask LocalCluster with %d worker processes", workers)
    return client


def dask_label(
    todo: Sequence[Item],
    settings: LabelSettings,
    workers: int,
    scheduler_address: str | None = None,
    client: Any = None,
) -> Iterator[tuple[list[Item], list[Any]]]:
    """Label ``todo`` on Dask and yield ``(items, records)`` per finished task, in completion order.

    Parameters
    ----------
    todo : sequence of (Configuration, int)
        Configurations with the index of the record they supersede (-1 for none).
    settings : LabelSettings
        Method and ``chunk_size``.
    workers : int
        LocalCluster worker processes (ignored with ``scheduler_address`` or ``client``).
    scheduler_address : str, optional
        Existing scheduler.
    client : distributed.Client, optional
        Existing client (not closed here).

    Yields
    ------
    items : list of (Configuration, int)
    records : list of LabelRecord
    """
    from distributed import as_completed

    from biomol_nnp.qm.labeling import LabelRecord, chunks, label_chunk

    if not todo:
        return
    with ExitStack() as stack:
        if client is None:
            client = make_client(workers, scheduler_address, stack)
        futures = {}
        for items in chunks(todo, settings.chunk_size):
            future = client.submit(label_chunk, [config for config, _ in items], settings, pure=False)
            futures[future] = items
        try:
            for future in as_completed(list(futures)):
                items = futures.pop(future)
                try:
                    records = future.result()
                except Exception as err:  # noqa: BLE001 - a lost task fails its configurations, the job goes on
                    reason = f"dask: {type(err).__name__}: {' '.join(str(err).split())}"
                    records = [
                        LabelRecord(config, None, None, "failed", reason, settings.method) for config, _ in items
                    ]
                yield items, records
        finally:
            if futures:
                logger.warning("cancelling %d unfinished Dask tasks", len(futures))
                client.cancel(list(futures))
