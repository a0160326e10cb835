"""Export labels to extended XYZ (readable by ASE and most NNP codes) and import them back.

Units in the file are ASE's: positions Å, energies eV, forces eV/Å, charges e, dipoles e*Å. One
frame per configuration (the latest ok record of each). The standard keys hold the **vacuum**
labels of the region; the labels in the field of the point charges and the point charges themselves
are extra keys::

    per frame (comment line): energy (vacuum, eV), embedded_energy, embedding_energy (eV),
        dipole, embedded_dipole (e*Å), total_charge, multiplicity, source, trajectory_id, frame,
        method, basis, engine, engine_version, config_hash, n_mm and, when n_mm > 0, the flattened
        mm_positions (Å), mm_charges (e), mm_numbers and mm_forces (eV/Å, embedded forces on the
        point charges), pbc="F F F"
    per atom (columns): species, pos (Å), Z, forces (vacuum, eV/Å), charges (vacuum, e),
        embedded_forces (eV/Å), embedded_charges (e)

The conversion happens here only, with the constants of :mod:`biomol_nnp.units`.

>>> export_extxyz("labels.h5", "labels.extxyz")  # doctest: +SKIP
64
>>> import ase.io; frames = ase.io.read("labels.extxyz", ":")  # doctest: +SKIP
>>> frames[0].get_forces().shape  # doctest: +SKIP
(22, 3)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from biomol_nnp.exceptions import InputError
from biomol_nnp.io import write_text_atomic
from biomol_nnp.qm.engine import QMResult
from biomol_nnp.qm.labels import LabeledConfiguration, LabelStore
from biomol_nnp.qm.sampling import Configuration
from biomol_nnp.units import ANGSTROM_TO_NM, EV_TO_KJ_PER_MOL, NM_TO_ANGSTROM

logger = logging.getLogger(__name__)

KJ_PER_MOL_TO_EV = 1.0 / EV_TO_KJ_PER_MOL
FORCE_TO_EV_PER_ANGSTROM = KJ_PER_MOL_TO_EV / NM_TO_ANGSTROM
"""kJ/mol/nm -> eV/Å."""

_SYMBOLS = (
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr "
    "Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb "
    "Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn"
).split()


def _vector(values: np.ndarray) -> str:
    return '"' + " ".join(f"{v:.10g}" for v in np.asarray(values).ravel()) + '"'


def _frame(rec: LabeledConfiguration) -> str:
    n = rec.atomic_numbers.size
    info: dict[str, str] = {
        "Properties": "species:S:1:pos:R:3:Z:I:1:forces:R:3:charges:R:1:embedded_forces:R:3:embedded_charges:R:1",
        "energy": f"{rec.energy * KJ_PER_MOL_TO_EV:.12g}",
        "embedded_energy": f"{rec.embedded_energy * KJ_PER_MOL_TO_EV:.12g}",
        "embedding_energy": f"{rec.embedding_energy * KJ_PER_MOL_TO_EV:.12g}",
        "dipole": _vector(rec.dipole * NM_TO_ANGSTROM),
        "embedded_dipole": _vector(rec.embedded_dipole * NM_TO_ANGSTROM),
        "total_charge": str(int(rec.total_charge)),
        "multiplicity": str(int(rec.multiplicity)),
        "trajectory_id": str(int(rec.trajectory_id)),
        "frame": str(int(rec.frame)),
        "n_mm": str(rec.mm_charges.size),
    }
    for key in ("source", "method", "basis", "engine", "engine_version", "config_hash"):
        value = str(getattr(rec, key)).replace('"', "'")
        if value:  # ASE cannot parse an empty quoted value; a missing key reads back as ""
            info[key] = f'"{value}"'
    if rec.mm_charges.size:
        info["mm_positions"] = _vector(rec.mm_positions * NM_TO_ANGSTROM)
        info["mm_charges"] = _vector(rec.mm_charges)
        info["mm_numbers"] = _vector(rec.mm_numbers)
        info["mm_forces"] = _vector(rec.embedded_mm_forces * FORCE_TO_EV_PER_ANGSTROM)
    info["pbc"] = '"F F F"'
    lines = [str(n), " ".join(f"{k}={v}" for k, v in info.items())]
    pos = rec.positions * NM_TO_ANGSTROM
    forces = rec.forces * FORCE_TO_EV_PER_ANGSTROM
    emb_forces = rec.embedded_forces * FORCE_TO_EV_PER_ANGSTROM
    for i, z in enumerate(rec.atomic_numbers):
        cols = [_SYMBOLS[int(z)], *(f"{x:.10f}" for x in pos[i]), str(int(z))]
        cols += [f"{x:.10g}" for x in forces[i]] + [f"{rec.charges[i]:.10g}"]
        cols += [f"{x:.10g}" for x in emb_forces[i]] + [f"{rec.embedded_charges[i]:.10g}"]
        lines.append(" ".join(cols))
    return "\n".join(lines) + "\n"


def export_extxyz(store_path: str | os.PathLike, output: str | os.PathLike) -> int:
    """Write the ok labels of a store to an extended XYZ file (atomically); return the frame count.

    Parameters
    ----------
    store_path : str or os.PathLike
        Label store (HDF5).
    output : str or os.PathLike
        extxyz file to write (eV, Å, e; see the module docstring).

    Returns
    -------
    int
        Number of frames written.
    """
    store = LabelStore(store_path)
    if not Path(store_path).exists():
        raise InputError(f"label store {str(store_path)!r} does not exist; label configurations first")
    records = store.load_training_arrays()
    write_text_atomic(output, "".join(_frame(rec) for rec in records))
    logger.info("exported %d labeled configurations from %s to %s", len(records), store_path, output)
    return len(records)


def _array(info: dict[str, Any], key: str, default: Any = ()) -> np.ndarray:
    value = info.get(key, default)
    if isinstance(value, str):
        value = [float(v) for v in value.split()]
    return np.atleast_1d(np.asarray(value, dtype=np.float64))


def read_extxyz(path: str | os.PathLike) -> list[tuple[Configuration, QMResult, QMResult | None, dict[str, str]]]:
    """Read a file written by :func:`export_extxyz` (or any extxyz with energy and forces) with ASE.

    Returns
    -------
    list of (Configuration, QMResult, QMResult or None, dict)
        Inputs, vacuum result, embedded result (None without point charges) and provenance
        (method, basis, engine, engine_version), all in OpenMM units.
    """
    try:
        import ase.io
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise InputError("extxyz import needs ASE: pip install ase") from err
    if not Path(path).is_file():
        raise InputError(f"extxyz file {str(path)!r} does not exist")
    try:
        frames = ase.io.read(str(path), index=":", format="extxyz")
    except Exception as err:  # noqa: BLE001 - ASE raises many types for malformed files
        raise InputError(f"{str(path)!r} is not a readable extended XYZ file: {err}") from err
    out = []
    for k, atoms in enumerate(frames):
        info = dict(atoms.info)
        calc = atoms.calc
        if calc is None or "energy" not in calc.results or "forces" not in calc.results:
            raise InputError(f"frame {k} of {str(path)!r} has no energy and forces; cannot import it as labels")
        n_mm = int(info.get("n_mm", 0))
        config = Configuration(
            atomic_numbers=atoms.numbers,
            positions=atoms.positions * ANGSTROM_TO_NM,
            total_charge=int(info.get("total_charge", 0)),
            mm_positions=_array(info, "mm_positions").reshape(-1, 3)[:n_mm] * ANGSTROM_TO_NM,
            mm_charges=_array(info, "mm_charges")[:n_mm],
            mm_numbers=_array(info, "mm_numbers")[:n_mm].astype(np.int64),
            source=str(info.get("source", "extxyz")),
            trajectory_id=int(info.get("trajectory_id", 0)),
            frame=int(info.get("frame", k)),
            multiplicity=int(info.get("multiplicity", 1)),
        )
        charges = np.asarray(calc.results.get("charges", np.zeros(len(atoms))), dtype=np.float64)
        dipole = _array(calc.results, "dipole", _array(info, "dipole", np.zeros(3))) * ANGSTROM_TO_NM
        vacuum = QMResult(
            float(calc.results["energy"]) * EV_TO_KJ_PER_MOL,
            np.asarray(calc.results["forces"]) / FORCE_TO_EV_PER_ANGSTROM,
            np.zeros((0, 3)),
            charges,
            dipole,
        )
        embedded = None
        if n_mm:
            embedded = QMResult(
                float(info["embedded_energy"]) * EV_TO_KJ_PER_MOL,
                np.asarray(atoms.arrays["embedded_forces"]) / FORCE_TO_EV_PER_ANGSTROM,
                _array(info, "mm_forces").reshape(-1, 3) / FORCE_TO_EV_PER_ANGSTROM,
                np.asarray(atoms.arrays["embedded_charges"], dtype=np.float64),
                _array(info, "embedded_dipole", np.zeros(3)) * ANGSTROM_TO_NM,
            )
        meta = {key: str(info.get(key, "")) for key in ("method", "basis", "engine", "engine_version")}
        out.append((config, vacuum, embedded, meta))
    return out


def import_extxyz(path: str | os.PathLike, store_path: str | os.PathLike, method: str | None = None) -> int:
    """Append the frames of an extxyz file to a label store as ok records; return how many were added.

    Frames whose configuration the store already holds with an ok record are skipped.

    Parameters
    ----------
    path : str or os.PathLike
        extxyz file (eV, Å, e).
    store_path : str or os.PathLike
        Label store to append to (its writer lock is held meanwhile).
    method : str, optional
        Level of theory when the file does not say (its frames have no ``method`` key).

    Raises
    ------
    InputError
        Unreadable file, frames without energy/forces, or a method other than the store's.
    """
    from biomol_nnp.qm.labels import config_hash

    frames = read_extxyz(path)
    store = LabelStore(store_path)
    added = 0
    with store.locked():
        latest = store.latest_records()
        for config, vacuum, embedded, meta in frames:
            key = config_hash(config)
            previous = latest.get(key)
            if previous is not None and previous["status"] == "ok":
                continue
            store.append(
                config,
                vacuum,
                embedded,
                "ok",
                "",
                meta["method"] or method or "unknown",
                basis=meta["basis"],
                engine=meta["engine"] or "extxyz",
                engine_version=meta["engine_version"],
                supersedes=-1 if previous is None else int(previous["index"]),
            )
            latest[key] = {"status": "ok", "index": -1}
            added += 1
    logger.info("imported %d of %d frames from %s into %s", added, len(frames), path, store_path)
    return added
