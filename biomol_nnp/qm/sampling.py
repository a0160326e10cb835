"""Configurations to label: frames of classical MD of the solvated and of the vacuum system.

A solvated frame keeps the ML region and, as point charges, every solvent molecule (water, ions)
with any atom within ``SamplingSettings.point_charge_cutoff_nm`` of any region atom under the
minimum-image convention. Each molecule is kept whole and imaged next to the region, so the QM
calculation sees a compact, non-periodic cluster. Charges come from the System's NonbondedForce;
the element of each MM atom goes with its charge (xtb damps point charges by element).

>>> from biomol_nnp.config import SamplingSettings, SystemSettings
>>> sampling = SamplingSettings(solvated_frames=2, vacuum_frames=2)
>>> configs = sample_md_configurations(SystemSettings(), sampling)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from biomol_nnp.config import SamplingSettings, SystemSettings
from biomol_nnp.exceptions import InputError, SimulationError

logger = logging.getLogger(__name__)

SOLVATED_SOURCE = "solvated-md"
VACUUM_SOURCE = "vacuum-md"
LANGEVIN_FRICTION_PER_PS = 1.0
"""Langevin friction of the sampling runs, 1/ps."""
MINIMIZATION_MAX_ITERATIONS = 200
"""Energy minimization steps before the runs (removes clashes from the PDB)."""
CHARGE_ROUNDING_WARNING = 1e-3
"""Warn when the region's MM charges sum this far from an integer, e."""


@dataclass
class Configuration:
    """One geometry to label: the ML region and the MM point charges around it.

    Attributes
    ----------
    atomic_numbers : numpy.ndarray, shape (N,), int
        Atomic numbers of the region atoms.
    positions : numpy.ndarray, shape (N, 3)
        Region atom positions, nm.
    total_charge : int
        Net charge of the region, e.
    mm_positions : numpy.ndarray, shape (M, 3)
        Point-charge positions, nm (region-centred minimum image; M may be 0).
    mm_charges : numpy.ndarray, shape (M,)
        Point charges, e.
    mm_numbers : numpy.ndarray, shape (M,), int
        Element of the MM atom carrying each charge.
    source : str
        Where the configuration comes from, e.g. ``"solvated-md"`` or ``"vacuum-md"``.
    trajectory_id : int
        Independent trajectory it belongs to (training splits by trajectory).
    frame : int
        Frame number within that trajectory.
    multiplicity : int
        Spin multiplicity 2S+1 of the region.

    Examples
    --------
    >>> c = Configuration(np.array([1, 1]), np.array([[0.0, 0.0, 0.0], [0.074, 0.0, 0.0]]), 0)
    >>> c.n_mm
    0
    """

    atomic_numbers: np.ndarray
    positions: np.ndarray
    total_charge: int = 0
    mm_positions: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    mm_charges: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mm_numbers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    source: str = "unknown"
    trajectory_id: int = 0
    frame: int = 0
    multiplicity: int = 1

    def __post_init__(self) -> None:
        self.atomic_numbers = np.asarray(self.atomic_numbers, dtype=np.int64).reshape(-1)
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        self.mm_positions = np.asarray(self.mm_positions, dtype=np.float64).reshape(-1, 3)
        self.mm_charges = np.asarray(self.mm_charges, dtype=np.float64).reshape(-1)
        self.mm_numbers = np.asarray(self.mm_numbers, dtype=np.int64).reshape(-1)
        if self.positions.shape[0] != self.atomic_numbers.size:
            raise InputError(
                f"positions has {self.positions.shape[0]} rows but atomic_numbers has "
                f"{self.atomic_numbers.size} entries; give one position per region atom"
            )
        n_mm = self.mm_positions.shape[0]
        if self.mm_charges.size != n_mm or self.mm_numbers.size != n_mm:
            raise InputError(
                f"mm_positions ({n_mm}), mm_charges ({self.mm_charges.size}) and mm_numbers "
                f"({self.mm_numbers.size}) must describe the same number of point charges"
            )

    @property
    def n_atoms(self) -> int:
        """Number of region atoms N."""
        return int(self.atomic_numbers.size)

    @property
    def n_mm(self) -> int:
        """Number of point charges M."""
        return int(self.mm_charges.size)


@dataclass
class _Phase:
    """An MM system to sample from and what is needed to cut configurations out of it."""

    name: str
    system: object
    topology: object
    positions: object
    region: np.ndarray
    region_numbers: np.ndarray
    charges: np.ndarray
    numbers: np.ndarray
    solvent_molecules: list[np.ndarray]
    periodic: bool
    minimized: bool = False


def sample_md_configurations(
    system_settings: SystemSettings,
    sampling: SamplingSettings,
    progress: bool = False,
    *,
    threads: int = 1,
) -> list[Configuration]:
    """Run MM MD of the solvated and the vacuum system and cut labeled-to-be configurations.

    Each phase runs ``sampling.trajectories_per_phase`` independent Langevin trajectories (own
    velocity and integrator seeds), each with ``sampling.equilibration_steps`` of equilibration
    before its frames; the phase's frames are shared out over its trajectories. Solvated
    trajectories get ids ``0..k-1``, vacuum trajectories ``k..2k-1``.

    Parameters
    ----------
    system_settings : SystemSettings
        PDB files, force field, region residues and nonbonded cutoff (nm).
    sampling : SamplingSettings
        Frame counts, temperature (K), time step (fs), point-charge cutoff (nm) and seed.
    progress : bool
        Show a tqdm progress bar over frames.
    threads : int
        Threads of the OpenMM CPU platform.

    Returns
    -------
    list of Configuration
        Solvated frames first (with point charges), then vacuum frames (without).

    Raises
    ------
    InputError
        A PDB file is missing, or the region residues match no atom or differ between the files.
    """
    phases: list[tuple[_Phase, int]] = []
    if sampling.solvated_frames > 0:
        phases.append((_build_phase(system_settings, solvated=True), sampling.solvated_frames))
    if sampling.vacuum_frames > 0:
        phases.append((_build_phase(system_settings, solvated=False), sampling.vacuum_frames))
    if len(phases) == 2 and not np.array_equal(phases[0][0].region_numbers, phases[1][0].region_numbers):
        raise InputError(
            f"the region of {str(system_settings.solvated_pdb)!r} ({phases[0][0].region.size} atoms) and of "
            f"{str(system_settings.vacuum_pdb)!r} ({phases[1][0].region.size} atoms) differ"
            " in elements or atom order; both PDB files must hold the same region residues"
        )
    total = sampling.solvated_frames + sampling.vacuum_frames
    configs: list[Configuration] = []
    bar = _progress_bar(total, progress)
    try:
        for phase, n_frames in phases:
            first_id = 0 if phase.periodic else sampling.trajectories_per_phase
            for run, run_frames in enumerate(_share(n_frames, sampling.trajectories_per_phase)):
                if run_frames == 0:
                    continue
                for config in _run_trajectory(phase, sampling, first_id + run, run_frames, threads):
                    configs.append(config)
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    logger.info(
        "sampled %d configurations (%d solvated, %d vacuum)",
        len(configs),
        sum(c.source == SOLVATED_SOURCE for c in configs),
        sum(c.source == VACUUM_SOURCE for c in configs),
    )
    return configs


def _progress_bar(total: int, enabled: bool):  # type: ignore[no-untyped-def]
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="MD frames", unit="frame")


def _share(n_frames: int, n_runs: int) -> list[int]:
    """Split ``n_frames`` over ``n_runs`` as evenly as possible."""
    return [n_frames // n_runs + (1 if run < n_frames % n_runs else 0) for run in range(n_runs)]


def _build_phase(system_settings: SystemSettings, solvated: bool) -> _Phase:
    """Create the OpenMM System of one PDB and find its region and solvent molecules."""
    import openmm.app as app
    from openmm import NonbondedForce, unit

    pdb_path = Path(system_settings.solvated_pdb if solvated else system_settings.vacuum_pdb)
    name = "solvated" if solvated else "vacuum"
    if not pdb_path.is_file():
        raise InputError(f"{name} PDB {str(pdb_path)!r} does not exist; set SystemSettings.{name}_pdb")
    pdb = app.PDBFile(str(pdb_path))
    atoms = list(pdb.topology.atoms())
    region_set = set(system_settings.region_residues)
    region = np.array([a.index for a in atoms if a.residue.name in region_set], dtype=np.int64)
    if region.size == 0:
        found = sorted({r.name for r in pdb.topology.residues()})
        raise InputError(
            f"region_residues {system_settings.region_residues} match no atom of {str(pdb_path)!r}; "
            f"residue names there: {found}"
        )
    forcefield = app.ForceField(*system_settings.forcefield)
    if solvated:
        if pdb.topology.getPeriodicBoxVectors() is None:
            raise InputError(f"solvated PDB {str(pdb_path)!r} has no periodic box (CRYST1 record)")
        system = forcefield.createSystem(
            pdb.topology,
            nonbondedMethod=app.PME,
            nonbondedCutoff=system_settings.nonbonded_cutoff_nm * unit.nanometer,
            constraints=None,
            rigidWater=True,
        )
    else:
        # no bond constraints: the labelled frames must cover X-H stretching, or the model has no data there
        system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    nonbonded = next(f for f in system.getForces() if isinstance(f, NonbondedForce))
    e = unit.elementary_charge
    charges = np.array(
        [nonbonded.getParticleParameters(i)[0].value_in_unit(e) for i in range(system.getNumParticles())]
    )
    numbers = np.array([_element_number(atom) for atom in atoms], dtype=np.int64)
    return _Phase(
        name=name,
        system=system,
        topology=pdb.topology,
        positions=pdb.positions,
        region=region,
        region_numbers=numbers[region],
        charges=charges,
        numbers=numbers,
        solvent_molecules=_solvent_molecules(pdb.topology, region_set) if solvated else [],
        periodic=solvated,
    )


def _element_number(atom) -> int:  # type: ignore[no-untyped-def]
    """Atomic number of an OpenMM atom; a virtual site takes the element of its residue's heaviest atom."""
    if atom.element is not None:
        return int(atom.element.atomic_number)
    heavy = [a.element.atomic_number for a in atom.residue.atoms() if a.element is not None]
    return int(max(heavy)) if heavy else 1


def _solvent_molecules(topology, region_set: set[str]) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    """Atom indices of each residue outside the region that is not bonded to another residue."""
    bonded_across: set[int] = set()
    for bond in topology.bonds():
        if bond[0].residue.index != bond[1].residue.index:
            bonded_across.add(bond[0].residue.index)
            bonded_across.add(bond[1].residue.index)
    return [
        np.array([a.index for a in residue.atoms()], dtype=np.int64)
        for residue in topology.residues()
        if residue.name not in region_set and residue.index not in bonded_across
    ]


def _run_trajectory(
    phase: _Phase, sampling: SamplingSettings, trajectory_id: int, n_frames: int, threads: int
) -> Iterator[Configuration]:
    """Run one Langevin trajectory and yield its frames."""
    import openmm
    from openmm import unit

    seed = (sampling.seed + trajectory_id) % (2**31 - 1) or 1  # 0 would mean "random" to OpenMM
    integrator = openmm.LangevinMiddleIntegrator(
        sampling.temperature_k * unit.kelvin,
        LANGEVIN_FRICTION_PER_PS / unit.picosecond,
        sampling.timestep_fs * unit.femtosecond,
    )
    integrator.setRandomNumberSeed(seed)
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(phase.system, integrator, platform, {"Threads": str(threads)})
    context.setPositions(phase.positions)
    if not phase.minimized:
        openmm.LocalEnergyMinimizer.minimize(context, maxIterations=MINIMIZATION_MAX_ITERATIONS)
        phase.positions = context.getState(getPositions=True).getPositions()
        phase.minimized = True
    context.setVelocitiesToTemperature(sampling.temperature_k * unit.kelvin, seed)
    integrator.step(sampling.equilibration_steps)
    total_charge = _region_charge(phase)
    logger.debug("%s trajectory %d (seed %d): %d frames", phase.name, trajectory_id, seed, n_frames)
    for frame in range(n_frames):
        integrator.step(sampling.steps_between_frames)
        state = context.getState(getPositions=True, enforcePeriodicBox=False)
        xyz = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        if not np.all(np.isfinite(xyz)):
            raise SimulationError(
                f"{phase.name} sampling trajectory {trajectory_id} gave NaN coordinates at frame {frame}; "
                "lower SamplingSettings.temperature_k or timestep_fs"
            )
        box = None
        if phase.periodic:
            box = np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
        yield _cut_configuration(phase, np.asarray(xyz), box, sampling, total_charge, trajectory_id, frame)


def _region_charge(phase: _Phase) -> int:
    """Net charge of the region, rounded from its MM charges (e)."""
    q = float(phase.charges[phase.region].sum())
    if abs(q - round(q)) > CHARGE_ROUNDING_WARNING:
        logger.warning(
            "the MM charges of the %s region sum to %.4f e, not an integer; using %d. "
            "Check that region_residues covers whole residues.",
            phase.name,
            q,
            round(q),
        )
    return int(round(q))


def _cut_configuration(
    phase: _Phase,
    xyz: np.ndarray,
    box: np.ndarray | None,
    sampling: SamplingSettings,
    total_charge: int,
    trajectory_id: int,
    frame: int,
) -> Configuration:
    region_xyz = xyz[phase.region]
    if box is None or not phase.solvent_molecules:
        mm_xyz, mm_index = np.zeros((0, 3)), np.zeros(0, dtype=np.int64)
    else:
        mm_xyz, mm_index = select_point_charges(
            region_xyz, xyz, phase.solvent_molecules, box, sampling.point_charge_cutoff_nm
        )
    return Configuration(
        atomic_numbers=phase.region_numbers.copy(),
        positions=region_xyz.copy(),
        total_charge=total_charge,
        mm_positions=mm_xyz,
        mm_charges=phase.charges[mm_index],
        mm_numbers=phase.numbers[mm_index],
        source=SOLVATED_SOURCE if phase.periodic else VACUUM_SOURCE,
        trajectory_id=trajectory_id,
        frame=frame,
    )


def minimum_image(displacements: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Wrap displacement vectors into the minimum image of an OpenMM reduced periodic box.

    Parameters
    ----------
    displacements : numpy.ndarray, shape (..., 3)
        Displacements, nm.
    box : numpy.ndarray, shape (3, 3)
        Box vectors as rows in OpenMM's reduced form (a along x, b in the xy plane), nm.

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        Wrapped displacements, nm.

    Examples
    --------
    >>> minimum_image(np.array([0.9, 0.0, 0.0]), np.eye(3))
    array([-0.1,  0. ,  0. ])
    """
    d = np.array(displacements, dtype=np.float64, copy=True)
    for axis in (2, 1, 0):  # the same order as OpenMM's reduced triclinic boxes
        d -= np.floor(d[..., axis : axis + 1] / box[axis, axis] + 0.5) * box[axis]
    return d


def select_point_charges(
    region_xyz: np.ndarray,
    xyz: np.ndarray,
    molecules: list[np.ndarray],
    box: np.ndarray,
    cutoff_nm: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Pick whole molecules within a cutoff of the region and image them next to it.

    A molecule is taken when any of its atoms is within ``cutoff_nm`` of any region atom under
    the minimum image. It is translated as a whole by the lattice vector that brings its atom
    closest to the region to its minimum-image position.

    Parameters
    ----------
    region_xyz : numpy.ndarray, shape (N, 3)
        Region positions, nm (a whole molecule, not wrapped into the box).
    xyz : numpy.ndarray, shape (A, 3)
        All positions, nm, with molecules whole.
    molecules : list of numpy.ndarray
        Atom indices of each candidate molecule.
    box : numpy.ndarray, shape (3, 3)
        Periodic box vectors (rows), nm.
    cutoff_nm : float
        Selection distance, nm.

    Returns
    -------
    positions : numpy.ndarray, shape (M, 3)
        Imaged positions of the selected atoms, nm.
    indices : numpy.ndarray, shape (M,)
        Their atom indices.
    """
    if not molecules:
        return np.zeros((0, 3)), np.zeros(0, dtype=np.int64)
    atoms = np.concatenate(molecules)
    owner = np.concatenate([np.full(len(m), k) for k, m in enumerate(molecules)])
    raw = xyz[atoms][:, None, :] - region_xyz[None, :, :]  # (A, N, 3)
    wrapped = minimum_image(raw, box)
    dist = np.linalg.norm(wrapped, axis=-1)
    nearest = dist.argmin(axis=1)
    atom_min = dist[np.arange(atoms.size), nearest]
    shifts = (wrapped - raw)[np.arange(atoms.size), nearest]  # lattice vector per atom
    mol_min = np.full(len(molecules), np.inf)
    np.minimum.at(mol_min, owner, atom_min)
    selected = np.flatnonzero(mol_min <= cutoff_nm)
    positions, indices = [], []
    for k in selected:
        members = np.flatnonzero(owner == k)
        closest = members[atom_min[members].argmin()]
        positions.append(xyz[atoms[members]] + shifts[closest])
        indices.append(atoms[members])
    if not positions:
        return np.zeros((0, 3)), np.zeros(0, dtype=np.int64)
    return np.concatenate(positions), np.concatenate(indices)
