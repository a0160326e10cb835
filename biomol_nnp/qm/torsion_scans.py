"""Relaxed, restrained torsion scans of capped dipeptides (ACE-X-NME) as configurations to label.

The geometry work is forcefield_refit's: :func:`forcefield_refit.profiles.torsion_scan` (1-D) and
:func:`forcefield_refit.cmap.cmap_scan` (2-D phi x psi, serpentine order). At each grid point the
scanned dihedral(s) are rotated rigidly to the target and the molecule is minimised (L-BFGS-B) under
the energy callable plus a harmonic dihedral restraint; the relaxed geometry becomes one
:class:`~biomol_nnp.qm.sampling.Configuration` (no point charges).

The energy callable is any ``positions [N, 3] nm -> (energy kJ/mol, forces [N, 3] kJ/mol/nm)``: by
default the vacuum MM System of the molecule in the given force field; a
:class:`biomol_nnp.models.calculator.ModelCalculator` scans on the NNP surface instead.

Sources are ``"torsion-scan-{residue}-{dihedral}"`` (e.g. ``"torsion-scan-ala-phi"``) and
``"torsion-scan-2d-{residue}"``; ``frame`` is the grid index, ``trajectory_id`` is set by the caller
(one id per scan, so training splits keep each scan whole).

>>> from biomol_nnp.config import SYSTEMS_DIR
>>> configs = dipeptide_torsion_scan(SYSTEMS_DIR / "dipeptides" / "ala.pdb", "phi", [-60.0, 60.0])
>>> len(configs), configs[0].n_atoms, configs[0].source
(2, 22, 'torsion-scan-ala-phi')
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from biomol_nnp.exceptions import InputError
from biomol_nnp.qm.sampling import Configuration

if TYPE_CHECKING:
    from forcefield_refit.molecules import Molecule

logger = logging.getLogger(__name__)

EnergyFunction = Callable[[np.ndarray], tuple[float, np.ndarray]]
"""``positions [N, 3] nm -> (energy kJ/mol, forces [N, 3] kJ/mol/nm)`` (forcefield_refit's protocol)."""

DEFAULT_FORCEFIELD = ("amber14-all.xml",)
DIHEDRALS = ("phi", "psi", "chi1")
"""Dihedrals of the central residue a 1-D scan can drive."""
SOURCE_1D = "torsion-scan-{residue}-{dihedral}"
SOURCE_2D = "torsion-scan-2d-{residue}"


def load_dipeptide(pdb_path: str | os.PathLike) -> Molecule:
    """Read a capped dipeptide PDB (with bonds) and check that it is ACE-X-NME.

    Parameters
    ----------
    pdb_path : str or os.PathLike
        PDB of ACE-X-NME with Amber atom names, positions in Angstrom (as PDB files are).

    Returns
    -------
    forcefield_refit.molecules.Molecule
        Topology with bonds and positions ``[N, 3]`` nm.

    Raises
    ------
    InputError
        The file is missing or not a capped dipeptide.
    """
    from forcefield_refit.exceptions import RefitMatchError
    from forcefield_refit.molecules import backbone_dihedrals, load_molecule

    path = os.fspath(pdb_path)
    if not os.path.isfile(path):
        raise InputError(
            f"torsion-scan PDB {path!r} does not exist; give a capped dipeptide ACE-X-NME such as "
            "systems/alanine_dipeptide/vacuum.pdb or systems/dipeptides/ala.pdb"
        )
    molecule = load_molecule(path)
    try:
        backbone_dihedrals(molecule.topology)
    except RefitMatchError as err:
        raise InputError(f"torsion-scan PDB {path!r}: {err}") from err
    return molecule


def _residue(molecule: Molecule) -> str:
    return str(list(molecule.topology.residues())[1].name).lower()


def _total_charge(molecule: Molecule, forcefield: Sequence[str]) -> int:
    """Net charge of the molecule from the force field's NonbondedForce charges, rounded, e."""
    from openmm import NonbondedForce, unit

    system = molecule.system(list(forcefield))
    nonbonded = next(f for f in system.getForces() if isinstance(f, NonbondedForce))
    q = sum(
        nonbonded.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge)
        for i in range(system.getNumParticles())
    )
    return int(round(q))


def _energy_function(molecule: Molecule, energy_fn: EnergyFunction | None, forcefield: Sequence[str]) -> EnergyFunction:
    if energy_fn is not None:
        return energy_fn
    from forcefield_refit.energy import openmm_energy_function

    return openmm_energy_function(molecule.system(list(forcefield)), "Reference")


def _dihedral_quad(molecule: Molecule, name: str) -> tuple[int, int, int, int]:
    from forcefield_refit.molecules import backbone_dihedrals

    quads = backbone_dihedrals(molecule.topology)
    if name not in quads:
        raise InputError(
            f"dihedral {name!r} is not defined for residue {_residue(molecule).upper()}; "
            f"this molecule has {sorted(quads)} (valid names: {', '.join(DIHEDRALS)})"
        )
    return tuple(int(i) for i in quads[name])  # type: ignore[return-value]


def _check_grid_settings(restraint_k: float, max_iterations: int) -> None:
    if not restraint_k > 0:
        raise InputError(
            f"restraint_k = {restraint_k} kJ/mol/rad^2; it must be > 0 (2000 keeps the angle within ~1 deg)"
        )
    if max_iterations < 1:
        raise InputError(f"max_iterations = {max_iterations}; it must be >= 1 (300 is usually enough)")


def dipeptide_torsion_scan(
    pdb_path: str | os.PathLike,
    dihedral: str,
    angles_deg: Sequence[float] | np.ndarray,
    energy_fn: EnergyFunction | None = None,
    forcefield: Sequence[str] = DEFAULT_FORCEFIELD,
    restraint_k: float = 2000.0,
    max_iterations: int = 300,
    trajectory_id: int = 0,
    progress: bool = False,
) -> list[Configuration]:
    """Relaxed 1-D scan of one backbone (or chi1) dihedral of a capped dipeptide.

    Parameters
    ----------
    pdb_path : str or os.PathLike
        ACE-X-NME PDB (start geometry).
    dihedral : {"phi", "psi", "chi1"}
        Dihedral of the central residue to drive.
    angles_deg : sequence of float, shape (K,)
        Target angles, degrees, scanned in this order (each point starts from the previous one).
    energy_fn : callable, optional
        ``positions [N, 3] nm -> (E kJ/mol, F [N, 3] kJ/mol/nm)`` minimised at each point; default:
        the vacuum MM System of ``forcefield``.
    forcefield : sequence of str
        OpenMM force-field XML files for the default energy and for the total charge.
    restraint_k : float
        Harmonic dihedral restraint constant, kJ/mol/rad^2.
    max_iterations : int
        L-BFGS-B iterations per grid point.
    trajectory_id : int
        Written to every configuration (one id per scan).
    progress : bool
        Progress bar over grid points.

    Returns
    -------
    list of Configuration
        ``K`` relaxed geometries, ``frame`` = grid index.

    Raises
    ------
    InputError
        Missing or non-dipeptide PDB, unknown dihedral, empty grid, bad restraint settings.
    """
    from threadpoolctl import threadpool_limits

    from forcefield_refit.exceptions import RefitInputError
    from forcefield_refit.profiles import moving_side, torsion_scan

    grid = np.asarray(angles_deg, dtype=float).reshape(-1)
    if grid.size == 0 or not np.all(np.isfinite(grid)):
        raise InputError(f"angles_deg = {grid.tolist()}; give a non-empty grid of finite angles, degrees")
    _check_grid_settings(restraint_k, max_iterations)
    molecule = load_dipeptide(pdb_path)
    quad = _dihedral_quad(molecule, dihedral)
    fn = _energy_function(molecule, energy_fn, forcefield)
    try:
        with threadpool_limits(1):
            profile = torsion_scan(
                fn, molecule.positions, quad, grid, restraint_k=restraint_k, max_iterations=max_iterations,
                moving_atoms=moving_side(molecule.bonds, quad), progress=progress,
            )
    except RefitInputError as err:
        raise InputError(f"torsion scan of {dihedral} in {os.fspath(pdb_path)!r}: {err}") from err
    numbers = _atomic_numbers(molecule)
    charge = _total_charge(molecule, forcefield)
    source = SOURCE_1D.format(residue=_residue(molecule), dihedral=dihedral)
    return [
        Configuration(numbers, xyz, total_charge=charge, source=source, trajectory_id=trajectory_id, frame=k)
        for k, xyz in enumerate(profile.positions)
    ]


def dipeptide_torsion_scan_2d(
    pdb_path: str | os.PathLike,
    n_grid: int,
    energy_fn: EnergyFunction | None = None,
    forcefield: Sequence[str] = DEFAULT_FORCEFIELD,
    restraint_k: float = 2000.0,
    max_iterations: int = 300,
    trajectory_id: int = 0,
) -> list[Configuration]:
    """Relaxed 2-D phi x psi scan of a capped dipeptide on an ``n_grid x n_grid`` grid from -180 degrees.

    Parameters
    ----------
    pdb_path : str or os.PathLike
        ACE-X-NME PDB (start geometry).
    n_grid : int
        Points per angle, even and >= 4; spacing ``360 / n_grid`` degrees.
    energy_fn : callable, optional
        ``positions [N, 3] nm -> (E kJ/mol, F [N, 3] kJ/mol/nm)``; default: the vacuum MM System.
    forcefield : sequence of str
        OpenMM force-field XML files for the default energy and the total charge.
    restraint_k : float
        Harmonic restraint constant of each dihedral, kJ/mol/rad^2.
    max_iterations : int
        L-BFGS-B iterations per grid point.
    trajectory_id : int
        Written to every configuration.

    Returns
    -------
    list of Configuration
        ``n_grid**2`` relaxed geometries in scan (serpentine) order, ``frame`` = scan index.

    Raises
    ------
    InputError
        Missing or non-dipeptide PDB, odd or too small ``n_grid``, bad restraint settings.
    """
    from threadpoolctl import threadpool_limits

    from forcefield_refit.cmap import cmap_scan

    if n_grid < 4 or n_grid % 2:
        raise InputError(f"n_grid = {n_grid}; the 2-D grid needs an even number >= 4 of points per angle (e.g. 12)")
    _check_grid_settings(restraint_k, max_iterations)
    molecule = load_dipeptide(pdb_path)
    phi, psi = _dihedral_quad(molecule, "phi"), _dihedral_quad(molecule, "psi")
    fn = _energy_function(molecule, energy_fn, forcefield)
    with threadpool_limits(1):
        profile = cmap_scan(
            fn, molecule.positions, phi, psi, molecule.bonds, n_grid=n_grid, restraint_k=restraint_k,
            max_iterations=max_iterations,
        )
    numbers = _atomic_numbers(molecule)
    charge = _total_charge(molecule, forcefield)
    source = SOURCE_2D.format(residue=_residue(molecule))
    return [
        Configuration(numbers, xyz, total_charge=charge, source=source, trajectory_id=trajectory_id, frame=k)
        for k, xyz in enumerate(profile.positions)
    ]


def _atomic_numbers(molecule: Molecule) -> np.ndarray:
    return np.array([atom.element.atomic_number for atom in molecule.topology.atoms()], dtype=np.int64)
