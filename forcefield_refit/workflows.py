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
from forcefield_refit.compare import fit_groups, torsion_differences
from forcefield_refit.energy import EnergyFunction, openmm_energy_function
from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.fit_profiles import offset_free_rmse, scan_profile
from forcefield_refit.hbonds import (
    HbondTerm,
    NBFixData,
    dimer_scan,
    fit_hbond_terms,
    fit_nbfix,
    hbond_triples,
    nbfix_correction,
)
from forcefield_refit.molecules import (
    Molecule,
    atom_labels,
    backbone_dihedrals,
    combine,
    dihedrals_by_label,
    load_molecule,
    water_molecule,
)
from forcefield_refit.plots import plot_profile_comparison
from forcefield_refit.profiles import evaluate_profile
from forcefield_refit.settings import (
    CmapSettings,
    HbondsSettings,
    OutputSettings,
    ReferenceSettings,
    TorsionProfileSettings,
    TorsionsSettings,
)
from forcefield_refit.term_energy import term_energies
from forcefield_refit.terms import CmapTerm, NBFixPair
from forcefield_refit.torsion_fit import fit_torsions
from forcefield_refit.torsions import (
    AtomQuad,
    FourierTorsion,
    TypeQuad,
    check_dihedral_bonded,
    check_types_known,
    system_torsion_terms,
)
from forcefield_refit.units import KJ_TO_KCAL
from forcefield_refit.writers.amber_frcmod import write_frcmod
from forcefield_refit.writers.amber_prmtop import cmap_chains, write_amber_prmtop
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
                logger.warning("frcmod cannot hold CMAP (ParmEd does not read it back); use prmtop, prm, itp or ffxml")
            if torsions or nbfix:
                written[fmt] = str(write_frcmod(folder / f"{stem}.frcmod", torsions, title=stem, nbfix=nbfix,
                                                overwrite=ow))
        elif fmt == "prm" and (torsions or cmaps or nbfix):
            written[fmt] = str(write_charmm_prm(folder / f"{stem}.prm", torsions, cmaps, nbfix, title=stem,
                                                overwrite=ow))
        elif fmt == "itp" and (torsions or cmaps or nbfix):
            written[fmt] = str(write_gromacs_itp(folder / f"{stem}.itp", torsions, cmaps, nbfix, title=stem,
                                                 overwrite=ow))
        elif fmt == "prmtop" and not cmaps:
            logger.warning("prmtop is written by 'forcefield-refit cmap' only; torsions and NBFIX go in the frcmod")
        elif fmt == "ffxml":
            written[fmt] = str(write_ffxml(folder / f"{stem}.xml", torsions, cmaps, nbfix, lj_types, hbonds,
                                           overwrite=ow, by=by))
    return written


def _rmse_row(target: np.ndarray, original: np.ndarray, refit: np.ndarray) -> dict[str, float]:
    return {
        "original_rmse_kcal": offset_free_rmse(original, target) * KJ_TO_KCAL,
        "refit_rmse_kcal": offset_free_rmse(refit, target) * KJ_TO_KCAL,
    }


def _fit_selection(
    settings: TorsionsSettings, base: app.ForceField, molecules: list[Molecule]
) -> tuple[list[dict[TypeQuad, list[AtomQuad]]], dict[TypeQuad, FourierTorsion], dict[str, str]]:
    """Per profile ``{fitted key: [atom quadruples]}``, the base terms of every key, and skipped classes.

    Default: each profile's ``fit_types`` (or its scanned dihedral's own labels). With ``only_differing``:
    the classes whose terms differ between the base and the reference force field
    (:func:`forcefield_refit.compare.torsion_differences`); a class whose differing instances disagree (or
    whose other instances are equal) cannot be one refit series and is skipped with the reason.
    """
    by = settings.label_by
    labels = [atom_labels(m.topology, base, by) for m in molecules]
    systems = [m.system(base) for m in molecules]
    if not settings.only_differing:
        groups = []
        for p, m, lab in zip(settings.profiles, molecules, labels, strict=True):
            atoms = _scan_atoms(p, m)
            fit_types = [tuple(t) for t in p.fit_types] if p.fit_types else [tuple(lab[i] for i in atoms)]
            check_types_known(base, [t for q in fit_types for t in q])
            groups.append(dihedrals_by_label(m.topology, lab, fit_types))  # type: ignore[arg-type]
        prior = {
            t: FourierTorsion(t, system_torsion_terms(system, quads[0]))
            for g, system in zip(groups, systems, strict=True) for t, quads in g.items()
        }
        return groups, prior, {}
    if settings.reference.forcefield is None:
        raise RefitInputError(
            f"only_differing=true with reference.factory={settings.reference.factory!r}; allowed: only with "
            "reference.forcefield (the classes that differ are found by comparing two force fields). Hint: list "
            "the quadruples to refit in profiles[].fit_types instead."
        )
    target = app.ForceField(*settings.reference.forcefield)
    differences = torsion_differences([
        (p.name, m.topology, system, m.system(target), lab)
        for p, m, system, lab in zip(settings.profiles, molecules, systems, labels, strict=True)
    ])
    skipped = {
        "-".join(k): f"instances disagree (differ in {sorted(d.differ)}, equal in {sorted(d.same)}, "
        f"{len(d.target_terms)} distinct target term sets): one {by}-level series cannot reproduce them"
        for k, d in differences.items() if not d.consistent
    }
    consistent = {k: d for k, d in differences.items() if d.consistent}
    groups = [fit_groups(consistent, p.name, [])[0] for p in settings.profiles]
    prior = {k: FourierTorsion(k, list(d.base_terms)) for k, d in consistent.items()}
    logger.info("only_differing: fitting %s; skipped %s", sorted(consistent), sorted(skipped))
    return groups, prior, skipped


def _scan_atoms(p: TorsionProfileSettings, molecule: Molecule) -> AtomQuad:
    atoms = backbone_dihedrals(molecule.topology)[p.dihedral] if isinstance(p.dihedral, str) else p.dihedral
    if len(atoms) != 4:
        raise RefitInputError(f"profiles[{p.name}].dihedral={atoms}; allowed: 4 indices. Hint: [4, 6, 8, 14].")
    check_dihedral_bonded(molecule.bonds, atoms)
    return tuple(atoms)  # type: ignore[return-value]


def run_torsions(settings: TorsionsSettings) -> dict[str, Any]:
    """Scan every profile with the reference, fit all torsion types jointly, write files and plots."""
    folder = _prepare(settings.output)
    base = app.ForceField(*settings.base_forcefield)
    molecules = [load_molecule(p.pdb, p.name) for p in settings.profiles]
    groups, prior, skipped = _fit_selection(settings, base, molecules)
    grid = np.arange(-180.0, 180.0, settings.scan.step_deg)
    scans = [
        scan_profile(
            p.name, m, reference_function(settings.reference, m), base, _scan_atoms(p, m), [], grid,
            by=settings.label_by, restraint_k=settings.scan.restraint_k, max_iterations=settings.scan.max_iterations,
            fit_dihedrals=g,
        )
        for p, m, g in zip(settings.profiles, molecules, groups, strict=True)
    ]
    fitted_data = [s.fit_data for s in scans if s.fit_data.dihedrals_deg]
    fitted = fit_torsions(
        fitted_data, settings.fit.periodicities, ridge=settings.fit.ridge, temperature_k=settings.fit.temperature_k,
        phases=settings.fit.phases, prior=prior if settings.fit.prior == "base" else None,
    ) if fitted_data else {}
    report: dict[str, Any] = {
        "profiles": {}, "terms_kj_deg": {"-".join(t): s.terms for t, s in fitted.items()},
        "base_terms_kj_deg": {"-".join(t): prior[t].terms for t in fitted}, "skipped_classes": skipped,
    }
    for s in scans:
        target, refit = s.profile.energies_kj, s.refit_kj(fitted)
        report["profiles"][s.name] = {**_rmse_row(target, s.original_kj, refit),
                                      "fitted_series": ["-".join(t) for t in s.fit_data.dihedrals_deg]}
        if settings.output.plots:
            report["profiles"][s.name]["plot"] = str(plot_profile_comparison(
                folder / f"{s.name}.png", s.profile.achieved_angles_deg,
                {"target": target, "original": s.original_kj, "refit": refit}, title=s.name,
                overwrite=settings.output.overwrite,
            ))
    if not fitted:
        logger.warning("nothing to refit (no torsion class differs or none selected); no parameter files written")
    report["files"] = _write(settings.output, torsions=list(fitted.values()), by=settings.label_by) if fitted else {}
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
    if "prmtop" in settings.output.formats:
        report["files"]["prmtop"] = _write_prmtops(settings, base, term)
    _save_report(settings.output, report)
    return report


def _write_prmtops(settings: CmapSettings, base: app.ForceField, term: CmapTerm) -> dict[str, list[str]]:
    """One Amber prmtop + inpcrd per profile molecule: the base System plus the fitted CMAP on its chains."""
    out = {}
    for p in settings.profiles:
        molecule = load_molecule(p.pdb, p.name)
        chains = cmap_chains(molecule.topology, atom_labels(molecule.topology, base, "type"), term)
        paths = write_amber_prmtop(
            settings.output.directory / f"{settings.output.prefix}_{p.name}.prmtop", molecule.topology,
            molecule.system(base), molecule.positions, dict.fromkeys(chains, term), overwrite=settings.output.overwrite,
        )
        out[p.name] = [str(x) for x in paths]
    return out


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
    hbonds, triples = _fit_hbond_terms(settings, base, scans)
    report: dict[str, Any] = {"profiles": {}, "nbfix": [vars(p) for p in nbfix], "hbonds": [vars(h) for h in hbonds]}
    for name, dimer, target, mm in scans:
        refit = mm.energies_kj + nbfix_correction(nbfix, lj, atom_labels(dimer.topology, base), mm)
        for term in hbonds:
            if triples[name, term.types]:
                refit = refit + term.profile_energy(mm.positions, triples[name, term.types])
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


def _fit_hbond_terms(
    settings: HbondsSettings, base: app.ForceField, scans: list[Any]
) -> tuple[list[HbondTerm], dict[tuple[str, tuple[str, str, str]], list[tuple[int, int, int]]]]:
    """The ``hbond_terms``, fitted jointly over every dimer (each term on all its triples, as OpenMM applies it)."""
    bad = [spec for spec in settings.hbond_terms if len(spec) != 3]
    if bad:
        raise RefitInputError(f"hbond_terms entry {bad[0]}; allowed: [donor heavy, H, acceptor] types. Hint: see docs.")
    types = [(a, b, c) for a, b, c in settings.hbond_terms]
    triples = {
        (name, t): hbond_triples(atom_labels(dimer.topology, base), dimer.bonds, mm.n_donor_atoms, t)
        for name, dimer, _, mm in scans for t in types
    }
    unused = [list(t) for t in types if not any(triples[name, t] for name, *_ in scans)]
    if unused:
        raise RefitInputError(
            f"hbond_terms entry {unused[0]} matches no donor/acceptor triple in any dimer; allowed: types present "
            "in the dimers. Hint: OpenMM type names such as 'tip3p-O', 'protein-N'."
        )
    if not types:
        return [], triples
    rows = []
    for name, _, target, mm in scans:
        keep = np.ones(mm.energies_kj.size, dtype=bool)
        if settings.fit_window_kcal is not None:
            keep = target.energies_kj <= target.energies_kj.min() + settings.fit_window_kcal / KJ_TO_KCAL
        rows.append((mm.select(keep), (target.energies_kj - mm.energies_kj)[keep], target.energies_kj[keep],
                     [triples[name, t] for t in types]))
    hbonds = fit_hbond_terms(
        [r[0] for r in rows], [r[1] for r in rows], types, [r[3] for r in rows], settings.temperature_k,
        [r[2] for r in rows], form=settings.hbond_form, angle_power=settings.angle_power,
    )
    return hbonds, triples


def _save_report(output: OutputSettings, report: dict[str, Any]) -> None:
    from forcefield_refit.writers._io import atomic_write_text

    path = output.directory / f"{output.prefix}_report.json"
    atomic_write_text(path, json.dumps(report, indent=2, default=str) + "\n", overwrite=output.overwrite)
    report["report"] = str(path)
