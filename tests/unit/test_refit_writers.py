"""Writers round trip: every file is reloaded by its consuming parser and its per-term energies match the fit.

Formats: Amber frcmod (DIHE, LJEDIT) and CHARMM prm (DIHEDRALS, CMAP, NBFIX) and GROMACS itp
(dihedraltypes 9, cmaptypes, nonbond_params) through ParmEd; OpenMM ffxml through ``ForceField``.
Oracle: energies of the fitted terms evaluated by OpenMM on random structures (term_energies).
"""

from __future__ import annotations

import numpy as np
import openmm
import pytest
from openmm import app, unit

from forcefield_refit.atom_types import amber_type_name
from forcefield_refit.energy import openmm_energy_function
from forcefield_refit.exceptions import RefitInputError, RefitMatchError
from forcefield_refit.reload import reload_charmm_prm, reload_frcmod_terms, reload_gromacs_itp
from forcefield_refit.term_energy import term_energies
from forcefield_refit.terms import CmapTerm, NBFixPair, merge_torsions, openmm_cmap_values
from forcefield_refit.torsions import FourierTorsion
from forcefield_refit.writers.amber_frcmod import write_frcmod
from forcefield_refit.writers.charmm_prm import write_charmm_prm
from forcefield_refit.writers.gromacs_itp import write_gromacs_itp
from forcefield_refit.writers.openmm_xml import lennard_jones_types, load_forcefield, write_ffxml

TOL_KJ = 1e-3
TYPES = ("protein-C", "protein-N", "protein-CX", "protein-C", "protein-N")
_PHASES = (0.0, 180.0, 37.5, 0.0, 211.0, 90.0)
_KS = (1.3, 0.4, 2.2, 0.05, 0.7, 0.3)
TORSION = FourierTorsion(TYPES[:4], [(n, ph, k) for n, ph, k in zip(range(1, 7), _PHASES, _KS, strict=True)])
PAIR = NBFixPair(("protein-O", "protein-H"), 0.21, 0.8)


def _grid(n: int = 24) -> np.ndarray:
    a = np.radians(-180.0 + 360.0 * np.arange(n) / n)
    phi, psi = np.meshgrid(a, a, indexing="ij")
    return 3.0 * np.cos(phi) + 1.5 * np.sin(2 * psi + 0.3) + 0.8 * np.cos(phi - psi) - 0.4 * np.sin(phi + 2 * psi)


CMAP = CmapTerm(TYPES, _grid())


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    rng = np.random.default_rng(7)
    chain = np.cumsum(rng.normal(scale=0.09, size=(12, 5, 3)) + [0.1, 0.0, 0.0], axis=1)
    partner = chain[:, :1] + rng.uniform(0.3, 0.5, size=(12, 1, 1)) * np.array([0.0, 0.0, 1.0])
    return np.concatenate([chain, partner], axis=1)


def _energies(frames: np.ndarray, torsion: FourierTorsion, cmap: CmapTerm | None, pair: NBFixPair) -> dict:
    return term_energies(
        frames,
        torsions={(0, 1, 2, 3): torsion},
        cmaps={(0, 1, 2, 3, 4): cmap} if cmap is not None else None,
        pairs={(0, 5): pair},
    )


def _assert_match(reloaded: dict, expected: dict) -> None:
    assert reloaded.keys() == expected.keys()
    for name in expected:
        np.testing.assert_allclose(reloaded[name], expected[name], atol=TOL_KJ, rtol=0, err_msg=name)


def test_cmap_openmm_order_puts_zero_angles_first() -> None:
    grid = np.arange(16.0).reshape(4, 4)  # grid[i, j] at phi = -180 + 90 i, psi = -180 + 90 j
    values = openmm_cmap_values(grid)
    assert values[0] == grid[2, 2]  # phi = psi = 0
    assert values[1] == grid[3, 2]  # OpenMM: energy[i + n j], i = phi index
    assert values[4] == grid[2, 3]


def test_frcmod_round_trip(tmp_path, frames) -> None:
    path = write_frcmod(tmp_path / "refit.frcmod", [TORSION], title="t", nbfix=[PAIR])
    reloaded = reload_frcmod_terms(path)
    names = [amber_type_name(t) for t in TYPES]
    got = _energies(frames, reloaded.torsion(names[:4]), None, reloaded.pair(["O", "H"]))
    _assert_match(got, _energies(frames, TORSION, None, PAIR))


def test_charmm_prm_round_trip(tmp_path, frames) -> None:
    path = write_charmm_prm(tmp_path / "refit.prm", [TORSION], [CMAP], [PAIR])
    reloaded = reload_charmm_prm(path)
    (cmap,) = reloaded.cmaps
    assert cmap.types == ("C", "N", "CX", "C", "N")
    names = [amber_type_name(t) for t in TYPES]
    got = _energies(frames, reloaded.torsion(names[:4]), cmap, reloaded.pair(["O", "H"]))
    _assert_match(got, _energies(frames, TORSION, CMAP, PAIR))


def test_gromacs_itp_round_trip(tmp_path, frames) -> None:
    path = write_gromacs_itp(tmp_path / "refit.itp", [TORSION], [CMAP], [PAIR])
    reloaded = reload_gromacs_itp(path, ["C", "N", "CX", "O", "H"])
    (cmap,) = reloaded.cmaps
    got = _energies(frames, reloaded.torsion(["C", "N", "CX", "C"]), cmap, reloaded.pair(["O", "H"]))
    _assert_match(got, _energies(frames, TORSION, CMAP, PAIR))


def _water_dimer() -> tuple[app.Topology, np.ndarray]:
    top = app.Topology()
    chain = top.addChain()
    pos = []
    geometry = np.array([[0.0, 0.0, 0.0], [0.09572, 0.0, 0.0], [-0.02399, 0.09266, 0.0]])
    for shift in (np.zeros(3), np.array([0.28, 0.05, 0.03])):
        res = top.addResidue("HOH", chain)
        o = top.addAtom("O", app.element.oxygen, res)
        h1 = top.addAtom("H1", app.element.hydrogen, res)
        h2 = top.addAtom("H2", app.element.hydrogen, res)
        top.addBond(o, h1)
        top.addBond(o, h2)
        pos.append(geometry + shift)
    return top, np.concatenate(pos)


def test_ffxml_nbfix_adds_exactly_the_pair_term(tmp_path) -> None:
    top, x = _water_dimer()
    base = ["amber14-all.xml", "amber14/tip3p.xml"]
    pair = NBFixPair(("tip3p-O", "tip3p-H"), 0.19, 0.6)
    lj = lennard_jones_types(app.ForceField(*base))
    path = write_ffxml(tmp_path / "nbfix.xml", nbfix=[pair], lj_types=lj)
    kwargs = {"nonbondedMethod": app.NoCutoff, "constraints": None, "rigidWater": False}
    refit = load_forcefield([str(path)], base).createSystem(top, **kwargs)
    original = app.ForceField(*base).createSystem(top, **kwargs)
    assert any(isinstance(f, openmm.CustomNonbondedForce) for f in refit.getForces())
    inter = [(0, 4), (0, 5), (3, 1), (3, 2)]
    extra = sum(float(pair.energy(np.linalg.norm(x[i] - x[j]))) for i, j in inter)  # TIP3P H has eps = 0
    delta = openmm_energy_function(refit)(x)[0] - openmm_energy_function(original)(x)[0]
    assert delta == pytest.approx(extra, abs=TOL_KJ)
    with pytest.raises(RefitMatchError, match="not in the base force field"):
        write_ffxml(tmp_path / "bad.xml", nbfix=[NBFixPair(("O", "H"), 0.2, 0.1)], lj_types=lj)


def test_ffxml_cmap_matches_fitted_grid(tmp_path) -> None:
    from tests.unit.test_refit_dipeptide import PDB_PATH

    pdb = app.PDBFile(str(PDB_PATH))
    path = write_ffxml(tmp_path / "cmap.xml", [TORSION], cmaps=[CMAP])
    system = load_forcefield([str(path)], ["amber14-all.xml"]).createSystem(
        pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None
    )
    (force,) = [f for f in system.getForces() if isinstance(f, openmm.CMAPTorsionForce)]
    assert force.getNumTorsions() == 1
    atoms = force.getTorsionParameters(0)[1:]
    chain = (*atoms[:4], atoms[7])
    for f in system.getForces():
        f.setForceGroup(5 if isinstance(f, openmm.CMAPTorsionForce) else 0)
    x0 = pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    rng = np.random.default_rng(1)
    stack = np.stack([x0 + rng.normal(scale=0.02, size=x0.shape) for _ in range(5)])
    energy_fn = openmm_energy_function(system, groups={5})
    engine = np.array([energy_fn(f)[0] for f in stack])
    np.testing.assert_allclose(engine, term_energies(stack, cmaps={chain: CMAP})["cmaps"], atol=TOL_KJ)


def test_writers_refuse_overwrite_and_conflicts(tmp_path) -> None:
    path = write_charmm_prm(tmp_path / "a.prm", [TORSION])
    with pytest.raises(RefitInputError, match="exists.*overwrite=True"):
        write_charmm_prm(path, [TORSION])
    write_charmm_prm(path, [TORSION], overwrite=True)
    other = FourierTorsion(TYPES[:4][::-1], [(1, 0.0, 9.0)])
    for writer in (write_charmm_prm, write_gromacs_itp, write_frcmod, write_ffxml):
        with pytest.raises(RefitInputError, match="conflicting parameters for atom-type quadruple"):
            writer(tmp_path / f"c.{writer.__name__}", [TORSION, other])
        assert not (tmp_path / f"c.{writer.__name__}").exists()
    assert merge_torsions([TORSION, FourierTorsion(TYPES[:4][::-1], list(TORSION.terms))]) == [TORSION]
