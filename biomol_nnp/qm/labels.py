"""HDF5 store of QM labels: one group per configuration, appended and flushed record by record.

Layout (all quantities in OpenMM units; the root attribute ``units`` maps names to units)::

    /                                   attrs: format_version, package, package_version, method, basis,
                                               units (JSON)
    /configurations/{index:06d}         attrs: status ("ok" | "failed"), reason, source,
                                               trajectory_id, frame, total_charge, multiplicity, method,
                                               basis, engine, engine_version, config_hash, record_hash,
                                               supersedes (index of the record it replaces, or -1)
        atomic_numbers  (N,)   int
        positions       (N, 3) nm
        mm_positions    (M, 3) nm
        mm_charges      (M,)   e
        mm_numbers      (M,)   int
        vacuum/energy (), forces (N, 3), charges (N,), dipole (3,)
        embedded/energy (), forces (N, 3), mm_forces (M, 3), charges (N,), dipole (3,)   [only M > 0]

A failed record keeps its inputs and whatever result was computed before the failure.
Every dataset also carries its unit in a ``units`` attribute.

Append-only: a record is never rewritten. A configuration is identified by ``config_hash`` (SHA-256
of its inputs: elements, positions, charge, multiplicity, point charges); labeling it again (a retry
of a failed record) appends a new record with ``supersedes`` pointing at the old one, and only the
latest record of each configuration counts in :meth:`LabelStore.statuses`, ``len`` and the
training arrays. ``record_hash`` is the SHA-256 of the record's inputs and results, so a copy can be
checked record by record. Files of format version 1 (without hashes) are read too.

A job that writes holds ``<store>.lock`` (JSON with host and PID); a second writer is refused
while the first is alive, and a lock left by a dead process on this host is taken over.

>>> store = LabelStore("labels.h5")  # doctest: +SKIP
>>> len(store), store.statuses()  # doctest: +SKIP
(64, {'ok': 63, 'failed': 1})
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biomol_nnp import __version__
from biomol_nnp.exceptions import InputError
from biomol_nnp.qm.engine import QMResult
from biomol_nnp.qm.sampling import Configuration
from biomol_nnp.qm.store_lock import StoreLock

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
"""Version of the HDF5 layout written by :class:`LabelStore`."""
READABLE_VERSIONS = (1, 2)
"""Layouts :class:`LabelStore` reads (version 1 has no hashes, basis or engine attributes)."""

UNITS = {
    "atomic_numbers": "",
    "positions": "nm",
    "mm_positions": "nm",
    "mm_charges": "e",
    "mm_numbers": "",
    "energy": "kJ/mol",
    "forces": "kJ/mol/nm",
    "mm_forces": "kJ/mol/nm",
    "charges": "e",
    "dipole": "e*nm",
    "total_charge": "e",
    "embedding_energy": "kJ/mol",
}
"""Unit of every quantity in the store (empty string: dimensionless)."""

STATUSES = ("ok", "failed")
_GROUP = "configurations"
_INPUTS = ("atomic_numbers", "positions", "mm_positions", "mm_charges", "mm_numbers")
_VACUUM = ("energy", "forces", "charges", "dipole")
_EMBEDDED = ("energy", "forces", "mm_forces", "charges", "dipole")


@dataclass
class LabeledConfiguration:
    """One successfully labeled configuration, as numpy arrays in OpenMM units.

    Attributes
    ----------
    index : int
        Record index in the store.
    atomic_numbers : numpy.ndarray, shape (N,)
    positions : numpy.ndarray, shape (N, 3)
        nm.
    total_charge : int
        e.
    mm_positions : numpy.ndarray, shape (M, 3)
        nm.
    mm_charges : numpy.ndarray, shape (M,)
        e.
    mm_numbers : numpy.ndarray, shape (M,)
    energy : float
        Vacuum QM energy, kJ/mol.
    forces : numpy.ndarray, shape (N, 3)
        Vacuum QM forces, kJ/mol/nm.
    charges : numpy.ndarray, shape (N,)
        Vacuum QM charges, e.
    dipole : numpy.ndarray, shape (3,)
        Vacuum dipole, e*nm.
    embedded_energy : float
        QM energy in the field of the point charges, kJ/mol (equals ``energy`` when M = 0).
    embedded_forces : numpy.ndarray, shape (N, 3)
        kJ/mol/nm (equal to ``forces`` when M = 0).
    embedded_mm_forces : numpy.ndarray, shape (M, 3)
        Forces on the point charges, kJ/mol/nm.
    embedded_charges : numpy.ndarray, shape (N,)
        e (equal to ``charges`` when M = 0).
    embedding_energy : float
        ``embedded_energy - energy``, kJ/mol (0 when M = 0).
    source : str
    trajectory_id : int
    frame : int
    multiplicity : int
    embedded_dipole : numpy.ndarray, shape (3,)
        e*nm (equal to ``dipole`` when M = 0).
    method, basis, engine, engine_version, config_hash : str
        Provenance of the record (empty for records of format 1).

    Examples
    --------
    >>> records = LabelStore("labels.h5").load_training_arrays()  # doctest: +SKIP
    >>> records[0].forces.shape  # doctest: +SKIP
    (22, 3)
    """

    index: int
    atomic_numbers: np.ndarray
    positions: np.ndarray
    total_charge: int
    mm_positions: np.ndarray
    mm_charges: np.ndarray
    mm_numbers: np.ndarray
    energy: float
    forces: np.ndarray
    charges: np.ndarray
    dipole: np.ndarray
    embedded_energy: float
    embedded_forces: np.ndarray
    embedded_mm_forces: np.ndarray
    embedded_charges: np.ndarray
    embedding_energy: float
    source: str
    trajectory_id: int
    frame: int
    multiplicity: int = 1
    embedded_dipole: np.ndarray = field(default_factory=lambda: np.zeros(3))
    method: str = ""
    basis: str = ""
    engine: str = ""
    engine_version: str = ""
    config_hash: str = ""

    @property
    def has_point_charges(self) -> bool:
        """Whether the configuration has MM point charges (M > 0)."""
        return bool(self.mm_charges.size)


def config_hash(config: Configuration) -> str:
    """SHA-256 (hex) of a configuration's inputs: what identifies it in a store.

    Covers elements, positions, total charge, multiplicity and the point charges (positions,
    charges, elements); not its provenance (source, trajectory, frame).

    Examples
    --------
    >>> c = Configuration(np.array([1, 1]), np.array([[0.0, 0.0, 0.0], [0.074, 0.0, 0.0]]))
    >>> config_hash(c) == config_hash(Configuration(c.atomic_numbers, c.positions.copy()))
    True
    """
    digest = hashlib.sha256(f"{int(config.total_charge)}|{int(config.multiplicity)}".encode())
    for name in _INPUTS:
        _update(digest, name, getattr(config, name))
    return digest.hexdigest()


def _update(digest: Any, name: str, value: Any) -> None:
    array = np.asarray(value)
    dtype = "<i8" if array.dtype.kind in "iub" else "<f8"
    digest.update(name.encode())
    digest.update(str(array.shape).encode())
    digest.update(np.ascontiguousarray(array, dtype=dtype).tobytes())


def record_hash(key: str, vacuum: QMResult | None, embedded: QMResult | None, status: str, method: str) -> str:
    """SHA-256 (hex) of one record: its configuration hash, status, method and every result array."""
    digest = hashlib.sha256(f"{key}|{status}|{method}".encode())
    for label, result in (("vacuum", vacuum), ("embedded", embedded)):
        if result is None:
            continue
        for name in _EMBEDDED:
            _update(digest, f"{label}/{name}", getattr(result, name))
    return digest.hexdigest()


class LabelStore:
    """Append-only HDF5 file of QM labels; the file is opened per call, so each record is on disk.

    Parameters
    ----------
    path : str or os.PathLike
        HDF5 file; created on the first :meth:`append` when missing.

    Raises
    ------
    InputError
        The file exists but is not a readable HDF5 file (truncated, corrupted) or is not a
        biomol-nnp label store of a known format.

    Examples
    --------
    >>> store = LabelStore("labels.h5")  # doctest: +SKIP
    >>> with store.locked():  # doctest: +SKIP
    ...     store.append(config, vacuum, embedded, status="ok")
    0
    >>> store.load_training_arrays()[0].embedding_energy  # doctest: +SKIP
    -35.2
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.lock = StoreLock(self.path)
        if self.path.exists():
            self._check_format()

    def _open(self, mode: str) -> Any:
        import h5py

        return h5py.File(self.path, mode)

    def _check_format(self) -> None:
        try:
            with self._open("r") as h5:
                version = _plain(h5.attrs.get("format_version"))
                package = _plain(h5.attrs.get("package"))
                keys = sorted(h5.keys())
                group_ok = _GROUP not in h5 or hasattr(h5[_GROUP], "keys")
        except OSError as err:
            raise InputError(
                f"{str(self.path)!r} is not a readable HDF5 file (truncated or corrupted?): {err}; "
                "give a label store written by biomol-nnp or a new path"
            ) from err
        if version is None:
            raise InputError(
                f"{str(self.path)!r} is an HDF5 file but not a biomol-nnp label store (no format_version "
                f"attribute; top-level keys {keys[:5]}); give a new path or a file written by LabelStore"
            )
        if (
            not isinstance(version, int)
            or version not in READABLE_VERSIONS
            or (package is not None and str(package) != "biomol-nnp")
        ):
            raise InputError(
                f"{str(self.path)!r} is not a biomol-nnp label store of format {READABLE_VERSIONS} "
                f"(format_version={version!r}, package={package!r}); give a new path or a file written by "
                "LabelStore"
            )
        if not group_ok:
            raise InputError(f"{str(self.path)!r}: '{_GROUP}' is not a group; the file is corrupted")

    def locked(self) -> StoreLock:
        """Context manager that holds the store's writer lock (see :class:`StoreLock`)."""
        return self.lock

    def __len__(self) -> int:
        """Number of distinct configurations (a retried configuration counts once)."""
        return len(self.latest_records())

    @property
    def n_records(self) -> int:
        """Number of records, superseded ones included."""
        if not self.path.exists():
            return 0
        with self._open("r") as h5:
            return len(h5[_GROUP]) if _GROUP in h5 else 0

    def _root_attr(self, name: str) -> str | None:
        if not self.path.exists():
            return None
        with self._open("r") as h5:
            value = h5.attrs.get(name)
        return None if value is None else str(value)

    @property
    def method(self) -> str | None:
        """QM method of the records, or None for an empty store."""
        return self._root_attr("method")

    @property
    def basis(self) -> str | None:
        """Basis set of the records ("" for xtb), or None for an empty store."""
        return self._root_attr("basis")

    def append(
        self,
        config: Configuration,
        vacuum: QMResult | None,
        embedded: QMResult | None,
        status: str = "ok",
        reason: str = "",
        method: str = "GFN2-xTB",
        *,
        basis: str = "",
        engine: str = "",
        engine_version: str = "",
        supersedes: int = -1,
    ) -> int:
        """Write one record and return its index.

        Parameters
        ----------
        config : Configuration
            Inputs of the calculation.
        vacuum : QMResult or None
            Region without point charges; None when it failed.
        embedded : QMResult or None
            Region in the field of the point charges; None when M = 0 or it failed.
        status : {"ok", "failed"}
            Outcome; "ok" needs ``vacuum`` and, when M > 0, ``embedded``.
        reason : str
            Why the calculation failed (empty when ok).
        method : str
            Level of theory; must match the store's.
        basis : str
            Basis set ("" for xtb and MM); must match the store's.
        engine, engine_version : str
            Program that computed the labels and its version.
        supersedes : int
            Index of the record this one replaces (a retry), or -1.

        Returns
        -------
        int
            Index of the new record.

        Raises
        ------
        InputError
            Bad status, missing results for "ok", another method/basis than the store's, or another
            job holding the store's lock.
        """
        entry = RecordEntry(config, vacuum, embedded, status, reason, engine, engine_version, supersedes)
        return self.append_many([entry], method, basis)[0]

    def append_many(self, entries: Sequence[RecordEntry], method: str, basis: str = "") -> list[int]:
        """Write several records with one open of the file (one flush); return their indices.

        Each entry is validated as in :meth:`append` before anything is written.
        """
        for entry in entries:
            _validate_entry(entry)
        other = self.lock.held_by_other()
        if other is not None:
            raise InputError(self.lock.refuse_message(other))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        indices = []
        with self._open("a") as h5:
            self._init_root(h5, method, basis)
            group = h5.require_group(_GROUP)
            for entry in entries:
                indices.append(_write_record(group, entry, method, basis))
            h5.flush()
        return indices

    def check_method(self, method: str, basis: str = "") -> None:
        """Refuse (:class:`InputError`) a method or basis other than the records' (an empty store takes any)."""
        if not self.path.exists():
            return
        with self._open("r") as h5:
            if "method" in h5.attrs:
                self._compare_method(h5, method, basis)

    def _compare_method(self, h5: Any, method: str, basis: str) -> None:
        stored = (str(h5.attrs["method"]), str(h5.attrs.get("basis", "")))
        if stored != (method, basis):
            have = "/".join(x for x in stored if x)
            new = "/".join(x for x in (method, basis) if x)
            raise InputError(
                f"{str(self.path)!r} holds {have} labels; cannot append {new} labels. "
                "Use a separate label file per method."
            )

    def _init_root(self, h5: Any, method: str, basis: str) -> None:
        if "format_version" not in h5.attrs:
            h5.attrs.update(
                {
                    "format_version": FORMAT_VERSION,
                    "package": "biomol-nnp",
                    "package_version": __version__,
                    "method": method,
                    "basis": basis,
                    "units": json.dumps(UNITS, sort_keys=True),
                }
            )
            return
        self._compare_method(h5, method, basis)

    def records(self) -> list[dict[str, Any]]:
        """Attributes of every record, superseded ones included (status, reason, config_hash, ...)."""
        if not self.path.exists():
            return []
        with self._open("r") as h5:
            if _GROUP not in h5:
                return []
            out = []
            for k, g in sorted(h5[_GROUP].items()):
                attrs = {"index": int(k), **_attrs(g)}
                if "config_hash" not in attrs:  # format 1, or interrupted while writing
                    attrs["config_hash"] = config_hash(_load_inputs(g, attrs))
                out.append(attrs)
            return out

    def latest_records(self) -> dict[str, dict[str, Any]]:
        """The latest record of each configuration, keyed by its ``config_hash``."""
        return {r["config_hash"]: r for r in self.records()}

    def statuses(self) -> dict[str, int]:
        """Number of configurations per status of their latest record, e.g. ``{"ok": 10, "failed": 1}``."""
        counts = Counter(r["status"] for r in self.latest_records().values())
        return {s: counts.get(s, 0) for s in STATUSES}

    def failure_reasons(self) -> dict[str, int]:
        """Number of configurations whose latest record failed, per reason."""
        return dict(Counter(r["reason"] for r in self.latest_records().values() if r["status"] == "failed"))

    def load_training_arrays(self) -> list[LabeledConfiguration]:
        """Load the latest record of every configuration whose status is ``ok``, in index order.

        Returns
        -------
        list of LabeledConfiguration
            Inputs and labels as numpy arrays (OpenMM units), with the embedding energy.
        """
        if not self.path.exists():
            return []
        keep = {r["index"] for r in self.latest_records().values() if r["status"] == "ok"}
        out: list[LabeledConfiguration] = []
        with self._open("r") as h5:
            if _GROUP not in h5:
                return []
            for key, group in sorted(h5[_GROUP].items()):
                if int(key) in keep:
                    out.append(_load_record(int(key), group))
        return out

    def content_hash(self) -> str:
        """SHA-256 of the inputs and labels of the ``ok`` records (hex digest).

        Two stores with the same labeled data in the same order have the same hash, whatever
        their failed records, file history or HDF5 internals.
        """
        digest = hashlib.sha256()
        for rec in self.load_training_arrays():
            header = f"{rec.total_charge}|{rec.multiplicity}|{rec.source}|{rec.trajectory_id}|{rec.frame}"
            digest.update(header.encode())
            for name in (
                "atomic_numbers",
                "positions",
                "mm_positions",
                "mm_charges",
                "mm_numbers",
                "energy",
                "forces",
                "charges",
                "dipole",
                "embedded_energy",
                "embedded_forces",
                "embedded_mm_forces",
                "embedded_charges",
            ):
                value = np.asarray(getattr(rec, name))
                dtype = "<i8" if value.dtype.kind in "iu" else "<f8"
                digest.update(name.encode())
                digest.update(np.ascontiguousarray(value, dtype=dtype).tobytes())
        return digest.hexdigest()


def _plain(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value (numpy scalars unwrapped, bytes decoded)."""
    value = value.item() if isinstance(value, np.generic) else value
    return value.decode() if isinstance(value, bytes) else value


def _load_inputs(group: Any, attrs: dict[str, Any]) -> Configuration:
    try:
        arrays = {name: np.asarray(group[name][()]) for name in _INPUTS}
    except KeyError:  # interrupted before its inputs were written: a hash nothing else has
        return Configuration(np.zeros(1, dtype=np.int64), np.full((1, 3), float(hash(group.name))))
    return Configuration(
        atomic_numbers=arrays["atomic_numbers"],
        positions=arrays["positions"],
        total_charge=int(attrs.get("total_charge", 0)),
        mm_positions=arrays["mm_positions"],
        mm_charges=arrays["mm_charges"],
        mm_numbers=arrays["mm_numbers"],
        multiplicity=int(attrs.get("multiplicity", 1)),
    )


def _write(group: Any, name: str, value: Any, unit_key: str) -> None:
    array = np.asarray(value)
    array = array.astype(np.int64) if array.dtype.kind in "iu" else array.astype(np.float64)
    dataset = group.create_dataset(name, data=array)
    dataset.attrs["units"] = UNITS[unit_key]


def _attrs(group: Any) -> dict[str, Any]:
    # A record whose attributes were never written was interrupted while being written.
    out: dict[str, Any] = {"status": "failed", "reason": "incomplete record (interrupted while writing)"}
    for key, value in group.attrs.items():
        out[key] = value.item() if isinstance(value, np.generic) else value
        if isinstance(out[key], bytes):
            out[key] = out[key].decode()
    return out


def _load_record(index: int, group: Any) -> LabeledConfiguration:
    inputs = {name: np.asarray(group[name][()]) for name in _INPUTS}
    vac = {name: np.asarray(group["vacuum"][name][()]) for name in _VACUUM}
    if "embedded" in group:
        emb = {name: np.asarray(group["embedded"][name][()]) for name in _EMBEDDED}
    else:  # no point charges: the embedded calculation is the vacuum one
        emb = dict(vac, mm_forces=np.zeros((0, 3)))
    attrs = _attrs(group)
    return LabeledConfiguration(
        index=index,
        total_charge=int(attrs["total_charge"]),
        energy=float(vac["energy"]),
        forces=vac["forces"],
        charges=vac["charges"],
        dipole=vac["dipole"],
        embedded_energy=float(emb["energy"]),
        embedded_forces=emb["forces"],
        embedded_mm_forces=emb["mm_forces"].reshape(-1, 3),
        embedded_charges=emb["charges"],
        embedding_energy=float(emb["energy"]) - float(vac["energy"]),
        source=str(attrs["source"]),
        trajectory_id=int(attrs["trajectory_id"]),
        frame=int(attrs["frame"]),
        multiplicity=int(attrs.get("multiplicity", 1)),
        embedded_dipole=emb["dipole"],
        method=str(attrs.get("method", "")),
        basis=str(attrs.get("basis", "")),
        engine=str(attrs.get("engine", "")),
        engine_version=str(attrs.get("engine_version", "")),
        config_hash=str(attrs.get("config_hash", "")),
        atomic_numbers=inputs["atomic_numbers"],
        positions=inputs["positions"].reshape(-1, 3),
        mm_positions=inputs["mm_positions"].reshape(-1, 3),
        mm_charges=inputs["mm_charges"],
        mm_numbers=inputs["mm_numbers"],
    )


@dataclass(frozen=True)
class RecordEntry:
    """One record to write: inputs, results (None when failed or absent), status and provenance."""

    config: Configuration
    vacuum: QMResult | None
    embedded: QMResult | None
    status: str = "ok"
    reason: str = ""
    engine: str = ""
    engine_version: str = ""
    supersedes: int = -1


def _validate_entry(entry: RecordEntry) -> None:
    if entry.status not in STATUSES:
        raise InputError(f"status must be one of {STATUSES}, got {entry.status!r}")
    if entry.status == "ok" and (entry.vacuum is None or (entry.config.n_mm > 0 and entry.embedded is None)):
        raise InputError(
            "status 'ok' needs a vacuum result and, with point charges, an embedded result; "
            "record the configuration as 'failed' with a reason instead"
        )


def _write_record(group: Any, entry: RecordEntry, method: str, basis: str) -> int:
    """Write one record group (inputs, results, attributes last) and return its index."""
    config, vacuum, embedded = entry.config, entry.vacuum, entry.embedded
    key = config_hash(config)
    index = len(group)
    record = group.create_group(f"{index:06d}")
    for name in _INPUTS:
        _write(record, name, getattr(config, name), name)
    if vacuum is not None:
        sub = record.create_group("vacuum")
        for name in _VACUUM:
            _write(sub, name, getattr(vacuum, name), name)
    if embedded is not None and config.n_mm > 0:
        sub = record.create_group("embedded")
        for name in _EMBEDDED:
            _write(sub, name, getattr(embedded, name), name)
    record.attrs.update(
        {
            "status": entry.status,
            "reason": entry.reason if entry.status != "ok" else "",
            "source": config.source,
            "trajectory_id": int(config.trajectory_id),
            "frame": int(config.frame),
            "total_charge": int(config.total_charge),
            "multiplicity": int(config.multiplicity),
            "method": method,
            "basis": basis,
            "engine": entry.engine,
            "engine_version": entry.engine_version,
            "config_hash": key,
            "record_hash": record_hash(key, vacuum, embedded if config.n_mm else None, entry.status, method),
            "supersedes": int(entry.supersedes),
        }
    )
    return index
