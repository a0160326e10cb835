"""Small real systems for the simulation-runner tests, made by `biomol_nnp.prepare.prepare`."""

from __future__ import annotations

from pathlib import Path

import yaml

from biomol_nnp.config import SYSTEMS_DIR, PipelineSettings, PrepareSettings

DIPEPTIDE_PDB = SYSTEMS_DIR / "alanine_dipeptide" / "vacuum.pdb"


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
