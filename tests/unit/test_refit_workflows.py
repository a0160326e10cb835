"""``forcefield-refit torsions|cmap|hbonds`` with YAML settings, run in-process; every written file is reloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openmm
import pytest
import yaml
from openmm import app, unit

from forcefield_refit.cli import main, run_workflow
from forcefield_refit.energy import openmm_energy_function
from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.hbonds import HbondTerm
from forcefield_refit.molecules import backbone_dihedrals
from forcefield_refit.reload import reload_charmm_prm, reload_frcmod_terms, reload_gromacs_itp
from forcefield_refit.term_energy import term_energies
from forcefield_refit.writers.openmm_xml import load_forcefield, write_ffxml

ROOT = Path(__file__).resolve().parents[2]
ALA = str(ROOT / "systems" / "dipeptides" / "ala.pdb")


def _yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_torsions_workflow_writes_and_reloads_all_formats(tmp_path) -> None:
    out = tmp_path / "out"
    settings = _yaml(tmp_path / "t.yaml", {
        "reference": {"forcefield": ["amber14-all.xml"]},
        "base_forcefield": ["amber99sb.xml"],
        "label_by": "class",
        "profiles": [{"name": "ala_phi", "pdb": ALA, "dihedral": "phi"}],
        "scan": {"step_deg": 30.0, "max_iterations": 150},
        "fit": {"periodicities": [1, 2, 3, 4]},
        "output": {"directory": str(out)},
    })
    report = run_workflow("torsions", settings)
    row = report["profiles"]["ala_phi"]
    assert row["refit_rmse_kcal"] < row["original_rmse_kcal"]
    assert Path(row["plot"]).read_bytes()[:4] == b"\x89PNG"
    files = report["files"]
    assert sorted(files) == ["ffxml", "frcmod", "itp", "prm"]
    (series,) = report["terms_kj_deg"].values()
    for reloaded in (reload_frcmod_terms(files["frcmod"]), reload_charmm_prm(files["prm"]),
                     reload_gromacs_itp(files["itp"], ["C", "N", "CT"])):
        got = reloaded.torsion(["C", "N", "CT", "C"])
        assert [round(k, 6) for _, _, k in got.terms] == [round(k, 6) for _, _, k in series]
    pdb = app.PDBFile(ALA)
    load_forcefield([files["ffxml"]], ["amber99sb.xml"]).createSystem(pdb.topology)
    with pytest.raises(RefitInputError, match="exists"):
        run_workflow("torsions", settings)  # no silent overwrite


def test_cmap_workflow_coarse_grid(tmp_path) -> None:
    settings = _yaml(tmp_path / "c.yaml", {
        "reference": {"forcefield": ["amber99sb.xml"]},
        "profiles": [{"name": "ala", "pdb": ALA}],
        "n_grid": 6,
        "max_iterations": 100,
        "output": {"directory": str(tmp_path / "out"), "formats": ["prm", "itp", "ffxml", "prmtop"]},
    })
    assert main(["-q", "cmap", str(settings)]) == 0
    report = yaml.safe_load((tmp_path / "out" / "refit_report.json").read_text())
    row = report["profiles"]["ala"]
    assert row["refit_rmse_kcal"] < row["original_rmse_kcal"]
    (cmap,) = reload_charmm_prm(tmp_path / "out" / "refit.prm").cmaps
    (same,) = reload_gromacs_itp(tmp_path / "out" / "refit.itp", ["C", "N", "CX"]).cmaps
    np.testing.assert_allclose(cmap.grid_kj, same.grid_kj, atol=1e-6)
    assert (tmp_path / "out" / "ala_cmap.png").exists()
    prmtop, inpcrd = report["files"]["prmtop"]["ala"]  # the prmtop holds the same map on Ala's phi/psi
    system = app.AmberPrmtopFile(prmtop).createSystem(nonbondedMethod=app.NoCutoff, constraints=None)
    group = next(i for i, f in enumerate(system.getForces()) if isinstance(f, openmm.CMAPTorsionForce))
    system.getForce(group).setForceGroup(5)
    positions = app.AmberInpcrdFile(inpcrd).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    dihedrals = backbone_dihedrals(app.PDBFile(ALA).topology)
    expected = term_energies(positions[None], cmaps={(*dihedrals["phi"], dihedrals["psi"][3]): cmap})["cmaps"]
    assert openmm_energy_function(system, groups={5})(positions)[0] == pytest.approx(expected[0], abs=1e-3)


def test_hbonds_workflow_water_dimer(tmp_path) -> None:
    truth = HbondTerm(("tip3p-O", "tip3p-H"), "tip3p-O", 1.5e-9, 4.0e-7)
    reference = write_ffxml(tmp_path / "truth.xml", hbonds=[truth])
    settings = _yaml(tmp_path / "h.yaml", {
        "reference": {"forcefield": [str(reference), "amber14-all.xml", "amber14/tip3p.xml"]},
        "dimers": [{"name": "water_water", "donor": "water", "acceptor": "water", "donor_atoms": [0, 1, 2],
                    "acceptor_atom": 0, "acceptor_back": [1, 2]}],
        "hbond_terms": [["tip3p-O", "tip3p-H", "tip3p-O"]],
        "temperature_k": None,
        "output": {"directory": str(tmp_path / "out"), "formats": ["ffxml"]},
    })
    report = run_workflow("hbonds", settings)
    (term,) = report["hbonds"]
    assert term["c12"] == pytest.approx(truth.c12, rel=1e-5)
    assert term["c10"] == pytest.approx(truth.c10, rel=1e-5)
    app.ForceField(report["files"]["ffxml"], "amber14-all.xml", "amber14/tip3p.xml")


def test_settings_reject_unknown_keys(tmp_path) -> None:
    bad = _yaml(tmp_path / "bad.yaml", {
        "reference": {"forcefield": ["amber14-all.xml"]},
        "profiles": [{"name": "x", "pdb": ALA, "dihedral": "phi"}],
        "output": {"directory": str(tmp_path)},
        "periodicity": [1, 2],
    })
    with pytest.raises(RefitInputError, match=r"(?s)not a valid TorsionsSettings.*periodicity.*Extra inputs"):
        run_workflow("torsions", bad)
    with pytest.raises(RefitInputError, match="(?s)exactly one of reference.forcefield or reference.factory"):
        run_workflow("torsions", _yaml(tmp_path / "b2.yaml", {
            "reference": {}, "profiles": [{"name": "x", "pdb": ALA, "dihedral": "phi"}],
            "output": {"directory": str(tmp_path)},
        }))


def test_hbonds_workflow_general_form_over_all_triples(tmp_path) -> None:
    """12-10-6 form without angle dependence: OpenMM applies it to all four O-H...O triples of the water dimer;
    the workflow fits over the same triples, recovers the term and reports the refit (with it) exact."""
    truth = HbondTerm(("tip3p-O", "tip3p-H"), "tip3p-O", 2.0e-9, -1.0e-7, -3.0e-4, angle_power=0)
    reference = write_ffxml(tmp_path / "truth.xml", hbonds=[truth])
    settings = _yaml(tmp_path / "h.yaml", {
        "reference": {"forcefield": [str(reference), "amber14-all.xml", "amber14/tip3p.xml"]},
        "dimers": [{"name": "water_water", "donor": "water", "acceptor": "water", "donor_atoms": [0, 1, 2],
                    "acceptor_atom": 0, "acceptor_back": [1, 2]}],
        "hbond_terms": [["tip3p-O", "tip3p-H", "tip3p-O"]],
        "hbond_form": "12-10-6",
        "angle_power": 0,
        "temperature_k": None,
        "fit_window_kcal": 3.0,
        "output": {"directory": str(tmp_path / "out"), "formats": ["ffxml"], "plots": False},
    })
    report = run_workflow("hbonds", settings)
    (term,) = report["hbonds"]
    for name in ("c12", "c10", "c6"):
        assert term[name] == pytest.approx(getattr(truth, name), rel=1e-5), name
    row = report["profiles"]["water_water"]
    assert row["original_rmse_kcal"] > 0.05
    assert row["refit_rmse_kcal"] < 1e-4
