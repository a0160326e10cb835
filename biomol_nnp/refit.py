"""Backbone torsion refit from a deployed model: phi and psi profiles -> Fourier terms -> frcmod and ffxml.

For each backbone torsion of the shipped capped dipeptide (phi = C-N-CX-C, psi = N-CX-C-N in
Amber ff14SB types) a restrained, relaxed scan gives one geometry per angle (relaxed on the MM surface
by default, ``RefitSettings.relax_with``); on those geometries the model energy is compared with the
MM energy with that torsion's own terms removed; the difference is fitted by a Fourier
series and written for Amber (frcmod) and OpenMM (ffxml). The ffxml must be loaded *before*
the base force field: ``forcefield_refit.writers.openmm_xml.load_forcefield(["refit.xml"],
["amber14-all.xml", "amber14/tip3p.xml"])``.

>>> result = refit_backbone("model.pt", SystemSettings(), RefitSettings(), Path("refit"))  # doctest: +SKIP
>>> result["torsions"]["phi"]["rmse_kj_per_mol"]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from openmm import app, unit
from threadpoolctl import threadpool_limits

from biomol_nnp.config import RefitSettings, SystemSettings
from biomol_nnp.models.calculator import ModelCalculator

logger = logging.getLogger(__name__)

BACKBONE_TORSIONS = {
    "phi": ("protein-C", "protein-N", "protein-CX", "protein-C"),
    "psi": ("protein-N", "protein-CX", "protein-C", "protein-N"),
}
"""OpenMM amber14 atom types of the backbone torsions of a capped alanine."""


def refit_backbone(
    model_path: str | os.PathLike,
    system: SystemSettings,
    settings: RefitSettings,
    output_dir: Path,
    progress: bool = False,
) -> dict[str, Any]:
    """Scan phi and psi with the model, fit Fourier terms, write ``refit.frcmod``, ``refit.xml`` and plots.

    Returns a JSON-ready dictionary with, per torsion, the fitted terms (kJ/mol, degrees), the fit RMSE
    (kJ/mol) and the RMSE of the reloaded ffxml against the fit, plus the output paths.
    """
    from forcefield_refit.energy import openmm_energy_function
    from forcefield_refit.plots import plot_torsion_fit
    from forcefield_refit.profiles import evaluate_profile, moving_side, torsion_scan
    from forcefield_refit.torsions import fit_fourier, remove_torsions, torsion_atoms_by_type
    from forcefield_refit.validate import ffxml_profile
    from forcefield_refit.writers.amber_frcmod import write_frcmod
    from forcefield_refit.writers.openmm_xml import write_ffxml

    output_dir.mkdir(parents=True, exist_ok=True)
    pdb = app.PDBFile(str(system.vacuum_pdb))
    forcefield = app.ForceField(*system.forcefield)
    mm_system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    start = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    bonds = [(bond[0].index, bond[1].index) for bond in pdb.topology.bonds()]
    model_fn = ModelCalculator(model_path, [atom.element.atomic_number for atom in pdb.topology.atoms()])
    angles = np.arange(-180.0, 180.0, settings.scan_step_deg)
    fitted, profiles, report = [], {}, {}
    with threadpool_limits(1):  # tiny L-BFGS problems: BLAS threads only add overhead
        for name, types in BACKBONE_TORSIONS.items():
            quads = torsion_atoms_by_type(pdb.topology, forcefield, types)
            relax_fn = model_fn if settings.relax_with == "model" else openmm_energy_function(mm_system)
            profile = torsion_scan(
                relax_fn,
                start,
                quads[0],
                angles,
                restraint_k=settings.restraint_k_kj_per_rad2,
                max_iterations=settings.max_iterations,
                moving_atoms=moving_side(bonds, quads[0]),
                progress=progress,
            )
            model_energies = evaluate_profile(model_fn, profile.positions)
            baseline = evaluate_profile(openmm_energy_function(remove_torsions(mm_system, quads)), profile.positions)
            target = model_energies - baseline
            torsion = fit_fourier(
                profile.achieved_angles_deg, target, periodicities=tuple(settings.periodicities), types=types
            )
            fitted.append(torsion)
            profiles[name] = (profile, target, quads[0])
            plot = plot_torsion_fit(
                output_dir / f"{name}_fit.png",
                profile.achieved_angles_deg,
                target,
                torsion,
                title=f"{name}: model minus MM baseline",
            )
            report[name] = {
                "types": list(types),
                "atoms": list(quads[0]),
                "terms": [list(t) for t in torsion.terms],
                "rmse_kj_per_mol": float(torsion.fit_rmse_kj or 0.0),
                "plot": str(plot),
            }
            logger.info("%s: fitted %s, RMSE %.3f kJ/mol", name, torsion.terms, torsion.fit_rmse_kj)
    # the refit stage owns its output folder: a rerun replaces its own files
    frcmod = write_frcmod(output_dir / "refit.frcmod", fitted, title="biomol-nnp backbone refit", overwrite=True)
    ffxml = write_ffxml(output_dir / "refit.xml", fitted, overwrite=True)
    for torsion, (name, (profile, _, quad)) in zip(fitted, profiles.items(), strict=True):
        reloaded = ffxml_profile([str(ffxml), *system.forcefield], str(system.vacuum_pdb), quad, profile.positions)
        expected = torsion.energy(np.deg2rad(profile.achieved_angles_deg))
        report[name]["ffxml_reload_rmse_kj_per_mol"] = float(np.sqrt(np.mean((reloaded - expected) ** 2)))
    rmse = float(np.sqrt(np.mean([(t.fit_rmse_kj or 0.0) ** 2 for t in fitted])))
    return {"torsions": report, "frcmod": str(frcmod), "ffxml": str(ffxml), "rmse_kj_per_mol": rmse}
