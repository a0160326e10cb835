"""The System an enhanced-sampling run simulates, from :class:`~biomol_nnp.config.SamplingSystemSettings`.

Three kinds, one function:

- ``"mm"``: the PDB parameterized with the force-field XMLs, or a serialized System (``system.xml`` of
  `biomol-nnp prepare`) with the PDB giving topology and positions;
- ``"nnp"``: that MM System with the ML region replaced by the deployed model (openmm-ml ``biomol-nnp``,
  electrostatic or mechanical embedding; :func:`biomol_nnp.simulate.runner.create_mixed_system`);
- ``"refit"``: the PDB parameterized with the refitted ffxml (`biomol-nnp refit` / `forcefield-refit`)
  loaded ahead of the base XMLs, so the refitted terms win.

A PDB with a CRYST1 box gets PME (HBonds constraints, rigid water), one without gets no cutoff.

>>> sampled = build_sampling_system(SamplingSystemSettings(kind="mm"))  # doctest: +SKIP
>>> sampled.system.getNumParticles()  # doctest: +SKIP
22
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import openmm
import openmm.app as app
import openmm.unit as u

from biomol_nnp.config import SamplingSystemSettings, SimulationSettings
from biomol_nnp.exceptions import ConfigError, InputError, SimulationError

logger = logging.getLogger(__name__)

SYSTEM_KINDS = ("mm", "nnp", "refit")
"""Values of ``SamplingSystemSettings.kind``."""


@dataclasses.dataclass
class SampledSystem:
    """What a sampling run simulates.

    Attributes
    ----------
    topology : openmm.app.Topology
    system : openmm.System
        The System (MM, NNP/MM or refitted MM); sampling adds its bias/restraint forces to it.
    positions : openmm.unit.Quantity
        Starting positions from the PDB, nm.
    kind : str
        ``"mm"``, ``"nnp"`` or ``"refit"``.
    ml_atoms : list of int
        ML region atoms (empty unless ``kind == "nnp"``).
    """

    topology: app.Topology
    system: openmm.System
    positions: Any
    kind: str
    ml_atoms: list[int] = dataclasses.field(default_factory=list)


def check_system_settings(settings: SamplingSystemSettings) -> None:
    """Refuse inconsistent settings before anything is built (files missing, kind without its inputs).

    Raises
    ------
    ConfigError
        Unknown kind, missing PDB / System XML / refit ffxml / model file.
    """
    if settings.kind not in SYSTEM_KINDS:
        raise ConfigError(f"system.kind={settings.kind!r} is unknown; choose one of {list(SYSTEM_KINDS)}")
    if not Path(settings.pdb).is_file():
        raise ConfigError(f"system.pdb {str(settings.pdb)!r} does not exist; give the structure as a PDB file")
    if settings.system_xml is not None and not Path(settings.system_xml).is_file():
        raise ConfigError(
            f"system.system_xml {str(settings.system_xml)!r} does not exist; give the system.xml written by "
            "`biomol-nnp prepare`, or leave it out to parameterize the PDB with system.forcefield"
        )
    if settings.kind == "refit":
        if not settings.refit_xml:
            raise ConfigError(
                "system.kind='refit' needs system.refit_xml: the ffxml written by `biomol-nnp refit` "
                "(refit.xml) or `forcefield-refit`"
            )
        if settings.system_xml is not None:
            raise ConfigError("system.kind='refit' parameterizes the PDB itself; remove system.system_xml")
        for path in settings.refit_xml:
            if not Path(path).is_file():
                raise ConfigError(f"system.refit_xml entry {str(path)!r} does not exist")
    if settings.kind == "nnp":
        if settings.model_path is None or not Path(settings.model_path).is_file():
            raise ConfigError(
                f"system.kind='nnp' needs system.model_path (a deployed model.pt); got {settings.model_path!r}: "
                "train one with `biomol-nnp train`, or use kind 'mm'"
            )


def _forcefield(settings: SamplingSystemSettings) -> app.ForceField:
    if settings.kind == "refit":
        from forcefield_refit.writers.openmm_xml import load_forcefield

        return load_forcefield([str(path) for path in settings.refit_xml], settings.forcefield)
    return app.ForceField(*settings.forcefield)


def build_mm(settings: SamplingSystemSettings) -> tuple[app.Topology, openmm.System, Any]:
    """MM (or refitted MM) System, topology and positions of ``settings.pdb``; no ML region yet."""
    pdb = app.PDBFile(str(settings.pdb))
    if settings.system_xml is not None:
        system = openmm.XmlSerializer.deserialize(Path(settings.system_xml).read_text())
        if system.getNumParticles() != pdb.topology.getNumAtoms():
            raise InputError(
                f"system.system_xml {str(settings.system_xml)!r} has {system.getNumParticles()} particles but "
                f"system.pdb {str(settings.pdb)!r} has {pdb.topology.getNumAtoms()} atoms; give the topology.pdb "
                "written with that system.xml"
            )
        return pdb.topology, system, pdb.positions
    periodic = pdb.topology.getPeriodicBoxVectors() is not None
    try:
        system = _forcefield(settings).createSystem(
            pdb.topology,
            nonbondedMethod=app.PME if periodic else app.NoCutoff,
            nonbondedCutoff=settings.nonbonded_cutoff_nm * u.nanometer,
            constraints=app.HBonds if settings.constraints == "HBonds" else None,
            rigidWater=True,
        )
    except ValueError as err:
        raise InputError(
            f"cannot parameterize {str(settings.pdb)!r} with {settings.forcefield}: {err}; "
            "prepare the structure with `biomol-nnp prepare` or give matching force-field XMLs"
        ) from err
    return pdb.topology, system, pdb.positions


def region_atoms_of(settings: SamplingSystemSettings, topology: app.Topology) -> list[int]:
    """Atoms of the region the settings name: ``region_selection`` (MDAnalysis) or ``region_residues``."""
    if settings.region_selection:
        from biomol_nnp.prepare import select_region

        return select_region(settings.pdb, settings.region_selection)
    from biomol_nnp.simulate.runner import region_atoms

    return region_atoms(topology, settings.region_residues)


def build_sampling_system(settings: SamplingSystemSettings) -> SampledSystem:
    """Topology, System and positions for a sampling run of kind ``mm``, ``nnp`` or ``refit``.

    Parameters
    ----------
    settings : SamplingSystemSettings

    Returns
    -------
    SampledSystem

    Raises
    ------
    ConfigError
        Inconsistent settings (see :func:`check_system_settings`).
    InputError
        A structure the force field cannot parameterize, a System XML of another size, an empty region.

    Examples
    --------
    >>> s = build_sampling_system(SamplingSystemSettings(kind="nnp", model_path="model.pt"))  # doctest: +SKIP
    """
    check_system_settings(settings)
    topology, system, positions = build_mm(settings)
    if settings.kind != "nnp":
        logger.info("%s System of %s: %d atoms", settings.kind, settings.pdb, system.getNumParticles())
        return SampledSystem(topology, system, positions, settings.kind)
    from biomol_nnp.simulate.runner import create_mixed_system

    ml_atoms = region_atoms_of(settings, topology)
    simulation = SimulationSettings(
        model_path=Path(str(settings.model_path)), embedding=settings.embedding, torch_threads=settings.torch_threads
    )
    mixed = create_mixed_system(topology, system, ml_atoms, simulation)
    return SampledSystem(topology, mixed, positions, "nnp", ml_atoms)


def check_finite(simulation: app.Simulation, what: str) -> float:
    """Potential energy of ``simulation`` (kJ/mol); a NaN/inf stops the run with a :class:`SimulationError`."""
    energy = simulation.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    if not math.isfinite(energy):
        raise SimulationError(
            f"{what}: the potential energy is {energy} at step {simulation.currentStep}; lower the time step, "
            "minimise longer or check the bias/restraint strength"
        )
    return float(energy)
