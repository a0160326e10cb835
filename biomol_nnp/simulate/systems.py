"""The System a run simulates: shipped dipeptide or a `biomol-nnp prepare` folder, NNP/MM or pure MM.

Force groups are set here once, so every reporter reads the same terms:
``MM_GROUP`` (0) every classical term, ``NNP_GROUP`` (1) the model force (vacuum NNP + embedding),
and the flat-bottom water restraints keep their own groups (`biomol_nnp.openmm.restraints`).

>>> run_system = build_run_system(SystemSettings(), SimulationSettings(mm_only=True))  # doctest: +SKIP
>>> run_system.groups  # doctest: +SKIP
{'mm': [0], 'nnp': [], 'restraints': []}
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u

from biomol_nnp.config import SimulationSettings, SystemSettings
from biomol_nnp.exceptions import ConfigError, InputError
from biomol_nnp.openmm.restraints import RESTRAINT_NAMES, WATER_RESIDUE_NAMES, add_water_restraints
from biomol_nnp.qm.sampling import minimum_image

logger = logging.getLogger(__name__)

MM_GROUP = 0
"""Force group of every classical term."""

NNP_GROUP = 1
"""Force group of the model force (NNP energy of the region plus its embedding energy)."""

PREPARED_FILES = ("system.xml", "topology.pdb", "region.json")
"""Files of a `biomol-nnp prepare` folder the runner reads."""


@dataclasses.dataclass
class RunSystem:
    """What a run simulates.

    Attributes
    ----------
    topology : openmm.app.Topology
    mm_system : openmm.System
        Pure MM System (after hydrogen mass repartitioning, without barostat).
    system : openmm.System
        The System integrated: NNP/MM, or ``mm_system`` itself for a pure MM run (plus the barostat for NPT).
    positions : openmm.unit.Quantity
        Starting positions, nm.
    ml_atoms : list of int
        ML region atoms (empty for pure MM).
    groups : dict of str to list of int
        Force groups of the terms ``"mm"``, ``"nnp"`` and ``"restraints"``.
    """

    topology: app.Topology
    mm_system: openmm.System
    system: openmm.System
    positions: Any
    ml_atoms: list[int]
    groups: dict[str, list[int]]


def load_prepared(folder: str | Path) -> tuple[app.Topology, openmm.System, Any, list[int]]:
    """Topology, System, positions and region atom indices of a `biomol-nnp prepare` output folder."""
    folder = Path(folder)
    missing = [name for name in PREPARED_FILES if not (folder / name).is_file()]
    if missing:
        raise InputError(
            f"prepared_dir {str(folder)!r} lacks {missing}; give a folder written by `biomol-nnp prepare "
            "--region SELECTION` (region.json is written only with a region selection)"
        )
    pdb = app.PDBFile(str(folder / "topology.pdb"))
    system = openmm.XmlSerializer.deserialize((folder / "system.xml").read_text())
    if system.getNumParticles() != pdb.topology.getNumAtoms():
        raise InputError(
            f"{folder / 'system.xml'} has {system.getNumParticles()} particles but topology.pdb has "
            f"{pdb.topology.getNumAtoms()} atoms; run `biomol-nnp prepare` again into an empty folder"
        )
    region = json.loads((folder / "region.json").read_text())
    return pdb.topology, system, pdb.positions, [int(i) for i in region["atom_indices"]]


def repartition_hydrogen_mass(system: openmm.System, topology: app.Topology, mass_amu: float) -> int:
    """Give every non-water hydrogen ``mass_amu`` Da, taken from its bonded heavy atom; returns how many changed.

    The total mass is kept (as ``ForceField.createSystem(hydrogenMass=...)`` does). Raises InputError if a
    heavy atom would be left lighter than 1 Da.
    """
    changed = 0
    for atom1, atom2 in topology.bonds():
        if atom1.element is app.element.hydrogen:
            atom1, atom2 = atom2, atom1
        if atom2.element is not app.element.hydrogen or atom1.element in (None, app.element.hydrogen):
            continue
        if atom2.residue.name in ("HOH", "WAT", "TIP3"):
            continue
        transfer = mass_amu - system.getParticleMass(atom2.index).value_in_unit(u.dalton)
        heavy = system.getParticleMass(atom1.index).value_in_unit(u.dalton) - transfer
        if heavy < 1.0:
            raise InputError(
                f"hydrogen_mass_amu={mass_amu} leaves atom {atom1.index} ({atom1.name} of {atom1.residue.name}) "
                f"with {heavy:.2f} Da; give a smaller hydrogen mass (1.5-4 Da)"
            )
        system.setParticleMass(atom2.index, mass_amu * u.dalton)
        system.setParticleMass(atom1.index, heavy * u.dalton)
        changed += 1
    logger.info("hydrogen mass repartitioning: %d hydrogens set to %.3g Da", changed, mass_amu)
    return changed


def assign_force_groups(system: openmm.System) -> dict[str, list[int]]:
    """Put the model force in ``NNP_GROUP`` and the MM terms in ``MM_GROUP``; restraints keep theirs."""
    groups: dict[str, list[int]] = {"mm": [MM_GROUP], "nnp": [], "restraints": []}
    for force in system.getForces():
        if isinstance(force, openmm.PythonForce):
            force.setForceGroup(NNP_GROUP)
            groups["nnp"] = [NNP_GROUP]
        elif force.getName() in RESTRAINT_NAMES:
            if force.getForceGroup() in (MM_GROUP, NNP_GROUP):
                raise InputError(
                    f"restraint force {force.getName()!r} is in force group {force.getForceGroup()}, which the "
                    f"runner uses for MM ({MM_GROUP}) or the model ({NNP_GROUP}); put it in another group"
                )
            groups["restraints"].append(force.getForceGroup())
        else:
            force.setForceGroup(MM_GROUP)
    return groups


def _source(
    system_settings: SystemSettings, simulation: SimulationSettings
) -> tuple[app.Topology, openmm.System, Any, list[int]]:
    """MM topology, System, positions and region atoms of the shipped system or the prepared folder."""
    from biomol_nnp.simulate.runner import build_mm_system, region_atoms

    if simulation.prepared_dir is not None:
        return load_prepared(simulation.prepared_dir)
    topology, system, positions = build_mm_system(system_settings)
    return topology, system, positions, region_atoms(topology, system_settings.region_residues)


def check_model_file(simulation: SimulationSettings) -> None:
    """ConfigError unless a pure MM run, or the model file exists."""
    if not simulation.mm_only and not Path(simulation.model_path).is_file():
        raise ConfigError(
            f"simulation.model_path {str(simulation.model_path)!r} does not exist; train one (`biomol-nnp train`), "
            "give its path, or set simulation.mm_only: true for a pure MM run"
        )


def build_run_system(system_settings: SystemSettings, simulation: SimulationSettings) -> RunSystem:
    """The System a run integrates, from the settings (input, model, HMR, barostat, force groups).

    Raises
    ------
    ConfigError
        NPT for a System without periodic boundaries; a missing model file.
    InputError
        Unreadable input files, an empty region.
    """
    from biomol_nnp.simulate.runner import create_mixed_system

    check_model_file(simulation)
    topology, mm_system, positions, ml_atoms = _source(system_settings, simulation)
    if simulation.ensemble == "npt" and not mm_system.usesPeriodicBoundaryConditions():
        raise ConfigError(
            "simulation.ensemble='npt' needs a periodic box but the System has none (vacuum); use ensemble: nvt "
            "or prepare a solvated system"
        )
    if simulation.hydrogen_mass_amu is not None:
        repartition_hydrogen_mass(mm_system, topology, simulation.hydrogen_mass_amu)
    if simulation.mm_only:
        system, ml_atoms = openmm.XmlSerializer.clone(mm_system), []
    else:
        system = create_mixed_system(topology, mm_system, ml_atoms, simulation)
        topology, positions = with_link_sites(topology, positions, system)
    if not simulation.mm_only and simulation.water_restraint_k > 0:
        restrain_region_waters(system, topology, positions, ml_atoms, simulation)
    if simulation.ensemble == "npt":
        barostat = openmm.MonteCarloBarostat(
            simulation.pressure_bar * u.bar, simulation.temperature_k * u.kelvin, simulation.barostat_interval
        )
        barostat.setRandomNumberSeed(simulation.seed)
        system.addForce(barostat)
    groups = assign_force_groups(system)
    logger.info(
        "%s System: %d atoms, %d in the ML region, %s",
        "pure MM" if simulation.mm_only else "NNP/MM",
        system.getNumParticles(),
        len(ml_atoms),
        simulation.ensemble.upper(),
    )
    return RunSystem(topology, mm_system, system, positions, ml_atoms, groups)


def restrain_region_waters(
    system: openmm.System, topology: app.Topology, positions: Any, ml_atoms: list[int], simulation: SimulationSettings
) -> None:
    """Add `biomol_nnp.openmm.restraints.add_water_restraints` when the region holds waters.

    Sphere centre: the region's non-water atoms. Region-water radius: the farthest region-water oxygen at the
    start plus ``water_restraint_margin_nm``; MM-water radius: the nearest MM-water oxygen minus the margin
    (at most the region radius), so the start is inside both flat bottoms.
    """
    region = set(ml_atoms)
    oxygens = [
        a.index for a in topology.atoms() if a.residue.name in WATER_RESIDUE_NAMES and a.element is app.element.oxygen
    ]
    region_waters = [i for i in oxygens if i in region]
    centre = [a.index for a in topology.atoms() if a.index in region and a.residue.name not in WATER_RESIDUE_NAMES]
    if not region_waters or not centre:
        return
    xyz = np.asarray(positions.value_in_unit(u.nanometer))
    box = system.getDefaultPeriodicBoxVectors() if system.usesPeriodicBoundaryConditions() else None
    box_nm = None if box is None else np.array([v.value_in_unit(u.nanometer) for v in box])

    def distance(indices: list[int]) -> np.ndarray:
        delta = xyz[indices] - xyz[centre].mean(axis=0)
        return np.linalg.norm(delta if box_nm is None else minimum_image(delta, box_nm), axis=1)

    margin = simulation.water_restraint_margin_nm
    radius = float(distance(region_waters).max()) + margin
    mm_waters = [i for i in oxygens if i not in region]
    mm_radius = min(radius, float(distance(mm_waters).min()) - margin) if mm_waters else radius
    add_water_restraints(
        system, topology, region_waters, centre, radius, simulation.water_restraint_k, max(mm_radius, margin)
    )


def with_link_sites(topology: app.Topology, positions: Any, system: openmm.System) -> tuple[app.Topology, Any]:
    """Topology and positions extended by the link-atom virtual sites the mixed System appended.

    The sites (`biomol_nnp.openmm.link_atoms`) get hydrogens ``V<k>`` in one new chain, as
    ``add_link_sites`` names them, and placeholder positions that ``Context.computeVirtualSites`` sets.
    """
    extra = system.getNumParticles() - topology.getNumAtoms()
    if extra == 0:
        return topology, positions
    if any(not system.isVirtualSite(i) for i in range(topology.getNumAtoms(), system.getNumParticles())):
        raise InputError(
            f"the mixed System has {extra} particles more than the topology and they are not virtual sites; "
            "only link-atom caps may be added"
        )
    extended = copy.deepcopy(topology)
    chain = extended.addChain()
    for k in range(extra):
        extended.addAtom(f"V{k}", app.element.hydrogen, extended.addResidue(f"V{k}", chain))
    values = list(positions.value_in_unit(u.nanometer)) + [openmm.Vec3(0.0, 0.0, 0.0)] * extra
    return extended, values * u.nanometer


def degrees_of_freedom(system: openmm.System) -> int:
    """3 per massive particle, minus constraints, minus 3 with a CMMotionRemover (as StateDataReporter counts)."""
    dof = 3 * sum(1 for i in range(system.getNumParticles()) if system.getParticleMass(i).value_in_unit(u.dalton) > 0)
    dof -= system.getNumConstraints()
    if any(isinstance(force, openmm.CMMotionRemover) for force in system.getForces()):
        dof -= 3
    return dof
