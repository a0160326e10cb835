"""Which torsion terms differ between two force fields (closed-loop fit selection) and the ridge prior."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from openmm import app

from forcefield_refit.compare import fit_groups, torsion_differences
from forcefield_refit.molecules import atom_labels, load_molecule
from forcefield_refit.torsion_fit import TorsionFitData, fit_torsions
from forcefield_refit.torsions import FourierTorsion

ROOT = Path(__file__).resolve().parents[2]


def test_ff99sb_vs_ff14sb_differences_and_groups() -> None:
    ff99, ff14 = app.ForceField("amber99sb.xml"), app.ForceField("amber14-all.xml")
    mols = {n: load_molecule(ROOT / "systems" / "dipeptides" / f"{n}.pdb") for n in ("ala", "gly", "asn")}
    diffs = torsion_differences(
        [
            (n, m.topology, m.system(ff99), m.system(ff14), atom_labels(m.topology, ff99, by="class"))
            for n, m in mols.items()
        ]
    )
    phi_prime = diffs[("C", "N", "CT", "CT")]
    assert phi_prime.consistent and sorted(phi_prime.differ) == ["ala", "asn"]
    assert phi_prime.base_terms  # the ff99SB terms, the fit's starting point
    # psi' (CB-CA-C-N) kept ff99SB while Asn chi2 (CA-CB-CG-ND2) changed: one class cannot hold both
    assert not diffs[("CT", "CT", "C", "N")].consistent
    assert fit_groups(diffs, "gly", atom_labels(mols["gly"].topology, ff99))[0] == {}
    groups, prior = fit_groups(diffs, "asn", atom_labels(mols["asn"].topology, ff99))
    assert ("C", "N", "CT", "CT") in groups and ("CT", "CT", "C", "N") not in groups
    split = [k for k in groups if not k[0].isalpha()]
    assert len(split) == 1 and len(groups[split[0]]) == 1  # the Asn chi2 instance, keyed by ff99SB types
    assert set(prior) == set(groups)


def test_ridge_pulls_toward_prior() -> None:
    quad = ("A", "B", "C", "D")
    phi = np.arange(-180.0, 180.0, 30.0)
    y = 2.0 * (1 + np.cos(np.radians(2 * phi)))
    data = [TorsionFitData("p", y, {quad: phi})]
    start = FourierTorsion(quad, [(1, 0.0, 1.5), (2, 0.0, 0.5)])
    strong = fit_torsions(data, periodicities=(1, 2), ridge=1e8, prior={quad: start})[quad]
    assert dict((n, k) for n, _, k in strong.terms) == pytest.approx({1: 1.5, 2: 0.5}, abs=1e-4)
    weak = fit_torsions(data, periodicities=(1, 2), ridge=1e-8, prior={quad: start})[quad]
    assert dict((n, k) for n, _, k in weak.terms) == pytest.approx({1: 0.0, 2: 2.0}, abs=1e-4)
