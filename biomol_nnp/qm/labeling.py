"""Label configurations with QM: the region in vacuum and in the field of its MM point charges.

:func:`label_one` is a pure, picklable function of one configuration (the unit of work a Dask
task will run); :func:`label_configurations` loops over configurations, writes every record to
the :class:`~biomol_nnp.qm.labels.LabelStore` as soon as it is computed and goes on after a
failed calculation.

>>> report = label_configurations(configs, "labels.h5", LabelSettings())  # doctest: +SKIP
>>> report.n_ok, report.n_failed  # doctest: +SKIP
(63, 1)
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from biomol_nnp.config import LabelSettings
from biomol_nnp.qm.labels import LabelStore
from biomol_nnp.qm.sampling import Configuration
from biomol_nnp.qm.xtb_engine import QMResult, XTBEngine

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
        Why it failed; empty when ok.
    method : str
        QM method.

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
        Configurations already in the store (same source, trajectory and frame), not recomputed.
    failures : dict of str to int
        Number of failures per reason.
    elapsed_s : float
        Wall time, s.

    Examples
    --------
    >>> LabelReport(Path("labels.h5"), n_ok=2, n_failed=0).n_total
    2
    """

    store_path: Path
    n_ok: int = 0
    n_failed: int = 0
    n_skipped: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def n_total(self) -> int:
        """Configurations computed in this run (ok + failed)."""
        return self.n_ok + self.n_failed


def label_one(config: Configuration, settings: LabelSettings) -> LabelRecord:
    """Compute the vacuum and the embedded QM results of one configuration.

    Never raises for a failed calculation: any exception becomes a ``"failed"`` record whose
    reason names the exception type and message.

    Parameters
    ----------
    config : Configuration
        Region (and point charges) to label.
    settings : LabelSettings
        QM method and convergence settings.

    Returns
    -------
    LabelRecord
        Results and status.
    """
    engine = XTBEngine(settings)
    vacuum: QMResult | None = None
    embedded: QMResult | None = None
    stage = "vacuum"
    try:
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
        reason = f"{stage}: {type(err).__name__}: {err}"
        return LabelRecord(config, vacuum, embedded, "failed", reason, settings.method)
    return LabelRecord(config, vacuum, embedded, "ok", "", settings.method)


def label_configurations(
    configs: Iterable[Configuration],
    store_path: str | os.PathLike,
    label_settings: LabelSettings,
    progress: bool = False,
    *,
    skip_existing: bool = True,
) -> LabelReport:
    """Label configurations one by one and append each record to an HDF5 label store.

    Parameters
    ----------
    configs : iterable of Configuration
        Configurations to label.
    store_path : str or os.PathLike
        Label file (created or appended to).
    label_settings : LabelSettings
        QM method and convergence settings.
    progress : bool
        Show a tqdm progress bar.
    skip_existing : bool
        Do not recompute configurations already in the store (ok or failed) with the same source,
        trajectory id and frame (so a killed job can be restarted).

    Returns
    -------
    LabelReport
        Counts of ok and failed records, failures per reason, wall time.
    """
    start = time.perf_counter()
    store = LabelStore(store_path)
    done = {(r["source"], r["trajectory_id"], r["frame"]) for r in store.records()} if skip_existing else set()
    todo = list(configs)
    report = LabelReport(store_path=Path(store_path))
    failures: Counter[str] = Counter()
    iterator: Iterable[Configuration] = todo
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(todo, desc="QM labels", unit="config")
    for config in iterator:
        if (config.source, config.trajectory_id, config.frame) in done:
            report.n_skipped += 1
            continue
        record = label_one(config, label_settings)
        store.append(record.config, record.vacuum, record.embedded, record.status, record.reason, record.method)
        if record.status == "ok":
            report.n_ok += 1
        else:
            report.n_failed += 1
            failures[record.reason] += 1
            logger.warning(
                "labeling failed for %s trajectory %d frame %d: %s",
                config.source,
                config.trajectory_id,
                config.frame,
                record.reason,
            )
    report.failures = dict(failures)
    report.elapsed_s = time.perf_counter() - start
    logger.info(
        "labeled %d configurations into %s: %d ok, %d failed, %d already there (%.1f s)",
        report.n_total,
        store_path,
        report.n_ok,
        report.n_failed,
        report.n_skipped,
        report.elapsed_s,
    )
    for reason, count in failures.most_common():
        logger.info("  %d failed: %s", count, reason)
    return report
