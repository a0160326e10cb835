"""Hydrogen-bond refit benchmark: NBFIX and CustomHbond fits of amber14/TIP3P against a GFN2-xTB target.

Rigid dimer scans (forcefield_refit.hbonds.dimer_scan: donor...acceptor distance 0.25-0.45 nm every 0.01 nm,
bend angles -30, 0, 30 degrees) of water-water, NMA-water (NMA N-H donor), water-NMA (water donor, NMA O
acceptor) and NMA-NMA. Target: GFN2-xTB interaction energies (biomol_nnp.qm.engine.create_engine with the
default LabelSettings; vacuum, dimer minus the two rigid monomers). Original: amber14-all.xml +
amber14/tip3p.xml on the same geometries. Two refits of the original:

- ``nbfix``: pair-specific LJ (Rmin, epsilon) for the four donor-H...acceptor type pairs, fitted jointly over
  all dimers (``fit_nbfix``, Boltzmann weights at 1000 K on the target); a pair whose non-negative fit has
  no well (B = 0: the target asks for pure repulsion) cannot be written as (Rmin, epsilon) and is dropped
  (``nbfix_dropped_pairs``), keeping the original LJ for it;
- ``hbond``: the classic angle-dependent 12-10 term (``cos^2`` of the D-H...A angle, ``c12, c10 >= 0``,
  OpenMM CustomHbondForce), one per donor/acceptor type triple;
- ``hbond_general``: the ``12-10-6`` form (``c12 >= 0``; ``c10``, ``c6`` of either sign, so the term can
  also *weaken* binding) with the angular power ``p`` of ``(-cos theta)^p`` chosen from (0, 1, 2, 4) by the
  lowest worst-dimer RMSE.

Both H-bond refits fit the four terms *jointly* over all four dimers (``fit_hbond_terms``), each term on all
its intermolecular donor/acceptor triples (both waters donate in the water dimer), unweighted, on the points
within 2 kcal/mol of each target minimum (the region reported). Their energies are not evaluated by the fit
code: the terms are written to an ffxml (``write_ffxml``), loaded with the base force field by OpenMM, and
the dimer scans are re-evaluated with that System.

Reported per dimer: RMSE (kcal/mol, no offset removed: interaction energies) over the points within
2 kcal/mol of the target minimum, for the original force field and each refit. Issue target: <= 0.3 kcal/mol
(stated there for NNP targets; the GFN2-xTB target here is a real, non-MM surface).

Run: ``.venv/bin/python benchmarks/refit_hbonds.py`` (about a minute); writes
``benchmarks/results/refit_hbonds.json``.
"""

from __future__ import annotations

import json
import logging
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from openmm import app
from threadpoolctl import threadpool_limits

from forcefield_refit.energy import openmm_energy_function
from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.hbonds import (
    ANGLE_POWERS,
    DimerProfile,
    HbondTerm,
    NBFixData,
    dimer_scan,
    fit_hbond_terms,
    fit_nbfix,
    hbond_triples,
    nbfix_correction,
)
from forcefield_refit.molecules import Molecule, atom_labels, combine, load_molecule, water_molecule
from forcefield_refit.units import KJ_TO_KCAL
from forcefield_refit.writers.openmm_xml import lennard_jones_types, write_ffxml

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BASE = ("amber14-all.xml", "amber14/tip3p.xml")
DISTANCES = np.round(np.arange(0.25, 0.4501, 0.01), 4)
ANGLES = (-30.0, 0.0, 30.0)
WINDOW_KCAL = 2.0
TARGET_KCAL = 0.3
TEMPERATURE_K = 1000.0
#: NMA atoms (tleap ACE-NME order): carbonyl C 4, O 5, amide N 6, H 7.
NMA_C, NMA_O, NMA_N, NMA_H = 4, 5, 6, 7


def gfn2_reference(molecule: Molecule) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """GFN2-xTB energy function of a neutral closed-shell molecule: positions nm -> (kJ/mol, kJ/mol/nm).

    A ``reference.factory`` for ``forcefield-refit hbonds`` (``refit_hbonds:gfn2_reference`` with this folder
    on ``PYTHONPATH``).
    """
    from biomol_nnp.config import LabelSettings
    from biomol_nnp.qm.engine import create_engine

    engine = create_engine(LabelSettings())
    numbers = np.array([a.element.atomic_number for a in molecule.topology.atoms()])

    def energy(positions: np.ndarray) -> tuple[float, np.ndarray]:
        result = engine.compute(numbers, np.asarray(positions, dtype=float))
        return float(result.energy), np.asarray(result.forces)

    return energy


def _dimers() -> dict[str, tuple[Molecule, Molecule, tuple, tuple[str, str, str]]]:
    w, nma = water_molecule(), load_molecule(ROOT / "systems" / "nma" / "nma.pdb")
    return {
        "water-water": (w, w, (0, 1, 2, 0, [1, 2]), ("tip3p-O", "tip3p-H", "tip3p-O")),
        "nma-water": (nma, w, (NMA_N, NMA_H, NMA_C, 0, [1, 2]), ("protein-N", "protein-H", "tip3p-O")),
        "water-nma": (w, nma, (0, 1, 2, NMA_O, [NMA_C]), ("tip3p-O", "tip3p-H", "protein-O")),
        "nma-nma": (nma, nma, (NMA_N, NMA_H, NMA_C, NMA_O, [NMA_C]), ("protein-N", "protein-H", "protein-O")),
    }


def _fit_nbfix_with_wells(data: list[NBFixData], pairs: list[tuple[str, str]]) -> tuple[list, dict[str, str]]:
    """NBFIX fit of ``pairs``; a pair whose non-negative fit has no LJ well (B = 0) is dropped and refit without."""
    remaining, dropped = list(pairs), {}
    while remaining:
        try:
            return fit_nbfix(data, remaining, temperature_k=TEMPERATURE_K), dropped
        except RefitInputError as error:
            bad = [p for p in remaining if str(p) in str(error)]
            if not bad:
                raise
            dropped["-".join(bad[0])] = str(error).split(";")[0]
            remaining.remove(bad[0])
    return [], dropped


def _reevaluate(terms: list[HbondTerm]) -> dict[str, np.ndarray]:
    """Interaction energies of every dimer scan under base + the H-bond terms, from an ffxml loaded by OpenMM."""
    with tempfile.TemporaryDirectory() as folder:
        refit = app.ForceField(str(write_ffxml(Path(folder) / "hbonds.xml", hbonds=terms)), *BASE)
    out = {}
    for name, (donor, acceptor, atoms, _) in _dimers().items():
        mono = tuple(openmm_energy_function(m.system(refit))(m.positions)[0] for m in (donor, acceptor))
        fn = openmm_energy_function(combine(donor, acceptor).system(refit))
        out[name] = dimer_scan(fn, mono, donor.positions, acceptor.positions, *atoms, DISTANCES, ANGLES).energies_kj
    return out


def _near_rmse(energy: np.ndarray, target: np.ndarray) -> float:
    near = target <= target.min() + WINDOW_KCAL / KJ_TO_KCAL
    return float(np.sqrt(np.mean((energy - target)[near] ** 2))) * KJ_TO_KCAL


def main() -> dict:
    start = time.perf_counter()
    base = app.ForceField(*BASE)
    lj = lennard_jones_types(base)
    scans: dict[str, tuple[Molecule, DimerProfile, DimerProfile, tuple[str, str, str]]] = {}
    with threadpool_limits(1):
        for name, (donor, acceptor, atoms, triple) in _dimers().items():
            dimer = combine(donor, acceptor)
            mono_ref = tuple(gfn2_reference(m)(m.positions)[0] for m in (donor, acceptor))
            target = dimer_scan(
                gfn2_reference(dimer), mono_ref, donor.positions, acceptor.positions, *atoms, DISTANCES, ANGLES
            )
            mono_mm = tuple(openmm_energy_function(m.system(base))(m.positions)[0] for m in (donor, acceptor))
            mm_fn = openmm_energy_function(dimer.system(base))
            mm = dimer_scan(mm_fn, mono_mm, donor.positions, acceptor.positions, *atoms, DISTANCES, ANGLES)
            scans[name] = (dimer, target, mm, triple)
    pairs = sorted({(t[1], t[2]) for *_, t in scans.values()})
    data = [
        NBFixData(t, t.energies_kj, m.energies_kj, atom_labels(d.topology, base), lj) for d, t, m, _ in scans.values()
    ]
    nbfix, dropped = _fit_nbfix_with_wells(data, pairs)
    triples = sorted({t for *_, t in scans.values()})
    found = {
        name: [hbond_triples(atom_labels(d.topology, base), d.bonds, m.n_donor_atoms, t) for t in triples]
        for name, (d, _, m, _) in scans.items()
    }
    near = {n: t.energies_kj <= t.energies_kj.min() + WINDOW_KCAL / KJ_TO_KCAL for n, (_, t, _, _) in scans.items()}
    refits, terms = {}, {}
    for label, form, powers in (("hbond", "12-10", (2,)), ("hbond_general", "12-10-6", ANGLE_POWERS)):
        best = None
        for power in powers:
            fitted = fit_hbond_terms(
                [m.select(near[n]) for n, (_, _, m, _) in scans.items()],
                [(t.energies_kj - m.energies_kj)[near[n]] for n, (_, t, m, _) in scans.items()],
                triples, list(found.values()), None, form=form, angle_power=power,  # type: ignore[arg-type]
            )
            energies = _reevaluate(fitted)
            worst = max(_near_rmse(energies[n], t.energies_kj) for n, (_, t, _, _) in scans.items())
            if best is None or worst < best[0]:
                best = (worst, fitted, energies)
        assert best is not None
        refits[label], terms[label] = best[2], [vars(t) for t in best[1]]
        logger.info("%s: angle power %d, worst near-minimum RMSE %.3f kcal/mol", label, best[1][0].angle_power,
                    best[0])
    rows = {}
    for name, (dimer, target, mm, triple) in scans.items():
        correction = nbfix_correction(nbfix, lj, atom_labels(dimer.topology, base), mm)
        t = target.energies_kj
        best = int(np.argmin(t))
        rows[name] = {
            "hbond_triple": list(triple),
            "points": int(t.size),
            "points_within_2_kcal": int(near[name].sum()),
            "target_min_kcal": float(t[best] * KJ_TO_KCAL),
            "target_min_distance_nm": float(target.distances_nm[best]),
            "original_min_kcal": float(mm.energies_kj.min() * KJ_TO_KCAL),
            "original_rmse_kcal": _near_rmse(mm.energies_kj, t),
            "nbfix_rmse_kcal": _near_rmse(mm.energies_kj + correction, t),
            "hbond_rmse_kcal": _near_rmse(refits["hbond"][name], t),
            "hbond_general_rmse_kcal": _near_rmse(refits["hbond_general"][name], t),
        }
        if not nbfix:
            rows[name]["nbfix_note"] = "no NBFIX pair kept (see why_not.nbfix): the NBFIX refit is the original"
    report = {
        "description": __doc__.split("\n\n")[0],
        "target": "GFN2-xTB (xtb-python via biomol_nnp.qm.engine.create_engine(LabelSettings()), vacuum, "
        "interaction energy = dimer - rigid monomers)",
        "original": "amber14-all.xml + amber14/tip3p.xml",
        "method": f"rigid scans, D...A {DISTANCES[0]:.2f}-{DISTANCES[-1]:.2f} nm every 0.01 nm x bend {list(ANGLES)} "
        f"deg; NBFIX jointly over dimers for pairs {pairs} (Boltzmann weights {TEMPERATURE_K:g} K); CustomHbond "
        "terms, one per donor/acceptor type triple, fitted jointly over all dimers on all their intermolecular "
        f"triples, unweighted, on the points within {WINDOW_KCAL} kcal/mol of each target minimum: 'hbond' = 12-10, "
        "cos^2; 'hbond_general' = 12-10-6 with free-sign c10, c6 and the angular power chosen from "
        f"{list(ANGLE_POWERS)}; refit energies from the written ffxml loaded by OpenMM; RMSE (no offset) over the "
        f"points within {WINDOW_KCAL} kcal/mol of the target minimum",
        "profiles": rows,
        "nbfix": [vars(p) for p in nbfix],
        "nbfix_dropped_pairs": dropped,
        "hbond_terms": terms["hbond"],
        "hbond_general_terms": terms["hbond_general"],
        "target_kcal": TARGET_KCAL,
        "nbfix_target_met": all(r["nbfix_rmse_kcal"] <= TARGET_KCAL for r in rows.values()),
        "hbond_target_met": all(r["hbond_rmse_kcal"] <= TARGET_KCAL for r in rows.values()),
        "hbond_general_target_met": all(r["hbond_general_rmse_kcal"] <= TARGET_KCAL for r in rows.values()),
        "nbfix_better_than_original_everywhere": all(
            r["nbfix_rmse_kcal"] <= r["original_rmse_kcal"] for r in rows.values()
        ),
        "hbond_better_than_original_everywhere": all(
            r["hbond_rmse_kcal"] <= r["original_rmse_kcal"] for r in rows.values()
        ),
        "hbond_general_better_than_original_everywhere": all(
            r["hbond_general_rmse_kcal"] <= r["original_rmse_kcal"] for r in rows.values()
        ),
        "why_not": {
            "nbfix": "GFN2-xTB binds every dimer less than amber14/TIP3P (minima above; TIP3P is a condensed-phase "
            "model that overbinds gas-phase dimers), so target - MM is a net repulsion over the whole well. "
            "A pair LJ term with A, B >= 0 only adds a well; the non-negative fit returns B = 0 (pure r^-12) for "
            "every H...acceptor pair, which has no (Rmin, epsilon) form, so all pairs are dropped and the NBFIX "
            "refit equals the original. Fixing this target needs charges (or a repulsive-only pair term).",
            "hbond": "the classic 12-10 term (c12, c10 >= 0) fits with c10 = 0 (again pure repulsion, damped by "
            "cos^2 of the D-H...A angle): it lowers every RMSE but cannot remove overbinding that extends past the "
            "well (mostly electrostatics, water donors), so only NMA-NMA reaches 0.3 kcal/mol.",
            "hbond_general": "not needed where met: letting c10 and c6 take either sign gives a repulsive r^-10/r^-6 "
            "tail that removes the excess binding across the well; see hbond_general_target_met.",
        },
        "wall_s": time.perf_counter() - start,
        "machine": platform.platform(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "refit_hbonds.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


if __name__ == "__main__":
    out = main()
    for k, v in out["profiles"].items():
        print(k, {x: round(y, 3) for x, y in v.items() if x.endswith("kcal")})
