"""Label configurations with QM: the region in vacuum and in the field of its MM point charges.

:func:`label_one` is a pure, picklable function of one configuration and :func:`label_chunk` of a
few (the unit of work of a Dask task). :func:`label_configurations` skips what the store already
holds, runs the rest in this process or on Dask (a ``LocalCluster`` of worker processes, or the
scheduler at an address), writes every record to the
:class:`~biomol_nnp.qm.labels.LabelStore` in this process as soon as its task completes (so killing
the job loses only the tasks in flight), goes on after failed calculations, and reports failures by
reason.

>>> report = label_configurations(configs, "labels.h5", LabelSettings(), workers=2)  # doctest: +SKIP
>>> report.n_ok, report.n_failed  # doctest: +SKIP
(63, 1)
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from biomol_nnp.config import LabelSettings
from biomol_nnp.qm.engine import QMEngine, QMResult, check_charge_multiplicity, create_engine
from biomol_nnp.qm.labels import LabelStore, RecordEntry, config_hash
from biomol_nnp.qm.sampling import Configuration

logger = logging.getLogger(__name__)


@dataclass
class LabelRecord:
    """Outcome of labeling one configuration.

    Attributes
    ----------
    config : Configuration
        The inputs.
    vacuum : QMResult or None
        Region without point charges (None if that calculation failed).
    embedded : QMResult or None
        Region with the point charges (None without point charges or if it failed).
    status : str
        ``"ok"`` or ``"failed"``.
    reason : str
        Why it failed (``"stage: ExceptionType: message"``); empty when ok.
    method : str
        Level of theory, e.g. ``"GFN2-xTB"`` or ``"B3LYP-D3BJ"``.
    basis : str
        Basis set ("" for xtb and MM).
    engine : str
        Program that computed it.
    engine_version : str
        Its version.

    Examples
    --------
    >>> record = label_one(config, LabelSettings())  # doctest: +SKIP
    >>> record.status  # doctest: +SKIP
    'ok'
    """

    config: Configuration
    vacuum: QMResult | None
    embedded: QMResult | None
    status: str
    reason: str = ""
    method: str = "GFN2-xTB"
    basis: str = ""
    engine: str = ""
    engine_version: str = ""


@dataclass
class LabelReport:
    """Summary of a labeling run.

    Attributes
    ----------
    store_path : pathlib.Path
        The label file.
    n_ok : int
        Records labeled in this run.
    n_failed : int
        Records that failed in this run.
    n_skipped : int
        Configurations not computed: already ok in the store (or failed, without retry), or repeated
        in the input.
    n_retried : int
        Configurations whose earlier failed record was superseded by a new one in this run.
    failures : dict of str to int
        Number of failures per full reason.
    failures_by_kind : dict of str to int
        Number of failures per stage and exception type (e.g. ``"vacuum: QMCalculationError"``).
    elapsed_s : float
        Wall time, s.
    workers : int
        Dask LocalCluster workers used (0: labeled in this process; -1: an existing scheduler or client).

    Examples
    --------
    >>> LabelReport(Path("labels.h5"), n_ok=2, n_failed=0).n_total
    2
    """

    store_path: Path
    n_ok: int = 0
    n_failed: int = 0
    n_skipped: int = 0
    n_retried: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    failures_by_kind: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    workers: int = 0

    @property
    def n_total(self) -> int:
        """Configurations computed in this run (ok + failed)."""
        return self.n_ok + self.n_failed


@lru_cache(maxsize=4)
def _cached_engine(settings_json: str) -> QMEngine:
    """One engine per settings and process (an MM engine keeps its OpenMM Context)."""
    return create_engine(LabelSettings.model_validate_json(settings_json))


def label_one(config: Configuration, settings: LabelSettings, engine: QMEngine | None = None) -> LabelRecord:
    """Compute the vacuum and the embedded QM results of one configuration.

    Never raises for a failed calculation: any exception becomes a ``"failed"`` record whose
    reason names the stage, the exception type and its message.

    Parameters
    ----------
    config : Configuration
        Region (and point charges) to label.
    settings : LabelSettings
        QM method and convergence settings.
    engine : QMEngine, optional
        Engine to use; by default the (cached) engine of ``settings``.

    Returns
    -------
    LabelRecord
        Results and status.
    """
    vacuum: QMResult | None = None
    embedded: QMResult | None = None
    stage = "setup"
    meta: dict[str, str] = {"method": settings.method}
    try:
        engine = engine if engine is not None else _cached_engine(settings.model_dump_json())
        meta = _engine_meta(engine)
        stage = "vacuum"
        vacuum = engine.compute(config.atomic_numbers, config.positions, config.total_charge, config.multiplicity)
        if config.n_mm > 0:
            stage = "embedded"
            embedded = engine.compute(
                config.atomic_numbers,
                config.positions,
                config.total_charge,
                config.multiplicity,
                mm_positions=config.mm_positions,
                mm_charges=config.mm_charges,
                mm_numbers=config.mm_numbers,
            )
    except Exception as err:  # noqa: BLE001 - one bad configuration must not stop the run
        reason = f"{stage}: {type(err).__name__}: {' '.join(str(err).split())}"
        return LabelRecord(config, vacuum, embedded, "failed", reason, **meta)
    return LabelRecord(config, vacuum, embedded, "ok", "", **meta)


def label_chunk(configs: Sequence[Configuration], settings: LabelSettings) -> list[LabelRecord]:
    """Label a few configurations in a row (one Dask task); see :func:`label_one`."""
    return [label_one(config, settings) for config in configs]


def _engine_meta(engine: QMEngine) -> dict[str, str]:
    return {
        "method": engine.method,
        "basis": engine.basis,
        "engine": engine.engine_name,
        "engine_version": engine.engine_version,
    }


def failure_kind(reason: str) -> str:
    """Stage and exception type of a failure reason: ``"vacuum: QMCalculationError: ..."`` -> first two fields.

    Examples
    --------
    >>> failure_kind("vacuum: QMCalculationError: GFN2-xTB failed: SCC did not converge")
    'vacuum: QMCalculationError'
    """
    return ": ".join(reason.split(": ")[:2])


def label_configurations(
    configs: Iterable[Configuration],
    store_path: str | os.PathLike,
    label_settings: LabelSettings,
    progress: bool = False,
    *,
    skip_existing: bool = True,
    retry_failed: bool | None = None,
    workers: int | None = None,
    scheduler_address: str | None = None,
    client: Any = None,
) -> LabelReport:
    """Label configurations and append each record to an HDF5 label store as soon as it is done.

    Parameters
    ----------
    configs : iterable of Configuration
        Configurations to label.
    store_path : str or os.PathLike
        Label file (created or appended to); its writer lock is held for the whole run.
    label_settings : LabelSettings
        QM method and convergence settings, and the defaults of ``workers``, ``scheduler_address``,
        ``chunk_size`` and ``retry_failed``.
    progress : bool
        Show a tqdm progress bar.
    skip_existing : bool
        Do not recompute configurations (same ``config_hash``) whose latest record is ok, or failed
        when not retrying; a configuration repeated in ``configs`` is computed once.
    retry_failed : bool, optional
        Label again configurations whose latest record failed (a new record supersedes the old).
        Default: ``label_settings.retry_failed``.
    workers : int, optional
        Dask worker processes of a LocalCluster (0: in this process). Default: ``label_settings.workers``.
    scheduler_address : str, optional
        Connect to this Dask scheduler instead of starting a LocalCluster.
    client : distributed.Client, optional
        Use this Dask client (it is not closed).

    Returns
    -------
    LabelReport
        Counts of ok, failed, skipped and retried configurations, failures by reason, wall time.

    Raises
    ------
    InputError
        The store is corrupted, foreign, of another method, or held by another job; or the method is
        unknown.
    """
    start = time.perf_counter()
    settings = label_settings
    retry = settings.retry_failed if retry_failed is None else retry_failed
    n_workers = settings.workers if workers is None else workers
    address = scheduler_address if scheduler_address is not None else settings.scheduler_address
    meta = _engine_meta(create_engine(settings))  # unknown methods and missing inputs fail here, before any work
    store = LabelStore(store_path)
    store.check_method(meta["method"], meta["basis"])
    report = LabelReport(store_path=Path(store_path))
    failures: Counter[str] = Counter()
    with store.locked():
        todo, upfront = _plan(configs, store, skip_existing, retry, report)
        bar = _progress_bar(len(todo) + len(upfront), progress)

        def record(pairs: Sequence[tuple[tuple[Configuration, int], LabelRecord]]) -> None:
            """Write finished calculations with one open of the store, then count and log them."""
            entries = [
                RecordEntry(
                    item[0],
                    result.vacuum,
                    result.embedded,
                    result.status,
                    result.reason,
                    result.engine or meta["engine"],
                    result.engine_version or meta["engine_version"],
                    item[1],
                )
                for item, result in pairs
            ]
            store.append_many(entries, meta["method"], meta["basis"])
            for (config, supersedes), result in pairs:
                if supersedes >= 0:
                    report.n_retried += 1
                if result.status == "ok":
                    report.n_ok += 1
                else:
                    report.n_failed += 1
                    failures[result.reason] += 1
                    logger.warning(
                        "labeling failed for %s trajectory %d frame %d: %s",
                        config.source,
                        config.trajectory_id,
                        config.frame,
                        result.reason,
                    )
            if bar is not None:
                bar.update(len(pairs))

        try:
            if upfront:
                record([(item, LabelRecord(item[0], None, None, "failed", reason, **meta)) for item, reason in upfront])
            if client is not None or address or n_workers > 0:
                from biomol_nnp.qm.distributed import dask_label

                report.workers = n_workers if client is None and not address else -1
                for items, results in dask_label(todo, settings, n_workers, address, client):
                    record(list(zip(items, results, strict=True)))
            else:
                for item in todo:
                    record([(item, label_one(item[0], settings))])
        finally:
            if bar is not None:
                bar.close()
    report.failures = dict(failures)
    report.failures_by_kind = dict(_kinds(failures))
    report.elapsed_s = time.perf_counter() - start
    _log_report(report)
    return report


def _kinds(failures: Counter[str]) -> Counter[str]:
    kinds: Counter[str] = Counter()
    for reason, count in failures.items():
        kinds[failure_kind(reason)] += count
    return kinds


def _plan(
    configs: Iterable[Configuration], store: LabelStore, skip_existing: bool, retry: bool, report: LabelReport
) -> tuple[list[tuple[Configuration, int]], list[tuple[tuple[Configuration, int], str]]]:
    """What to compute (config, superseded index) and what fails before submission (with reason)."""
    latest = store.latest_records() if skip_existing else {}
    seen: set[str] = set()
    todo: list[tuple[Configuration, int]] = []
    upfront: list[tuple[tuple[Configuration, int], str]] = []
    for config in configs:
        key = config_hash(config)
        previous = latest.get(key)
        if key in seen or (previous is not None and (previous["status"] == "ok" or not retry)):
            report.n_skipped += 1
            continue
        seen.add(key)
        item = (config, -1 if previous is None else int(previous["index"]))
        try:
            check_charge_multiplicity(config.atomic_numbers, config.total_charge, config.multiplicity)
        except ValueError as err:
            upfront.append((item, f"input: {type(err).__name__}: {err}"))
            continue
        todo.append(item)
    return todo, upfront


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="QM labels", unit="config")


def _log_report(report: LabelReport) -> None:
    logger.info(
        "labeled %d configurations into %s: %d ok, %d failed (%d retried), %d skipped (%.1f s, %s)",
        report.n_total,
        report.store_path,
        report.n_ok,
        report.n_failed,
        report.n_retried,
        report.n_skipped,
        report.elapsed_s,
        {0: "in process", -1: "on a Dask scheduler"}.get(report.workers, f"{report.workers} Dask workers"),
    )
    for kind, count in Counter(report.failures_by_kind).most_common():
        logger.info("  %d failed: %s", count, kind)


def chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
