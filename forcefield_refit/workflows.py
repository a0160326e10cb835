"""The three refit workflows behind ``forcefield-refit torsions|cmap|hbonds``: settings in, files + report out.

Each returns a JSON-ready report dictionary (profile RMSEs of the original and the refit force field
against the target, in kcal/mol, and the paths written).
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from openmm import app

from forcefield_refit.atom_types import amber_type_name
from forcefield_refit.cmap import cmap_scan, fit_cmap
from forcefield_refit.energy import EnergyFunction, openmm_energy_function
from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.fit_profiles import offset_free_rmse, scan_profile
from forcefield_refit.hbonds import NBFixData, dimer_scan, fit_hbond_term, fit_nbfix
from forcefield_refit.molecules import Molecule, atom_labels, backbone_dihedrals, combine, load_molecule, water_molecule
from forcefield_refit.plots import plot_profile_comparison
from forcefield_refit.profiles import evaluate_profile
from forcefield_refit.settings import CmapSettings, HbondsSettings, OutputSettings, ReferenceSettings, TorsionsSettings
from forcefield_refit.term_energy import term_energies
from forcefield_refit.terms import CmapTerm, NBFixPair
from forcefield_refit.torsion_fit import fit_torsions
from forcefield_refit.torsions import FourierTorsion, check_types_known
from forcefield_refit.units import KJ_TO_KCAL
from forcefield_refit.writers.amber_frcmod import write_frcmod
from forcefield_refit.writers.charmm_prm import write_charmm_prm
from forcefield_refit.writers.gromacs_itp import write_gromacs_itp
from forcefield_refit.writers.openmm_xml import lennard_jones_types, write_ffxml

logger = logging.getLogger(__name__)


def reference_function(reference: ReferenceSettings, molecule: Molecule) -> EnergyFunction:
    """The target energy function for one molecule (an OpenMM force field, or a user factory)."""
    if reference.forcefield is not None:
        return openmm_energy_function(molecule.system(reference.forcefield))
    module_name, _, attr = str(reference.factory).partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as error:
        raise RefitInputError(
            f"reference.factory={reference.factory!r} could not be imported ({error}); allowed: "
            "'package.module:function'. Hint: the function takes a Molecule and returns an EnergyFunction."
        ) from error
    return factory(molecule)  # type: ignore[no-any-return]


def _prepare(output: OutputSettings) -> Path:
    output.directory.mkdir(parents=True, exist_ok=True)
    return output.directory


def _write(
    output: OutputSettings,
    torsions: list[FourierTorsion] | None = None,
    cmaps: list[CmapTerm] | None = None,
    nbfix: list[NBFixPair] | None = None,
    lj_types: dict[str, tuple[float, float]] | None = None,
    hbonds: list[Any] | None = None,
    by: str = "type",
) -> dict[str, str]:
    folder, stem, ow = output.directory, output.prefix, output.overwrite
    torsions, cmaps, nbfix, hbonds = torsions or [], cmaps or [], nbfix or [], hbonds or []
    written: dict[str, str] = {}
    for fmt in output.formats:
        if fmt == "frcmod":
            if cmaps:
                logger.warning("frcmod cannot hold CMAP (ParmEd does not read it back); use prm, itp or ffxml")
            if torsions or nbfix:
                written[fmt] = str(write_frcmod(folder / f"{stem}.frcmod", torsions, title=stem, nbfix=nbfix,
                                                overwrite=ow))
        elif fmt == "prm" and (torsions or cmaps or nbfix):
            written[fmt] = str(write_charmm_prm(folder / f"{stem}.prm", torsions, cmaps, nbfix, title=stem,
                                                overwrite=ow))
        elif fmt == "itp" and (torsions or cmaps or nbfix):
            written[fmt] = str(write_gromacs_itp(folder / f"{stem}.itp", torsions, cmaps, nbfix, title=stem,
                                                 overwrite=ow))
        elif fmt == "ffxml":
            written[fmt] = str(write_ffxml(folder / f"{stem}.xml", torsions, cmaps, nbfix, lj_types, hbonds,
                                           overwrite=ow, by=by))
    return written


def _rmse_row(target: np.ndarray, original: np.ndarray, refit: np.ndarray) -> dict[str, float]:
    return {
        "original_rmse_kcal": offset_free_rmse(original, target) * KJ_TO_KCAL,
        "refit_rmse_kcal": offset_free_rmse(refit, target) * KJ_TO_KCAL,
    }


def run_torsions(settings: TorsionsSettings) -> dict[str, Any]:
    """Scan every profile with the reference, fit all torsion types jointly, write files and plots."""
    folder = _prepare(settings.output)
    base = app.ForceField(*settings.base_forcefield)
    scans = []
    for p in settings.profiles:
        molecule = load_molecule(p.pdb, p.name)
        atoms = backbone_dihedrals(molecule.topology)[p.dihedral] if isinstance(p.dihedral, str) else p.dihedral
        if len(atoms) != 4:
            raise RefitInputError(f"profiles[{p.name}].dihedral={atoms}; allowed: 4 indices. Hint: [4, 6, 8, 14].")
        labels = atom_labels(molecule.topology, base, settings.label_by)
        fit_types = [tuple(t) for t in p.fit_types] if p.fit_types else [tuple(labels[i] for i in atoms)]
        check_types_known(base, [t for q in fit_types for t in q])
        grid = np.arange(-180.0, 180.0, settings.scan.step_deg)
        scans.append(scan_profile(
            p.name, molecule, reference_function(settings.reference, molecule), base, atoms,
            fit_types, grid, by=settings.label_by, restraint_k=settings.scan.restraint_k,  # type: ignore[arg-type]
            max_iterations=settings.scan.max_iterations,
        ))
    fitted = fit_torsions(
        [s.fit_data for s in scans], settings.fit.periodicities, ridge=settings.fit.ridge,
        temperature_k=settings.fit.temperature_k, phases=settings.fit.phases,
    )
    report: dict[str, Any] = {"profiles": {}, "terms_kj_deg": {"-".join(t): s.terms for t, s in fitted.items()}}
    for s in scans:
        target, refit = s.profile.energies_kj, s.refit_kj(fitted)
        report["profiles"][s.name] = _rmse_row(target, s.original_kj, refit)
        if settings.output.plots:
            report["profiles"][s.name]["plot"] = str(plot_profile_comparison(
                folder / f"{s.name}.png", s.profile.achieved_angles_deg,
                {"target": target, "original": s.original_kj, "refit": refit}, title=s.name,
                overwrite=settings.output.overwrite,
            ))
    report["files"] = _write(settings.output, torsions=list(fitted.values()), by=settings.label_by)
    _save_report(settings.output, report)
    return report


def run_cmap(settings: CmapSettings) -> dict[str, Any]:
    """2-D scans of every dipeptide, one CMAP fitted on top of the base force field, files and plots."""
    folder = _prepare(settings.output)
    base = app.ForceField(*settings.base_forcefield)
    phis, psis, residuals, weights, runs, types = [], [], [], [], [], None
    for p in settings.profiles:
        molecule = load_molecule(p.pdb, p.name)
        dihedrals = backbone_dihedrals(molecule.topology)
        chain = (*dihedrals["phi"], dihedrals["psi"][3])
        labels = atom_labels(molecule.topology, base, "type")
        chain_types = tuple(labels[i] for i in chain)
        if types is not None and chain_types != types:
            raise RefitInputError(
                f"profiles[{p.name}] has CMAP types {chain_types}, others {types}; allowed: one type chain per run. "
                "Hint: run cmap once per residue type chain."
            )
        types = chain_types
        profile = cmap_scan(
            reference_function(settings.reference, molecule), molecule.positions, dihedrals["phi"],
            dihedrals["psi"], molecule.bonds, n_grid=settings.n_grid, restraint_k=settings.restraint_k,
            max_iterations=settings.max_iterations,
        )
        mm = evaluate_profile(openmm_energy_function(molecule.system(base)), profile.positions)
        phis.append(profile.phi_deg)
        psis.append(profile.psi_deg)
        residuals.append(profile.energies_kj - mm)
        weights.append(profile.energies_kj)
        runs.append((p.name, profile, mm, chain))
    assert types is not None
    term = fit_cmap(
        np.concatenate(phis), np.concatenate(psis), np.concatenate(residuals), types,  # type: ignore[arg-type]
        resolution=settings.resolution, order=settings.order, ridge=settings.ridge,
    )
    report: dict[str, Any] = {"profiles": {}, "types": list(types), "fit_rmse_kj": term.fit_rmse_kj}
    for name, profile, mm, chain in runs:
        refit = mm + term_energies(profile.positions, cmaps={chain: term})["cmaps"]
        report["profiles"][name] = _rmse_row(profile.energies_kj, mm, refit)
        if settings.output.plots:
            from forcefield_refit.plots import plot_cmap_comparison

            report["profiles"][name]["plot"] = str(plot_cmap_comparison(
                folder / f"{name}_cmap.png", profile, {"target": profile.energies_kj, "original": mm,
                                                       "refit": refit}, overwrite=settings.output.overwrite,
            ))
    report["files"] = _write(settings.output, cmaps=[term])
    _save_report(settings.output, report)
    return report


def _monomer(spec: str) -> Molecule:
    return water_molecule() if spec == "water" else load_molecule(spec)


def run_hbonds(settings: HbondsSettings) -> dict[str, Any]:
    """Rigid dimer scans, NBFIX and/or CustomHbond fits, files and plots."""
    folder = _prepare(settings.output)
    base = app.ForceField(*settings.base_forcefield)
    lj = lennard_jones_types(base)
    scans = []
    for d in settings.dimers:
        donor, acceptor = _monomer(d.donor), _monomer(d.acceptor)
        dimer = combine(donor, acceptor)
        ref = reference_function(settings.reference, dimer)
        mono_ref = tuple(reference_function(settings.reference, m)(m.positions)[0] for m in (donor, acceptor))
        args = (donor.positions, acceptor.positions, *d.donor_atoms, d.acceptor_atom, d.acceptor_back,
                settings.distances_nm, settings.angles_deg)
        target = dimer_scan(ref, mono_ref, *args)  # type: ignore[arg-type]
        mono_mm = tuple(openmm_energy_function(m.system(base))(m.positions)[0] for m in (donor, acceptor))
        mm = dimer_scan(openmm_energy_function(dimer.system(base)), mono_mm, *args)  # type: ignore[arg-type]
        scans.append((d.name, dimer, target, mm))
    nbfix = []
    if settings.nbfix_pairs:
        data = [NBFixData(t, t.energies_kj, m.energies_kj, atom_labels(dim.topology, base), lj)
                for _, dim, t, m in scans]
        nbfix = fit_nbfix(data, [tuple(p) for p in settings.nbfix_pairs], settings.temperature_k)  # type: ignore[misc]
    hbonds = []
    for spec in settings.hbond_terms:
        if len(spec) != 3:
            raise RefitInputError(
                f"hbond_terms entry {spec}; allowed: [donor heavy, H, acceptor] types. Hint: see docs."
            )
        hbonds.append(fit_hbond_term(
            [t for *_, t, _ in scans], [t.energies_kj - m.energies_kj for *_, t, m in scans],
            (spec[0], spec[1]), spec[2], settings.temperature_k, [t.energies_kj for *_, t, _ in scans],
        ))
    report: dict[str, Any] = {"profiles": {}, "nbfix": [vars(p) for p in nbfix], "hbonds": [vars(h) for h in hbonds]}
    for name, dimer, target, mm in scans:
        correction = np.zeros_like(mm.energies_kj)
        for pair in nbfix:
            from forcefield_refit.hbonds import _combined_lj, intermolecular_pairs

            for i, j in intermolecular_pairs(atom_labels(dimer.topology, base), mm.n_donor_atoms, pair.types):
                r = np.linalg.norm(mm.positions[:, i] - mm.positions[:, j], axis=1)
                correction += pair.energy(r) - _combined_lj(lj, pair.types[0], pair.types[1], r)
        refit = mm.energies_kj + correction
        near = target.energies_kj <= target.energies_kj.min() + 2.0 / KJ_TO_KCAL
        def near_rmse(energy: np.ndarray, target: Any = target, near: np.ndarray = near) -> float:
            return float(np.sqrt(np.mean((energy - target.energies_kj)[near] ** 2))) * KJ_TO_KCAL

        report["profiles"][name] = {
            "original_rmse_kcal": near_rmse(mm.energies_kj),
            "refit_rmse_kcal": near_rmse(refit),
            "points_within_2_kcal": int(near.sum()),
        }
        if settings.output.plots:
            zero = np.abs(target.angles_deg) == np.abs(target.angles_deg).min()
            report["profiles"][name]["plot"] = str(plot_profile_comparison(
                folder / f"{name}.png", target.distances_nm[zero] * 1000.0,
                {"target": target.energies_kj[zero], "original": mm.energies_kj[zero], "refit": refit[zero]},
                title=f"{name} (x: D...A distance, pm)", overwrite=settings.output.overwrite, relative=False,
            ))
    types_by_amber = {amber_type_name(t) for p in nbfix for t in p.types}
    logger.debug("NBFIX Amber names: %s", sorted(types_by_amber))
    formats = [f for f in settings.output.formats if nbfix or f == "ffxml"]
    report["files"] = _write(settings.output.model_copy(update={"formats": formats}), nbfix=nbfix,
                             lj_types=lj, hbonds=hbonds)
    _save_report(settings.output, report)
    return report


def _save_report(output: OutputSettings, report: dict[str, Any]) -> None:
    from forcefield_refit.writers._io import atomic_write_text

    path = output.directory / f"{output.prefix}_report.json"
    atomic_write_text(path, json.dumps(report, indent=2, default=str) + "\n", overwrite=output.overwrite)
    report["report"] = str(path)
