"""Small real systems for the simulation tests: `biomol_nnp.prepare.prepare` outputs and a dipeptide-water cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from biomol_nnp.config import SYSTEMS_DIR, PipelineSettings, PrepareSettings

DIPEPTIDE_PDB = SYSTEMS_DIR / "alanine_dipeptide" / "vacuum.pdb"
SOLVATED_DIPEPTIDE_PDB = SYSTEMS_DIR / "alanine_dipeptide" / "solvated.pdb"
PEPTIDE = ("ACE", "ALA", "NME")
"""Residues of the alanine dipeptide (the ML/QM region)."""


def dipeptide_water_cluster(n_waters: int = 6) -> tuple[Any, Any, Any, list[int]]:
    """The alanine dipeptide and its ``n_waters`` nearest TIP3P waters from the solvated PDB, amber14.

    Non-periodic: no box, no cutoff, no constraints, flexible waters. Returns the topology, the System,
    the positions (a Quantity, nm) and the indices of the dipeptide atoms.
    """
    import openmm.app as app
    import openmm.unit as u

    pdb = app.PDBFile(str(SOLVATED_DIPEPTIDE_PDB))
    positions = pdb.getPositions(asNumpy=True).value_in_unit(u.nanometer)
    peptide = [a.index for a in pdb.topology.atoms() if a.residue.name in PEPTIDE]
    waters = [r for r in pdb.topology.residues() if r.name == "HOH"]

    def distance(residue: Any) -> float:
        oxygen = next(a.index for a in residue.atoms() if a.element.symbol == "O")
        return float(np.min(np.linalg.norm(positions[peptide] - positions[oxygen], axis=1)))

    keep = sorted(waters, key=distance)[:n_waters]
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.delete([r for r in waters if r not in keep])
    modeller.topology.setPeriodicBoxVectors(None)
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    system = forcefield.createSystem(
        modeller.topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
    )
    region = [a.index for a in modeller.topology.atoms() if a.residue.name in PEPTIDE]
    return modeller.topology, system, modeller.positions, region


def prepared_dipeptide(folder: Path, solvated: bool, region: str = "resname ACE ALA NME") -> Path:
    """`biomol-nnp prepare` output of the alanine dipeptide: vacuum (22 atoms) or a ~1.6 nm water box."""
    from biomol_nnp.prepare import prepare

    settings = PrepareSettings(
        solvate=solvated, padding_nm=0.6, ionic_strength_molar=0.0, nonbonded_cutoff_nm=0.7, region_selection=region
    )
    prepare(DIPEPTIDE_PDB, folder, settings)
    return folder


def write_run_config(path: Path, **simulation: object) -> Path:
    """A PipelineSettings YAML whose `simulation:` section has the given values."""
    settings = PipelineSettings()
    data = settings.model_dump(mode="json")
    data["simulation"].update({k: str(v) if isinstance(v, Path) else v for k, v in simulation.items()})
    PipelineSettings.model_validate(data)
    path.write_text(yaml.safe_dump(data))
    return path
