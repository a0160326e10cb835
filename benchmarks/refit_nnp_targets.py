"""Torsion refit of ff14SB against GFN2-xTB relaxed scans (the QM an NNP is trained on), five dipeptides.

**Target, stated honestly.** The issue asks for fits to *NNP* targets. Training an NNP on all five capped
dipeptides (Ala, Gly, Ser, Val, Asn) to sub-0.3 kcal/mol torsion accuracy does not fit this session's
budget (2 shared CPU cores), so the target here is the surface such an NNP is trained to reproduce:
**GFN2-xTB** (xtb-python through ``biomol_nnp.qm.engine.create_engine(LabelSettings())``, vacuum),
relaxed restrained scans on that surface (``forcefield_refit.profiles.torsion_scan``, k = 2000
kJ/mol/rad^2, every 15 degrees as two interleaved 30-degree passes). A deployed NNP plugs into the same
code as ``reference.factory`` (``scripts/refit_with_nnp/nnp_reference.py``).

**Fit.** Base force field amber14-all.xml (ff14SB, labels = OpenMM atom types). For every profile the
target is ``E_xTB - E_MM(without the fitted terms)`` on the xTB-relaxed geometries
(``forcefield_refit.fit_profiles.profile_fit_data``). Scan protocol: each grid point is first relaxed on
ff14SB (restrained), then on GFN2-xTB from there (<= 60 L-BFGS-B iterations; an SCF failure on a trial step
counts as a huge energy so the line search backs off). Fitted series: every type quadruple around the
central bonds of the scanned dihedrals (N-CA, CA-C, CA-CB: all torsions a rotation there changes, as
BespokeFit fits), periodicities 1-4, free phases, uniform weights, ridge 1.0 toward the ff14SB terms of each
quadruple (``fit_torsions(prior=...)``). Two fits:

- ``bespoke``: one fit per molecule over its own profiles; every quadruple is renamed per molecule
  (molecule-specific parameters, as BespokeFit writes them);
- ``transferable``: one joint fit over all five dipeptides, every type quadruple shared as in ff14SB.

Reported per profile: offset-free RMSE (kcal/mol) over all 24 points of the original ff14SB and of both
refits against the target on the target's relaxed geometries, and a leave-one-point-out RMSE of each refit
(every point predicted by a fit without it). Issue target: <= 0.3 kcal/mol per profile; ``why_not`` gives the
reason for every refit that misses it.

Run: ``nice .venv/bin/python benchmarks/refit_nnp_targets.py``: the 26 scan passes took 114 worker-minutes
(about an hour of wall time with 2 worker processes on this session's heavily shared 2 cores) and are cached
in ``benchmarks/data/refit_nnp_targets/``; the fits with leave-one-out take under a minute; writes
``benchmarks/results/refit_nnp_targets.json`` and one PNG per profile in ``benchmarks/results/refit_plots/``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from openmm import app  # noqa: E402

from biomol_nnp.exceptions import QMCalculationError  # noqa: E402
from forcefield_refit.energy import EnergyFunction, openmm_energy_function  # noqa: E402
from forcefield_refit.fit_profiles import ScannedProfile, offset_free_rmse, profile_fit_data  # noqa: E402
from forcefield_refit.molecules import Molecule, atom_labels, backbone_dihedrals, dihedrals_by_label, load_molecule  # noqa: E402
from forcefield_refit.plots import plot_profile_comparison  # noqa: E402
from forcefield_refit.profiles import TorsionProfile, moving_side, torsion_scan  # noqa: E402
from forcefield_refit.torsion_fit import TorsionFitData, fit_torsions  # noqa: E402
from forcefield_refit.torsions import AtomQuad, FourierTorsion, TypeQuad, proper_torsions, system_torsion_terms  # noqa: E402
from forcefield_refit.units import KJ_TO_KCAL  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from refit_hbonds import gfn2_reference  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / "data" / "refit_nnp_targets"
MOLECULES = ("ala", "gly", "ser", "val", "asn")
BASE = ("amber14-all.xml",)
STEP_DEG = 30.0
#: Interleaved passes (grid offsets, degrees): the profile is sampled every STEP_DEG / len(OFFSETS) degrees.
OFFSETS = (0.0, 15.0)
RESTRAINT_K = 2000.0
MAX_ITERATIONS = 60
PERIODICITIES = (1, 2, 3, 4)
RIDGE = 1.0
TEMPERATURE_K: float | None = None
TARGET_KCAL = 0.3
WORKERS = int(os.environ.get("REFIT_WORKERS", "2"))


def _cache(name: str, dihedral_name: str, offset: float) -> Path:
    return CACHE / (f"{name}_{dihedral_name}.npz" if offset == 0 else f"{name}_{dihedral_name}_o{offset:g}.npz")


def _scan(job: tuple[str, str, float]) -> tuple[str, str, float]:
    """Relaxed GFN2-xTB scan of one dihedral on one pass (grid offset), cached (skipped when cached); wall time."""
    name, dihedral_name, offset = job
    path = _cache(name, dihedral_name, offset)
    if path.exists():
        with np.load(path) as cached:
            return name, dihedral_name, float(cached["wall_s"])
    start = time.perf_counter()
    molecule = load_molecule(ROOT / "systems" / "dipeptides" / f"{name}.pdb")
    atoms = backbone_dihedrals(molecule.topology)[dihedral_name]
    grid = np.arange(-180.0 + offset, 180.0, STEP_DEG)
    mm = torsion_scan(
        openmm_energy_function(molecule.system(BASE)),
        molecule.positions,
        atoms,
        grid,
        restraint_k=RESTRAINT_K,
        max_iterations=1000,
        moving_atoms=moving_side(molecule.bonds, atoms),
    )
    xtb = _guarded(gfn2_reference(molecule))
    points = [
        torsion_scan(xtb, x, atoms, [angle], restraint_k=RESTRAINT_K, max_iterations=MAX_ITERATIONS)
        for x, angle in zip(mm.positions, grid, strict=True)
    ]
    energies = np.array([xtb(p.positions[0])[0] for p in points])
    profile = TorsionProfile(
        grid,
        energies - energies.min(),
        np.concatenate([p.achieved_angles_deg for p in points]),
        np.concatenate([p.positions for p in points]),
        atoms,
        np.concatenate([p.restraint_energies_kj for p in points]),
    )
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, wall_s=time.perf_counter() - start, **{k: np.asarray(v) for k, v in vars(profile).items()})
    os.replace(tmp, path)
    return name, dihedral_name, time.perf_counter() - start


def _guarded(energy_fn: EnergyFunction) -> EnergyFunction:
    """``energy_fn`` that answers an SCF failure (an L-BFGS-B trial step far off) with a huge energy.

    The line search then backtracks instead of the scan aborting; accepted points are always converged
    xTB energies (a failed point would show as +1e6 kJ/mol in the cached profile).
    """

    def energy(positions: np.ndarray) -> tuple[float, np.ndarray]:
        try:
            return energy_fn(positions)
        except QMCalculationError:
            return 1.0e6, np.zeros_like(positions)

    return energy


def _load(name: str, dihedral_name: str) -> TorsionProfile:
    """The passes of one profile merged and sorted by angle; energies relative to the merged minimum.

    Each pass stores energies relative to its own minimum; one xTB single point on each pass's minimum
    geometry restores the common reference.
    """
    molecule = load_molecule(ROOT / "systems" / "dipeptides" / f"{name}.pdb")
    xtb = gfn2_reference(molecule)
    passes = []
    for offset in OFFSETS:
        with np.load(_cache(name, dihedral_name, offset)) as data:
            fields = {k: data[k] for k in data.files}
        fields["energies_kj"] = fields["energies_kj"] + xtb(fields["positions"][np.argmin(fields["energies_kj"])])[0]
        passes.append(fields)
    order = np.argsort(np.concatenate([f["angles_deg"] for f in passes]))
    merged = {
        k: np.concatenate([f[k] for f in passes])[order]
        for k in ("angles_deg", "energies_kj", "achieved_angles_deg", "positions", "restraint_energies_kj")
    }
    merged["energies_kj"] = merged["energies_kj"] - merged["energies_kj"].min()
    return TorsionProfile(**merged, dihedral_atoms=tuple(int(i) for i in passes[0]["dihedral_atoms"]))


Key = Callable[[TypeQuad], TypeQuad]


def _keyed(data: TorsionFitData, key: Key, keep: np.ndarray | None = None) -> TorsionFitData:
    """``data`` with its quadruples renamed by ``key`` (bespoke: ``type@molecule``), optionally a subset of points."""
    rows = np.ones(data.n_frames, dtype=bool) if keep is None else keep
    assert data.weight_energy_kj is not None
    return TorsionFitData(
        data.name,
        data.target_kj[rows],
        {key(t): a[rows] for t, a in data.dihedrals_deg.items()},
        data.weight_energy_kj[rows],
    )


def _tag(types: TypeQuad, suffix: str) -> TypeQuad:
    return tuple(f"{t}@{suffix}" for t in types)  # type: ignore[return-value]


def _refit(p: ScannedProfile, fitted: dict[TypeQuad, FourierTorsion], key: Key) -> np.ndarray:
    """Refit MM energy of a profile, ``[K]`` kJ/mol, with the series stored under ``key(type)``."""
    return p.refit_kj({t: fitted[key(t)] for t in p.fit_data.dihedrals_deg})


def _fit_with_loo(
    profiles: list[ScannedProfile], key: Key, prior: dict[TypeQuad, FourierTorsion]
) -> tuple[dict[TypeQuad, FourierTorsion], dict[str, np.ndarray]]:
    """Joint fit of ``profiles`` and leave-one-point-out predictions (each point refit without it), kJ/mol."""
    keyed_prior = {key(t): FourierTorsion(key(t), s.terms) for t, s in prior.items()}
    fitted = _fit([_keyed(p.fit_data, key) for p in profiles], keyed_prior)
    loo = {}
    for i, p in enumerate(profiles):
        pred = np.zeros(p.fit_data.n_frames)
        for k in range(p.fit_data.n_frames):
            keep = np.arange(p.fit_data.n_frames) != k
            data = [_keyed(q.fit_data, key, keep if j == i else None) for j, q in enumerate(profiles)]
            pred[k] = _refit(p, _fit(data, keyed_prior), key)[k]
        loo[p.name] = pred
    return fitted, loo


def _central_types(molecule: Molecule, labels: list[str], scanned: Iterable[AtomQuad]) -> list[TypeQuad]:
    """Type quadruples of every proper torsion around the central bonds of the scanned dihedrals (as BespokeFit)."""
    central = {frozenset(q[1:3]) for q in scanned}
    found = set()
    for quad in proper_torsions(molecule.topology):
        if frozenset(quad[1:3]) in central:
            types = tuple(labels[i] for i in quad)
            found.add(min(types, types[::-1]))
    return sorted(found)  # type: ignore[arg-type]


def _profiles(base: app.ForceField) -> tuple[list[ScannedProfile], dict[TypeQuad, FourierTorsion], dict[str, str]]:
    profiles, prior, molecule_of = [], {}, {}
    for name in MOLECULES:
        molecule = load_molecule(ROOT / "systems" / "dipeptides" / f"{name}.pdb")
        system = molecule.system(base)
        labels = atom_labels(molecule.topology, base)
        dihedrals = backbone_dihedrals(molecule.topology)
        fit_types = _central_types(molecule, labels, dihedrals.values())
        for types, quads in dihedrals_by_label(molecule.topology, labels, fit_types).items():
            prior[types] = FourierTorsion(types, system_torsion_terms(system, quads[0]))
        for dihedral_name in dihedrals:
            profile = _load(name, dihedral_name)
            scanned = profile_fit_data(
                f"{name} {dihedral_name}",
                molecule,
                profile,
                base,
                fit_types,  # type: ignore[arg-type]
                mm_system=system,
            )
            profiles.append(scanned)
            molecule_of[scanned.name] = name
    return profiles, prior, molecule_of


def _fit(data: list[TorsionFitData], prior: dict[TypeQuad, FourierTorsion]) -> dict[TypeQuad, FourierTorsion]:
    return fit_torsions(data, PERIODICITIES, ridge=RIDGE, temperature_k=TEMPERATURE_K, prior=prior)


def _why_not(name: str, original: float, bespoke: float, transferable: float) -> dict[str, str]:
    """A reason for every refit that misses the target or is not closer than the original (RMSEs in kJ/mol)."""
    out = {}
    target_kj = TARGET_KCAL / KJ_TO_KCAL
    if bespoke > target_kj:
        out["bespoke"] = (
            "the 1-4 Fourier series of the quadruples around the scanned bonds, shared by the molecule's scans, "
            "cannot absorb what is not a torsion: the MM bond/angle/1-4 terms are evaluated on xTB-relaxed geometries, "
            "whose strain differs from point to point (an MM-relaxed comparison, refit iteratively, is not done here)"
        )
    if transferable > min(original, target_kj):
        out["transferable"] = (
            "phi (C-N-CX-C) and psi (N-CX-C-N) types are shared by all five residues in ff14SB; one shared series "
            "is a compromise between residue-specific xTB profiles"
            + (" and is worse than ff14SB here" if transferable > original else "")
        )
    return out


def main() -> dict:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    start = time.perf_counter()
    CACHE.mkdir(parents=True, exist_ok=True)
    jobs = [
        (name, d, offset)
        for offset in OFFSETS
        for name in MOLECULES
        for d in backbone_dihedrals(load_molecule(ROOT / "systems" / "dipeptides" / f"{name}.pdb").topology)
    ]
    with ProcessPoolExecutor(max_workers=WORKERS) as pool:
        scan_wall: dict[str, float] = {}
        for n, d, t in pool.map(_scan, jobs):
            scan_wall[f"{n} {d}"] = scan_wall.get(f"{n} {d}", 0.0) + t
    base = app.ForceField(*BASE)
    profiles, prior, molecule_of = _profiles(base)
    transferable, loo_t = _fit_with_loo(profiles, lambda t: t, prior)
    bespoke: dict[TypeQuad, FourierTorsion] = {}
    loo_b: dict[str, np.ndarray] = {}
    for name in MOLECULES:
        own = [p for p in profiles if molecule_of[p.name] == name]
        fitted, loo = _fit_with_loo(own, functools.partial(_tag, suffix=name), prior)
        bespoke.update(fitted)
        loo_b.update(loo)
    plots = RESULTS / "refit_plots"
    plots.mkdir(parents=True, exist_ok=True)
    rows = {}
    for p in profiles:
        target = p.profile.energies_kj
        refit_t = _refit(p, transferable, lambda t: t)
        refit_b = _refit(p, bespoke, functools.partial(_tag, suffix=molecule_of[p.name]))
        rows[p.name] = {
            "points": int(target.size),
            "target_range_kcal": float(np.ptp(target) * KJ_TO_KCAL),
            "original_rmse_kcal": offset_free_rmse(p.original_kj, target) * KJ_TO_KCAL,
            "bespoke_rmse_kcal": offset_free_rmse(refit_b, target) * KJ_TO_KCAL,
            "transferable_rmse_kcal": offset_free_rmse(refit_t, target) * KJ_TO_KCAL,
            "bespoke_loo_rmse_kcal": offset_free_rmse(loo_b[p.name], target) * KJ_TO_KCAL,
            "transferable_loo_rmse_kcal": offset_free_rmse(loo_t[p.name], target) * KJ_TO_KCAL,
            "max_restraint_kj": float(p.profile.restraint_energies_kj.max()),
            "why_not": _why_not(
                p.name,
                offset_free_rmse(p.original_kj, target),
                offset_free_rmse(refit_b, target),
                offset_free_rmse(refit_t, target),
            ),
            "scan_wall_s": scan_wall[p.name],
        }
        plot_profile_comparison(
            plots / f"nnp_targets_{p.name.replace(' ', '_')}.png",
            p.profile.achieved_angles_deg,
            {
                "target GFN2-xTB": target,
                "original ff14SB": p.original_kj,
                "bespoke refit": refit_b,
                "transferable refit": refit_t,
            },
            title=f"{p.name}: ff14SB refit to GFN2-xTB",
            overwrite=True,
        )
    report = {
        "description": __doc__.split("\n\n")[0],
        "target": "GFN2-xTB relaxed scans (xtb-python via biomol_nnp.qm.engine.create_engine(LabelSettings()), "
        "vacuum) used directly in place of an NNP trained on them: no NNP was trained for this benchmark",
        "method": f"relaxed restrained scans every {STEP_DEG / len(OFFSETS):g} deg ({len(OFFSETS)} interleaved "
        f"passes; k = {RESTRAINT_K:g} kJ/mol/rad^2, <= "
        f"{MAX_ITERATIONS} L-BFGS-B iterations per point) on GFN2-xTB; base {list(BASE)}; fitted: every type "
        "quadruple around the central bonds of the scanned dihedrals, periodicities "
        f"{list(PERIODICITIES)}, free phases, Boltzmann weights {TEMPERATURE_K or 'none (uniform)'}, ridge "
        f"{RIDGE:g} toward the ff14SB terms; bespoke = per molecule, transferable = joint over all molecules; "
        "RMSE over all points after removing the mean offset; "
        "*_loo_rmse_kcal: every point predicted by a refit without that point (leave-one-out: a left-out point "
        "leaves a gap of two grid steps, so this is a pessimistic generalisation check)",
        "profiles": rows,
        "target_kcal": TARGET_KCAL,
        "bespoke_target_met": all(r["bespoke_rmse_kcal"] <= TARGET_KCAL for r in rows.values()),
        "transferable_target_met": all(r["transferable_rmse_kcal"] <= TARGET_KCAL for r in rows.values()),
        "bespoke_better_than_original_everywhere": all(
            r["bespoke_rmse_kcal"] <= r["original_rmse_kcal"] for r in rows.values()
        ),
        "transferable_better_than_original_everywhere": all(
            r["transferable_rmse_kcal"] <= r["original_rmse_kcal"] for r in rows.values()
        ),
        "bespoke_terms_kj_deg": {"-".join(t): [list(x) for x in s.terms] for t, s in bespoke.items()},
        "transferable_terms_kj_deg": {"-".join(t): [list(x) for x in s.terms] for t, s in transferable.items()},
        "scan_wall_s": float(sum(scan_wall.values())),
        "wall_s": time.perf_counter() - start,
        "workers": WORKERS,
        "machine": platform.platform(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS / "refit_nnp_targets.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, RESULTS / "refit_nnp_targets.json")
    return report


if __name__ == "__main__":
    out = main()
    for key, row in out["profiles"].items():
        logging.getLogger(__name__).warning(
            "%s: original %.3f bespoke %.3f transferable %.3f kcal/mol",
            key,
            row["original_rmse_kcal"],
            row["bespoke_rmse_kcal"],
            row["transferable_rmse_kcal"],
        )
