"""Ensemble members trained as Dask tasks (a LocalCluster, or a scheduler at an address).

One task per member runs :func:`~biomol_nnp.train.trainer.train_member` on a worker with one torch
thread, exactly as the in-process path does, so the same seeds give the same weights. The training
data are sent to the workers once (``scatter``); checkpoints go to ``checkpoint_dir``, which must be on
a file system the workers share with this process. The client comes from
:func:`biomol_nnp.qm.distributed.make_client` (the same one the labeling uses).

>>> results = dask_train_members(train, validation, ModelSettings(), TrainSettings(workers=2))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING

from biomol_nnp.config import ModelSettings, TrainSettings
from biomol_nnp.qm.distributed import make_client
from biomol_nnp.train.data import TrainingSample

if TYPE_CHECKING:
    from biomol_nnp.train.trainer import MemberResult, ProgressCallback

logger = logging.getLogger(__name__)


def dask_train_members(
    train: Sequence[TrainingSample],
    validation: Sequence[TrainingSample],
    model_settings: ModelSettings,
    settings: TrainSettings,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: ProgressCallback | None = None,
) -> list[MemberResult]:
    """Train ``settings.ensemble_size`` members as Dask tasks; results in member order.

    ``progress(done, total, loss)`` is called as each member finishes (member-epochs).
    A failing member raises its exception here after the other tasks are cancelled.
    """
    from distributed import as_completed

    total = settings.epochs * settings.ensemble_size
    with ExitStack() as stack:
        client = make_client(settings.workers, settings.scheduler_address, stack)
        [data] = client.scatter([(list(train), list(validation))], broadcast=True)
        futures = [
            client.submit(
                _train_member_task, data, model_settings, settings, member, checkpoint_dir, resume, pure=False
            )
            for member in range(settings.ensemble_size)
        ]
        results: list[MemberResult] = []
        try:
            for future in as_completed(futures):
                result = future.result()
                results.append(result)
                logger.info("member %d finished on Dask (%d epochs)", result.member, len(result.history))
                if progress is not None and result.history:
                    progress(sum(len(r.history) for r in results), total, result.history[-1]["train_loss"])
        finally:
            unfinished = [f for f in futures if not f.done()]
            if unfinished:
                client.cancel(unfinished)
    return sorted(results, key=lambda r: r.member)


def _train_member_task(
    data: tuple[list[TrainingSample], list[TrainingSample]],
    model_settings: ModelSettings,
    settings: TrainSettings,
    member: int,
    checkpoint_dir: str | os.PathLike | None,
    resume: bool,
) -> MemberResult:
    """The Dask task: one member on a worker."""
    from biomol_nnp.train.trainer import train_member

    train, validation = data
    return train_member(train, validation, model_settings, settings, member, checkpoint_dir, resume)
