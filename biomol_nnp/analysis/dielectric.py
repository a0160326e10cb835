"""Static dielectric constant of a polar liquid from the fluctuations of the box dipole.

For Ewald/PME with conducting ("tin-foil") boundary conditions, OpenMM's default,

    eps = 1 + (<M^2> - <M>^2) / (3 eps0 <V> kB T)

with M the total dipole of the box (Neumann, Mol. Phys. 50, 841 (1983)). M is summed over whole
neutral molecules (each made whole by the minimum image relative to its first atom), so a molecule
that crosses the box edge does not make M jump. The statistical error is a block jackknife: eps is
recomputed with each of ``n_blocks`` contiguous blocks left out, and the error is
sqrt((n-1)/n sum (eps_k - mean)^2). It is meaningful only when a block is much longer than the
dipole correlation time (~10 ps for water); the fluctuation converges slowly: use nanoseconds.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> result = dielectric_constant(rng.normal(0.0, 3.0, (5000, 3)), 27.0, 300.0)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from biomol_nnp.exceptions import InputError
from biomol_nnp.qm.sampling import minimum_image
from biomol_nnp.units import (
    BOLTZMANN_J_PER_K,
    ELEMENTARY_CHARGE_C,
    NM_TO_M,
    VACUUM_PERMITTIVITY_F_PER_M,
)

logger = logging.getLogger(__name__)

WATER_RESNAMES = ("HOH", "WAT", "SOL", "TIP3")
"""Residue names taken as water by :func:`dielectric_from_trajectory` by default."""


@dataclass
class DielectricResult:
    """Static dielectric constant with its block-averaging error.

    Attributes
    ----------
    epsilon : float
        Dielectric constant from the whole series.
    error : float
        Block-jackknife standard error from ``n_blocks`` blocks.
    block_values : list of float
        eps with each block left out (the jackknife samples).
    n_frames, n_blocks : int
    temperature_k : float
    mean_volume_nm3 : float
    mean_dipole_e_nm : list of float
        <M>, e nm (should tend to zero).
    dipole_variance_e2_nm2 : float
        <M^2> - <M>^2, e^2 nm^2.
    """

    epsilon: float
    error: float
    block_values: list[float]
    n_frames: int
    n_blocks: int
    temperature_k: float
    mean_volume_nm3: float
    mean_dipole_e_nm: list[float]
    dipole_variance_e2_nm2: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return asdict(self)


def fluctuation_to_epsilon(variance_e2_nm2: float, volume_nm3: float, temperature_k: float) -> float:
    """eps = 1 + var(M) / (3 eps0 V kB T), with var(M) in e^2 nm^2, V in nm^3, T in K (SI inside)."""
    variance_si = variance_e2_nm2 * (ELEMENTARY_CHARGE_C * NM_TO_M) ** 2
    volume_si = volume_nm3 * NM_TO_M**3
    return 1.0 + variance_si / (3.0 * VACUUM_PERMITTIVITY_F_PER_M * volume_si * BOLTZMANN_J_PER_K * temperature_k)


def _variance(dipoles: np.ndarray) -> float:
    return float(np.mean(np.sum(dipoles**2, axis=1)) - np.sum(np.mean(dipoles, axis=0) ** 2))


def dielectric_constant(
    dipoles_e_nm: np.ndarray,
    volumes_nm3: float | Sequence[float] | np.ndarray,
    temperature_k: float,
    n_blocks: int = 5,
) -> DielectricResult:
    """Dielectric constant from a time series of box dipoles.

    Parameters
    ----------
    dipoles_e_nm : numpy.ndarray, shape (F, 3)
        Box dipole of each frame, e nm.
    volumes_nm3 : float or array of shape (F,)
        Box volume (one value for NVT, one per frame for NPT; the mean is used), nm^3.
    temperature_k : float
        Temperature, K.
    n_blocks : int
        Blocks of the jackknife error estimate (>= 2; each needs at least 2 frames).

    Returns
    -------
    DielectricResult
    """
    dipoles = np.asarray(dipoles_e_nm, dtype=np.float64)
    if dipoles.ndim != 2 or dipoles.shape[1] != 3:
        raise InputError(f"dipoles_e_nm has shape {dipoles.shape}; give an array of shape (frames, 3) in e nm")
    volumes = np.atleast_1d(np.asarray(volumes_nm3, dtype=np.float64))
    if volumes.size not in (1, len(dipoles)) or np.any(volumes <= 0):
        raise InputError(
            f"volumes_nm3 has {volumes.size} values (min {volumes.min() if volumes.size else 'n/a'}); give one "
            f"positive volume or one per frame ({len(dipoles)})"
        )
    if temperature_k <= 0:
        raise InputError(f"temperature_k={temperature_k} is not allowed; give the temperature in K (> 0)")
    if n_blocks < 2 or len(dipoles) < 2 * n_blocks:
        raise InputError(
            f"n_blocks={n_blocks} with {len(dipoles)} frames: need n_blocks >= 2 and at least 2 frames per block; "
            "give a longer trajectory or fewer blocks"
        )
    volume = float(volumes.mean())
    epsilon = fluctuation_to_epsilon(_variance(dipoles), volume, temperature_k)
    split = np.array_split(np.arange(len(dipoles)), n_blocks)
    blocks = [
        fluctuation_to_epsilon(_variance(np.delete(dipoles, index, axis=0)), volume, temperature_k) for index in split
    ]
    error = float(np.sqrt((n_blocks - 1) / n_blocks * np.sum((np.asarray(blocks) - np.mean(blocks)) ** 2)))
    return DielectricResult(
        epsilon=epsilon,
        error=error,
        block_values=[float(b) for b in blocks],
        n_frames=len(dipoles),
        n_blocks=n_blocks,
        temperature_k=float(temperature_k),
        mean_volume_nm3=volume,
        mean_dipole_e_nm=[float(x) for x in dipoles.mean(axis=0)],
        dipole_variance_e2_nm2=_variance(dipoles),
    )


def box_dipole(
    positions_nm: np.ndarray, charges_e: np.ndarray, molecules: Sequence[int] | np.ndarray, box_nm: np.ndarray | None
) -> np.ndarray:
    """Total dipole ``[3]`` e nm of whole neutral molecules.

    Parameters
    ----------
    positions_nm : numpy.ndarray, shape (N, 3)
        Positions (possibly wrapped atom by atom), nm.
    charges_e : numpy.ndarray, shape (N,)
        Charges, e.
    molecules : sequence of int, length N
        Molecule index of each atom; atoms of a molecule are contiguous or not, each molecule must be neutral.
    box_nm : numpy.ndarray, shape (3, 3), or None
        Box vectors (rows), nm; None: the positions are already whole.
    """
    positions = np.asarray(positions_nm, dtype=np.float64)
    charges = np.asarray(charges_e, dtype=np.float64)
    mol = np.asarray(molecules, dtype=np.int64)
    _, first = np.unique(mol, return_index=True)
    anchor_of = np.zeros(mol.max() + 1, dtype=np.int64)
    anchor_of[mol[first]] = first
    anchors = positions[anchor_of[mol]]
    offsets = positions - anchors
    if box_nm is not None:
        offsets = minimum_image(offsets, np.asarray(box_nm, dtype=np.float64))
    # neutral molecules: sum q (anchor + offset) = sum q offset
    return np.sum(charges[:, None] * offsets, axis=0)


def check_neutral_molecules(
    charges_e: np.ndarray, molecules: Sequence[int] | np.ndarray, tolerance: float = 1e-4
) -> None:
    """Raise InputError naming the first molecule whose charges do not sum to zero."""
    mol = np.asarray(molecules, dtype=np.int64)
    totals = np.bincount(mol, weights=np.asarray(charges_e, dtype=np.float64))
    present = np.unique(mol)
    charged = present[np.abs(totals[present]) > tolerance]
    if len(charged):
        raise InputError(
            f"molecule {int(charged[0])} has net charge {totals[charged[0]]:.4f} e ({len(charged)} charged "
            "molecules in all): the box-dipole formula needs neutral molecules (ions add a conduction term); "
            "select only the water (e.g. 'resname HOH')"
        )


def dielectric_from_trajectory(
    trajectory: str,
    topology: str,
    temperature_k: float,
    charges_e: Sequence[float] | np.ndarray | None = None,
    selection: str = "resname " + " ".join(WATER_RESNAMES),
    n_blocks: int = 5,
    start: int = 0,
) -> DielectricResult:
    """Dielectric constant of the molecules in ``selection`` over a trajectory (MDAnalysis).

    Parameters
    ----------
    trajectory, topology : str
        Files MDAnalysis reads (DCD/XTC + PDB/PSF/PRMTOP...). The trajectory must hold the box.
    temperature_k : float
        Temperature of the run, K.
    charges_e : sequence of float, optional
        Charge of every atom of the topology, e (e.g. from :func:`charges_from_system`); default: the
        topology's own charges (PSF, PRMTOP, TPR have them; PDB does not).
    selection : str
        MDAnalysis selection of the molecules (whole residues, each neutral).
    n_blocks : int
        Blocks of the error estimate.
    start : int
        First frame used (skip equilibration).
    """
    import MDAnalysis

    from biomol_nnp.analysis.structure import has_charges_attr

    universe = MDAnalysis.Universe(topology, trajectory)
    atoms = universe.select_atoms(selection)
    if len(atoms) == 0:
        raise InputError(f"selection {selection!r} matches no atom of {topology!r}; give a selection of the water")
    if charges_e is not None:
        all_charges = np.asarray(charges_e, dtype=np.float64)
        if len(all_charges) != len(universe.atoms):
            raise InputError(
                f"charges_e has {len(all_charges)} values but {topology!r} has {len(universe.atoms)} atoms; "
                "give one charge per atom (the System of this topology)"
            )
        charges = all_charges[atoms.indices]
    elif has_charges_attr(universe):
        charges = np.asarray(atoms.charges, dtype=np.float64)
    else:
        raise InputError(
            f"topology {topology!r} has no charges; pass charges_e (CLI: --system system.xml) or a topology "
            "with charges (PSF, PRMTOP)"
        )
    molecules = atoms.resindices
    check_neutral_molecules(charges, molecules)
    dipoles, volumes = [], []
    for ts in universe.trajectory[start:]:
        if ts.dimensions is None:
            raise InputError(f"trajectory {trajectory!r} frame {ts.frame} has no box; the run must be periodic")
        box = MDAnalysis.lib.mdamath.triclinic_vectors(ts.dimensions) / 10.0
        dipoles.append(box_dipole(atoms.positions / 10.0, charges, molecules, box))
        volumes.append(float(np.linalg.det(box)))
    logger.info("box dipole of %d molecules over %d frames", len(np.unique(molecules)), len(dipoles))
    return dielectric_constant(np.asarray(dipoles), np.asarray(volumes), temperature_k, n_blocks)


def charges_from_system(system_xml: str) -> np.ndarray:
    """Per-particle charges (e) of the NonbondedForce of a serialized OpenMM System."""
    import openmm
    import openmm.unit as u

    path = Path(system_xml)
    if not path.is_file():
        raise InputError(f"system file {system_xml!r} does not exist; give a serialized OpenMM System (XML)")
    system = openmm.XmlSerializer.deserialize(path.read_text())
    forces = [f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)]
    if len(forces) != 1:
        raise InputError(f"{system_xml!r} has {len(forces)} NonbondedForce objects; need exactly one for charges")
    force = forces[0]
    return np.array(
        [force.getParticleParameters(i)[0].value_in_unit(u.elementary_charge) for i in range(force.getNumParticles())]
    )
